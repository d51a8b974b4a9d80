"""divscope: fixed-size SFT datasets at controlled macro/meso/micro diversity.

The Python API mirrors the CLI: ``ingest`` a pool into a workspace, read it back with ``Workspace``, write any
subset with ``write_records``; ``convert`` a file to another format; ``compare`` (subsets, a grid or a study
folder) gives their metric cards side by side as a pandas DataFrame (imported on first use: it loads the analysis
stage). ``select`` a subset of a workspace as ``divscope select`` does: a ``Subset`` with ``records()``, ``ids``,
``manifest``, ``write(path, fmt)`` (the data file and its manifest, as the CLI writes them) and ``metrics()``.
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
    "Subset",
    "Turn",
    "Workspace",
    "__version__",
    "compare",
    "convert",
    "ingest",
    "read_records",
    "select",
    "write_records",
]


def __getattr__(name: str) -> object:
    if name == "compare":  # lazy: ``import divscope`` stays light
        from divscope.analysis.compare import compare

        return compare
    if name == "select":  # the select package, whose module object is callable (divscope.select.CallablePackage)
        import importlib

        return importlib.import_module("divscope.select")
    if name == "Subset":
        from divscope.api import Subset

        return Subset
    raise AttributeError(f"module 'divscope' has no attribute {name!r}")
