"""Featurizers: pool side -> sample x type ``Incidence`` (macro clusters, meso tags, micro tokens), cached.

    from divscope.features import featurize, load_incidence
    inc = featurize("WS", "micro", "response")          # built once, then loaded from WS/features/
    inc = load_incidence("WS", "response", "micro")     # the most recently featurized one

Heavy libraries (torch, transformers, sentence-transformers, scikit-learn) load only when a level is built.
``divscope.models`` resolves tokenizers / embedders offline; ``macro.load_embeddings`` and
``micro.token_lengths`` give the cached embeddings and target-tokenizer lengths of a pool side.
"""

from divscope.features.builds import FeatureBuild, feature_builds
from divscope.features.featurize import (
    FeaturizeResult,
    clear_cache,
    featurize,
    featurize_result,
    latest_entry,
    load_extra,
    load_incidence,
    resolve_config,
)
from divscope.features.incidence import Incidence


def load_embeddings(ws, side, embedder=None, compute=True, runtime="auto"):  # noqa: ANN001, ANN201
    """float16 sentence embeddings of a pool side (see :func:`divscope.features.macro.load_embeddings`)."""
    from divscope.features.macro import load_embeddings as _load

    return _load(ws, side, embedder, compute=compute, runtime=runtime)


def token_lengths(ws, side, tokenizer=None):  # noqa: ANN001, ANN201
    """Target-tokenizer length of every pool sample (see :func:`divscope.features.micro.token_lengths`)."""
    from divscope.features.micro import token_lengths as _lengths

    return _lengths(ws, side, tokenizer)


__all__ = [
    "FeatureBuild",
    "FeaturizeResult",
    "Incidence",
    "clear_cache",
    "featurize",
    "featurize_result",
    "feature_builds",
    "latest_entry",
    "load_embeddings",
    "load_extra",
    "load_incidence",
    "resolve_config",
    "token_lengths",
]
