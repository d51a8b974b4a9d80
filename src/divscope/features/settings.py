"""The featurize stage's settings, one object per level: CLI options of ``divscope featurize`` and the spec's
``features:`` section both come from these (``divscope.settings``).

A default of ``None`` means "scaled to the pool" (bands, cluster size, tag frequency): the level's ``normalize``
resolves it, and the resolved value is what enters the cache key.
"""

from __future__ import annotations

from typing import Any, Literal

from divscope.models import DEFAULT_EMBEDDER, DEFAULT_TOKENIZER
from divscope.settings import Settings, setting

# What runs the sentence embedder (macro features, metric cards): divscope.features.embed_runtime. ``auto`` is
# resolved before use (onnx on a machine without CUDA when onnxruntime is installed, else torch) and only the
# resolved runtime enters cache keys, card parameters and study specs. LEGACY_RUNTIME is what every version before
# runtimes existed ran (and the default until ``auto``): left out of cache keys and fingerprints, so theirs stay.
EmbedRuntime = Literal["auto", "torch", "onnx", "onnx-int8"]
DEFAULT_RUNTIME = "auto"
LEGACY_RUNTIME = "torch"


class MicroSettings(Settings):
    tokenizer: str = setting(DEFAULT_TOKENIZER, "micro: smollm2 (the target model's) | llama2 | llama3 | gpt2 | "
                             "HF id | folder | file.gguf")
    unit: Literal["tokens", "words"] = setting("tokens", "micro: tokenizer types, or whitespace words (the "
                                               "paper's ablation).")
    lowercase: bool = setting(False, "micro: lowercase texts first.")
    low: int | None = setting(None, "micro: drop types with fewer occurrences [10 x n/117000, at least 2].")
    high: int | None = setting(None, "micro: drop types with more occurrences [500 x n/117000, at least 5 x low].")


class MacroSettings(Settings):
    embedder: str = setting(DEFAULT_EMBEDDER, "macro: minilm | sentence-transformers folder | HF id.")
    runtime: EmbedRuntime = setting(
        DEFAULT_RUNTIME, "macro: what runs the embedder: auto (onnx without a CUDA GPU when divscope[onnx] is "
        "installed, else torch), torch, or ONNX Runtime on the CPU (onnx: fp32, onnx-int8: int8 weights).")
    min_cluster_size: int | None = setting(None, "macro: HDBSCAN min_cluster_size [max(5, round(sqrt(n)/10))].")
    min_samples: int = setting(1, "macro: HDBSCAN min_samples (neighbours besides the point itself).")
    noise: Literal["nearest", "own"] = setting("nearest", "macro: noise points join the nearest cluster, or "
                                               "form a type 'noise'.")
    reduce: Literal["auto", "pca", "none", "umap"] = setting("auto", "macro: dimension reduction before HDBSCAN "
                                                             "(auto: PCA above 5,000 samples).")
    dims: int = setting(50, "macro: dimensions after PCA / UMAP.")
    seed: int = setting(0, "macro: seed of the PCA / UMAP.")
    impl: Literal["hdbscan", "sklearn"] = setting("hdbscan", "macro: HDBSCAN implementation (same labels).")
    name_words: int = setting(3, "macro: words in each cluster's name.")


class MesoSettings(Settings):
    tagger: Literal["offline", "endpoint"] = setting("offline", "meso: offline (spaCy, no server) or endpoint "
                                                     "(InsTag prompt to an OpenAI-compatible server).")
    min_count: int | None = setting(None, "meso: drop tags carried by fewer texts [max(2, ceil(n/5000))].")
    merge_threshold: float = setting(0.2, "meso: merge tags closer than this cosine distance (average linkage).")
    max_kept_tags: int = setting(8000, "meso: most frequent tags that enter the merge.")
    lemmatize: bool = setting(True, "meso: lemmatise tags ('writing poems' -> 'write poem').")
    max_failure_rate: float = setting(0.01, "meso: share of texts the endpoint tagger may fail on (they stay "
                                      "typeless).")
    chunk_size: int | None = setting(None, "meso: texts tagged and cached per chunk [1000 offline, 256 endpoint].")
    options: dict[str, Any] = setting(help="meso: the tagger's own options (offline: method, head_chars, ...; "
                                      "endpoint: base_url, model, api_key_env, ...).", cli=False, default_factory=dict)


LEVEL_SETTINGS: dict[str, type[Settings]] = {"macro": MacroSettings, "meso": MesoSettings, "micro": MicroSettings}


def level_options(level: str, settings: Settings) -> dict[str, Any]:
    """What ``featurize(ws, level, side, **options)`` takes: the fields, with meso's tagger options inlined."""
    data = settings.model_dump()
    if level != "meso":
        return data
    tagger_options = data.pop("options")
    return {**data, **tagger_options}
