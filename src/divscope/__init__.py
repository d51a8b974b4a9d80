"""divscope: fixed-size SFT datasets at controlled macro/meso/micro diversity.

The Python API mirrors the CLI: ``ingest`` a pool into a workspace, read it back with ``Workspace``, write any
subset with ``write_records``; ``convert`` a file to another format.
"""

from divscope._version import __version__
from divscope.errors import DivscopeError
from divscope.io import (
    Pool,
    Record,
    Turn,
    Workspace,
    convert,
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
    "convert",
    "ingest",
    "read_records",
    "write_records",
]
