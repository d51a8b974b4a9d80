"""The featurizer seam: what a level must provide, and the registry that maps level names to featurizers.

A featurizer turns the texts of one pool side into a boolean sample x type matrix (``Built``); ``featurize`` wraps
it with the cache. The three levels register themselves when ``divscope.features.featurize`` is imported; a
third-party level registers with :func:`register_featurizer` and is then usable everywhere a level name is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from divscope.io.workspace import Workspace
from divscope.registry import Registry


@dataclass
class Built:
    """What a level's ``build`` returns: the incidence parts plus extra arrays stored beside it."""

    matrix: sp.csr_matrix
    type_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Stages:
    """Wall time per named stage, in order (``with stages("tokenize"): ...``)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


@runtime_checkable
class Featurizer(Protocol):
    """One level. ``normalize`` and ``identity`` must not load a model: they make the cache key, and a cache hit
    must cost no model load."""

    level: str

    def normalize(self, options: dict[str, Any], n_samples: int) -> dict[str, Any]:
        """The complete, JSON-able config for these options on a pool of ``n_samples`` (defaults filled in)."""
        ...

    def identity(self, config: dict[str, Any]) -> str:
        """What besides the config decides the output (model files, library versions), as a string."""
        ...

    def build(self, ws: Workspace, side: str, texts: list[str], config: dict[str, Any], stages: Stages) -> Built:
        ...


def _check(name: str, featurizer: Featurizer) -> None:
    if not isinstance(featurizer, Featurizer):
        raise TypeError(f"{featurizer!r} does not implement the Featurizer protocol (level, normalize, identity, "
                        "build)")


# Featurizers are named by their level; registering a level again replaces it.
_REGISTRY: Registry[Featurizer] = Registry("level", r"[a-z][a-z0-9_]*", _check, key="level",
                                           name_help="lowercase letters, digits and '_'", replace_by_default=True)
register_featurizer = _REGISTRY.register
featurizer = _REGISTRY.get
level_names = _REGISTRY.names
