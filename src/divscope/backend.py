"""Where per-sample work runs (the *backend*): in this process (``local``) or on a Ray cluster (``ray``).

Each level splits its heavy, per-sample work (tokenizing, embedding, tagging) into *chunks* of texts that it
defines itself, exactly as the local engine processes them (e.g. macro: 1,024 texts in length order), and calls
:func:`map_chunks` with a picklable :class:`ChunkTask`. The local engine loops over the chunks; the Ray engine
sends the same chunks to a pool of Ray Data actors (one model load per actor, GPUs where the cluster has them)
and gathers the results in chunk order. Because every chunk is computed by the same code on the same texts in
the same composition, both engines produce the same bytes (tested), and the cache key never depends on the
engine. Everything after the map (counting, bands, clustering, tag merging) runs once, in the driver.

The backend is chosen per call with :func:`use_backend` (a context variable), so the level modules need no extra
parameters: ``featurize(ws, level, side, engine="ray")`` or ``divscope featurize --engine ray`` (the user-facing
word is *engine*; in the code it is a backend, so it is not confused with the selection engine). It is the
bottom layer: it knows chunks of texts and cells, nothing about pools or features.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from divscope.errors import DivscopeError
from divscope.ui import progress_bar

ENGINES = ("local", "ray")


class ChunkTask(Protocol):
    """A picklable unit of per-chunk work; ``setup`` loads models once per worker. A task with a ``progress``
    attribute reports its work within a chunk (e.g. per model batch): run locally, it is set to a callable
    taking a count of texts done, and the bar moves as they are done rather than once per chunk."""

    uses_gpu: bool

    def setup(self) -> None: ...

    def __call__(self, chunk: list[str]) -> Any: ...


@dataclass(frozen=True)
class Backend:
    name: str = "local"
    address: str | None = None  # ray: an existing cluster (``auto`` or ``ray://host:10001``); None starts one
    num_cpus: int | None = None  # ray, local cluster only: CPUs to give it (default: all)
    cpus_per_cell: int | None = None  # ray, ``divscope run``: CPUs per grid cell task (default 1; +1 GPU if any)
    gpus_per_cell: int | None = None  # ray, ``divscope run``: GPUs per cell [the training processes, 1 by default]


_CURRENT: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("divscope_engine", default=None)


def current_backend() -> Backend:
    return _CURRENT.get() or Backend()


@contextlib.contextmanager
def use_backend(engine: str | Backend | None) -> Iterator[Backend]:
    """Run the enclosed work on ``engine`` (``local`` | ``ray`` | a :class:`Backend`; None: keep the current)."""
    eng = current_backend() if engine is None else as_backend(engine)
    token = _CURRENT.set(eng)
    try:
        yield eng
    finally:
        _CURRENT.reset(token)


def as_backend(engine: str | Backend | None, address: str | None = None, num_cpus: int | None = None,
              cpus_per_cell: int | None = None, gpus_per_cell: int | None = None) -> Backend:
    if isinstance(engine, Backend):
        return engine
    name = engine or "local"
    if name not in ENGINES:
        raise DivscopeError(f"unknown engine {name!r}: choose local or ray")
    if name == "local" and (address or num_cpus or cpus_per_cell or gpus_per_cell):
        raise DivscopeError("--ray-address / --ray-cpus / --cell-cpus / --cell-gpus need --engine ray")
    for label, v in (("--ray-cpus", num_cpus), ("--cell-cpus", cpus_per_cell), ("--cell-gpus", gpus_per_cell)):
        if v is not None and v < 1:
            raise DivscopeError(f"{label} must be >= 1")
    return Backend(name, address, num_cpus, cpus_per_cell, gpus_per_cell)


def map_chunks(task: ChunkTask, chunks: Sequence[list[str]], description: str,
               on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[task(c) for c in chunks]`` on the current engine, in chunk order, with a progress bar over texts.

    ``on_result(i, result)`` is called as each result arrives, in order (e.g. to persist a resumable cache).
    """
    sizes = [len(c) for c in chunks]
    eng = current_backend()
    results = _ray_map(eng, task, chunks, description, sizes) if eng.name == "ray" and chunks else \
        _local_map(task, chunks, description, sizes)
    out = []
    for i, res in enumerate(results):
        if on_result is not None:
            on_result(i, res)
        out.append(res)
    return out


def _local_map(task: ChunkTask, chunks: Sequence[list[str]], description: str, sizes: list[int]) -> Iterator[Any]:
    if chunks:
        task.setup()
    with progress_bar(description, sum(sizes)) as advance:
        reported = 0

        def report(k: int) -> None:
            nonlocal reported
            reported += k
            advance(k)

        if hasattr(task, "progress"):
            task.progress = report
        try:
            for chunk, n in zip(chunks, sizes, strict=True):
                reported = 0
                result = task(chunk)
                if n > reported:  # the rest of the chunk (all of it for a task that does not report)
                    advance(n - reported)
                yield result
        finally:
            if hasattr(task, "progress"):
                task.progress = None


# --------------------------------------------------------------------------------------------------- ray

def ray_init(eng: Backend) -> None:
    """Connect to ``eng.address`` or start a local cluster (once per process); quiet, no dashboard."""
    try:
        import ray
    except ImportError as e:
        raise DivscopeError("the ray engine needs Ray: pip install 'divscope[ray]'") from e
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                              "configure_logging": False}
    # Workers import divscope from the same place as this driver and stay offline like it.
    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_", "DIVSCOPE_"))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    kwargs["runtime_env"] = {"env_vars": env}
    if eng.address:
        ray.init(address=eng.address, **kwargs)
    else:
        ray.init(num_cpus=eng.num_cpus or os.cpu_count(), **kwargs)
    import logging

    import ray.data

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    ctx.print_on_execution_start = False


def cpu_actors() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


class _ChunkActor:
    """Ray Data actor: one ``setup`` (model load) per actor, then one chunk per call."""

    def __init__(self, task: ChunkTask):
        self.task = task
        self.task.setup()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        # Results are pickled here and unpickled by the driver that sent the task (Ray's own transport is
        # pickle too); Arrow's object columns would turn tuples of arrays into lists.
        results = [pickle.dumps(self.task([str(t) for t in chunk]), protocol=5) for chunk in batch["texts"]]
        return {"i": batch["i"], "out": results}


def _ray_map(eng: Backend, task: ChunkTask, chunks: Sequence[list[str]], description: str,
             sizes: list[int]) -> Iterator[Any]:
    ray_init(eng)
    import ray.data

    gpus = _gpus() if task.uses_gpu else 0
    n_actors = max(1, min(len(chunks), gpus or cpu_actors()))
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    ds = ray.data.from_items([{"i": i, "texts": list(c)} for i, c in enumerate(chunks)],
                             override_num_blocks=len(chunks))
    ds = ds.map_batches(_ChunkActor, fn_constructor_args=(task,), batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=n_actors), **resources)
    expected = 0
    with progress_bar(f"{description} (ray, {n_actors} {'GPU' if gpus else 'CPU'} actors)", sum(sizes)) as advance:
        for row in ds.iter_rows():  # preserve_order: rows come back in chunk order
            i = int(row["i"])
            if i != expected:
                raise DivscopeError(f"ray returned chunk {i} where {expected} was due ({description})")
            expected += 1
            yield pickle.loads(row["out"])
            advance(sizes[i])
    if expected != len(chunks):
        raise DivscopeError(f"ray returned {expected} of {len(chunks)} chunks for {description}")


# --------------------------------------------------------------------------------------------------- CLI

def engine_options(cell_cpus: bool = False) -> Callable[[Any], Any]:
    """``--engine``, ``--ray-address``, ``--ray-cpus`` (and ``--cell-cpus`` for run) as one click decorator."""
    import click

    from divscope.settings import choice

    def deco(f: Any) -> Any:
        if cell_cpus:
            f = click.option("--cell-gpus", type=int, default=None,
                             help="ray: GPUs per grid cell task, on one node, where the cluster has GPUs (default: "
                                  "train.num_processes with launcher accelerate, else 1; must equal it).")(f)
            f = click.option("--cell-cpus", type=int, default=None,
                             help="ray: CPUs per grid cell task (default 1; each cell also gets its GPUs if the "
                                  "cluster has any).")(f)
        f = click.option("--ray-cpus", type=int, default=None,
                         help="ray: CPUs of the local cluster started when no --ray-address is given "
                              "(default: all).")(f)
        f = click.option("--ray-address", default=None,
                         help="ray: an existing cluster (auto, or ray://HEAD:10001); default: start a local one.")(f)
        return click.option("--engine", type=choice(ENGINES), default="local", show_default=True,
                            help="Where the per-sample work runs: this process, or a Ray cluster (same results; "
                                 "see README, 'Running on a cluster').")(f)

    return deco
