"""divscope: fixed-size SFT datasets at controlled macro/meso/micro diversity.

The Python API mirrors the CLI: ``ingest`` a pool into a workspace, read it back with ``Workspace``, write any
subset with ``write_records``.
"""

__version__ = "0.1.0"

from divscope.errors import DivscopeError  # noqa: E402
from divscope.io import (  # noqa: E402
    Pool,
    Record,
    Turn,
    Workspace,
    ingest,
    read_records,
    write_records,
)

__all__ = [
    "DivscopeError",
    "Pool",
    "Record",
    "Turn",
    "Workspace",
    "__version__",
    "ingest",
    "read_records",
    "write_records",
]
