"""Macro level: one semantic cluster per sample (DESIGN.md, "Macro clusters").

1. Embed every text of the pool side with a sentence-transformers model (default all-MiniLM-L6-v2, batch 64,
   L2-normalised; texts cut to ``max_chars`` = 8,192 characters first, far past the model's 256-token window).
   ``runtime`` chooses what runs the model: ``torch`` (sentence-transformers), ``onnx`` or ``onnx-int8`` (ONNX
   Runtime on the CPU, exported locally from the same weights: :mod:`.embed_runtime`); the default ``auto`` is
   onnx on a machine without CUDA (when divscope[onnx] is installed) and torch on a CUDA one.
   Embeddings are stored as float16 in ``WS/features/_embeddings/<side>/<key>/`` and reused by metrics and the
   k-center / distance baselines (:func:`load_embeddings`).
2. Reduce dimension for large pools: PCA (seeded, randomized SVD) to ``dims`` = 50 when the pool has more than
   ``PCA_ABOVE`` samples (``reduce="auto"``); ``reduce="pca" | "none"`` force it; ``"umap"`` if umap-learn is
   installed (it is not a dependency).
3. HDBSCAN (``impl="hdbscan"``: the ``hdbscan`` package, the fastest here; ``"sklearn"``:
   ``sklearn.cluster.HDBSCAN``, same algorithm, same labels up to ties, slower; measurements in docs/features.md)
   with ``min_cluster_size`` (default ``max(5, round(sqrt(n) / 10))``) and ``min_samples`` (default 1).
   Sentence embeddings of chat prompts are not dense blobs: with HDBSCAN's own defaults
   (``min_samples = min_cluster_size``) 90%+ of the points are noise and only 2-10 clusters appear, too few
   diversity levels; small ``min_cluster_size`` with ``min_samples=1`` finds ~100 clusters on 3K ShareGPT
   pairs with balanced sizes after the noise is assigned (measurements in docs/features.md).
4. Noise: ``noise="nearest"`` (default) assigns each noise point to the cluster with the nearest centroid
   (cosine, in the full embedding space), so every sample carries exactly one type; ``noise="own"`` makes
   noise a type of its own named ``noise``.
5. Clusters are numbered by size (c0 largest; ties by first member) and named ``c12: word word word`` with the
   cluster's most distinctive words by c-TF-IDF (BERTopic's class-based TF-IDF over lowercase word tokens of
   the first 2,000 characters of each text, English stop words removed).

Everything is deterministic for a given embedding file (clustering always runs on the stored float16 values).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope import models
from divscope.errors import DivscopeError, MissingFeaturesError
from divscope.features import embed_runtime
from divscope.features.base import Built, Stages
from divscope.io.workspace import Workspace
from divscope.store.atomic import atomic_path, write_json

PCA_ABOVE = 5_000
PCA_DIMS = 50
MAX_CHARS = 8_192
NAME_CHARS = 2_000
BATCH_SIZE = 64
CHUNK = 1_024
IMPLS = ("hdbscan", "sklearn")
NOISE = ("nearest", "own")
REDUCE = ("auto", "pca", "none", "umap")
EMB_VERSION = 1


class MacroFallbackWarning(UserWarning):
    """HDBSCAN found no cluster: the whole pool became one macro type."""


def default_min_cluster_size(n_samples: int) -> int:
    """``max(5, round(sqrt(n) / 10))``: 5 up to n=3,000, 14 at 20K, 34 at 117K (paper-sized pool)."""
    return max(5, int(math.floor(math.sqrt(max(n_samples, 0)) / 10 + 0.5)))


# ------------------------------------------------------------------------------------------- registry API

def normalize(options: dict[str, Any], n_samples: int) -> dict[str, Any]:
    noise = options.get("noise") or "nearest"
    if noise not in NOISE:
        raise DivscopeError(f"unknown noise handling {noise!r}: use nearest or own")
    reduce = options.get("reduce") or "auto"
    if reduce not in REDUCE:
        raise DivscopeError(f"unknown reduce {reduce!r}: use {' | '.join(REDUCE)}")
    if reduce == "auto":
        reduce = "pca" if n_samples > PCA_ABOVE else "none"
    impl = options.get("impl") or "hdbscan"
    if impl not in IMPLS:
        raise DivscopeError(f"unknown HDBSCAN implementation {impl!r}: use {' | '.join(IMPLS)}")
    if impl == "hdbscan" and importlib.util.find_spec("hdbscan") is None:
        impl = "sklearn"  # same labels (see cluster), slower
    mcs = options.get("min_cluster_size")
    mcs = default_min_cluster_size(n_samples) if mcs is None else int(mcs)
    if mcs < 2:
        raise DivscopeError(f"--min-cluster-size must be >= 2 (got {mcs})")
    ms = options.get("min_samples")
    ms = 1 if ms is None else int(ms)
    if ms < 1:
        raise DivscopeError(f"min_samples must be >= 1 (got {ms})")
    dims = int(options.get("dims") or PCA_DIMS)
    runtime = embed_runtime.resolve(options.get("runtime"))  # auto -> what runs here; the key holds that
    # added later: absent for torch (what ran before runtimes existed), so features built then keep their cache key
    extra = {} if runtime == embed_runtime.LEGACY_RUNTIME else {"runtime": runtime}
    return {**extra, "embedder": str(options.get("embedder") or models.DEFAULT_EMBEDDER), "max_chars": MAX_CHARS,
            "min_cluster_size": mcs, "min_samples": ms, "noise": noise, "reduce": reduce,
            "dims": dims if reduce in ("pca", "umap") else None, "impl": impl,
            "seed": int(options.get("seed") or 0), "name_words": int(options.get("name_words") or 3)}


def identity(config: dict[str, Any]) -> str:
    return models.embedder_identity(config["embedder"])


def build(ws: Workspace, side: str, texts: list[str], config: dict[str, Any], stages: Stages) -> Built:
    runtime = config.get("runtime", embed_runtime.LEGACY_RUNTIME)
    emb = embeddings(ws, side, embedder=config["embedder"], texts=texts, stages=stages, runtime=runtime)
    X = emb.astype(np.float32)
    with stages("reduce"):
        Z, reduce_info = reduce_dims(X, config["reduce"], config["dims"], config["seed"])
    with stages("cluster"):
        raw = cluster(Z, config["min_cluster_size"], config["min_samples"], config["impl"])
    with stages("assign"):
        labels, info = assign(X, raw, config["noise"], config["min_cluster_size"])
    with stages("name"):
        n_types = int(labels.max()) + 1 if len(labels) else 0
        names = cluster_names(texts, labels, n_types, config["name_words"])
        if info["noise_type"] is not None:
            names[info["noise_type"]] = "noise"
    matrix = sp.csr_matrix((np.ones(len(labels), np.bool_), labels.astype(np.int32),
                            np.arange(len(labels) + 1, dtype=np.int64)), shape=(len(labels), n_types))
    sizes = np.bincount(labels, minlength=n_types)
    prov = {**info, **reduce_info, "embedding_dim": int(X.shape[1]), "n_clusters": n_types,
            "largest_cluster": int(sizes.max()) if n_types else 0,
            "smallest_cluster": int(sizes.min()) if n_types else 0,
            "embedding_key": _emb_key(ws, side, config["embedder"], runtime)}
    return Built(matrix, names, prov, {"labels.npy": labels.astype(np.int32), "hdbscan_labels.npy": raw})


class MacroFeaturizer:
    """The macro level behind the ``Featurizer`` protocol (registered by ``divscope.features.featurize``)."""

    level = "macro"
    normalize = staticmethod(normalize)
    identity = staticmethod(identity)
    build = staticmethod(build)


# ------------------------------------------------------------------------------------------- embeddings

def _emb_key(ws: Workspace, side: str, embedder: str, runtime: str = embed_runtime.LEGACY_RUNTIME) -> str:
    ident = models.embedder_identity(embedder)
    parts: list[Any] = [EMB_VERSION, ws.pool.fingerprint, side, ident, MAX_CHARS]
    if runtime != embed_runtime.LEGACY_RUNTIME:  # the torch key is the one computed before runtimes existed
        parts.append(runtime)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def embeddings_dir(ws: Workspace) -> Path:
    return ws.path / "features" / "_embeddings"


class _Embed:
    """Chunk task: L2-normalised float32 embeddings of one chunk (model loaded once where it runs)."""

    def __init__(self, embedder: str | Any, batch_size: int, runtime: str = embed_runtime.LEGACY_RUNTIME):
        self.embedder = embedder  # a name (loaded where the task runs, on its GPU if it has one) or a model
        self.batch_size = batch_size
        self.runtime = runtime
        self.uses_gpu = isinstance(embedder, str) and runtime == "torch"  # ONNX Runtime runs on the CPU
        self._model: Any = None
        self.progress: Callable[[int], None] | None = None  # texts done, per model batch (set by the backend)

    def setup(self) -> None:
        self._model = embed_runtime.load_embedder(self.embedder, self.runtime) if isinstance(self.embedder, str) \
            else self.embedder

    def __call__(self, chunk: list[str]) -> np.ndarray:
        import torch

        hook = None
        if self.progress is not None and hasattr(self._model, "register_forward_hook"):
            # one call per batch that encode forms itself: the batches, and so the bytes, are encode's own
            report = self.progress
            hook = self._model.register_forward_hook(lambda _m, _a, out: report(len(out["sentence_embedding"])))
        elif self.progress is not None and hasattr(self._model, "on_batch"):  # ONNX Runtime: its own callback
            self._model.on_batch = self.progress
        try:
            with torch.inference_mode():
                return np.asarray(self._model.encode(chunk, batch_size=self.batch_size, normalize_embeddings=True,
                                                     convert_to_numpy=True, show_progress_bar=False), np.float32)
        finally:
            if hook is not None:
                hook.remove()
            if hasattr(self._model, "on_batch"):
                self._model.on_batch = None


def embed_texts(texts: list[str], embedder: str | Any = None, batch_size: int = BATCH_SIZE,
                description: str = "embed", max_chars: int = MAX_CHARS,
                runtime: str = embed_runtime.DEFAULT_RUNTIME) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts``: sorted by length once, encoded in chunks of ``CHUNK``
    (locally or on Ray: the same chunks either way, so the same bytes), put back in order. ``runtime``:
    auto | torch | onnx | onnx-int8 (:mod:`divscope.features.embed_runtime`; auto: resolved here)."""
    from divscope.backend import map_chunks

    embedder = embedder if embedder is not None else models.DEFAULT_EMBEDDER
    n = len(texts)
    order = np.argsort(-np.fromiter((len(t) for t in texts), np.int64, count=n), kind="stable")
    chunks = [[texts[i][:max_chars] for i in order[s:s + CHUNK]] for s in range(0, n, CHUNK)]
    runtime = embed_runtime.resolve(runtime)
    if runtime != "torch":
        embed_runtime.require_onnxruntime(runtime)  # the install hint before any chunk task starts
    parts = map_chunks(_Embed(embedder, batch_size, runtime), chunks, description)
    if not parts:
        dim_model = models.load_embedder(embedder) if isinstance(embedder, str) else embedder
        dim_of = getattr(dim_model, "get_embedding_dimension", None) or dim_model.get_sentence_embedding_dimension
        return np.zeros((0, int(dim_of())), np.float32)
    out = np.zeros((n, parts[0].shape[1]), np.float32)
    out[order] = np.concatenate(parts)
    return out


def embeddings(ws: Workspace | str | Path, side: str, embedder: str | None = None, *,
               texts: list[str] | None = None, stages: Stages | None = None, compute: bool = True,
               runtime: str = embed_runtime.DEFAULT_RUNTIME) -> np.ndarray:
    """float16 (n_samples, dim) embeddings of a pool side, computed once and cached in the workspace (one
    cache entry per embedder and runtime; ``auto``: the one that runs here, :func:`embed_runtime.resolve`)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    stages = stages or Stages()
    runtime = embed_runtime.resolve(runtime)
    embedder = embedder or models.DEFAULT_EMBEDDER
    key = _emb_key(ws, side, embedder, runtime)
    path = embeddings_dir(ws) / side / key
    n = len(ws.pool)
    if (path / "meta.json").is_file():
        try:
            with stages("load embeddings"):
                meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
                arr = np.load(path / "embeddings.npy", allow_pickle=False)
                if arr.shape != (n, meta["dim"]) or arr.dtype != np.float16:
                    raise ValueError("shape")
                return arr
        except Exception:
            pass
    if not compute:
        how = f" --runtime {runtime}"
        raise MissingFeaturesError(f"no {side} embeddings in {ws.path}: run `divscope featurize "
                                   f"{shlex.quote(str(ws.path))} --level macro --side {side}{how}` first")
    if texts is None:
        texts = ws.pool.texts(side)
    with stages("embed"):  # the model loads where the chunks are embedded (here, or in Ray actors)
        arr = embed_texts(texts, embedder, description=f"{side}: embed", runtime=runtime).astype(np.float16)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        np.save(tmp / "embeddings.npy", arr)
        write_json(tmp / "meta.json", {"embedder": embedder, "identity": models.embedder_identity(embedder),
                                       "side": side, "pool_fingerprint": ws.pool.fingerprint, "n": n,
                                       "dim": int(arr.shape[1]), "dtype": "float16", "normalized": True,
                                       "max_chars": MAX_CHARS, **({} if runtime == embed_runtime.LEGACY_RUNTIME
                                                                else {"runtime": runtime})})
    return arr


def load_embeddings(ws: Workspace | str | Path, side: str, embedder: str | None = None,
                    compute: bool = True, runtime: str = embed_runtime.DEFAULT_RUNTIME) -> np.ndarray:
    """Cached float16 embeddings (rows = pool rows, L2-normalised); computed and cached if missing
    (``compute=False``: MissingFeaturesError instead)."""
    return embeddings(ws, side, embedder, compute=compute, runtime=runtime)


# ------------------------------------------------------------------------------------------- clustering

def reduce_dims(X: np.ndarray, method: str, dims: int | None, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    if method == "none" or dims is None or dims >= X.shape[1] or len(X) <= dims:
        return X, {"reduced_to": int(X.shape[1])}
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=dims, svd_solver="randomized", random_state=seed)
        Z = pca.fit_transform(X).astype(np.float32)
        return Z, {"reduced_to": dims, "pca_explained_variance": float(pca.explained_variance_ratio_.sum())}
    if method == "umap":
        try:
            import umap
        except ImportError as e:
            raise DivscopeError("reduce=umap needs `pip install umap-learn`; or use --reduce pca") from e
        Z = umap.UMAP(n_components=dims, metric="cosine", random_state=seed).fit_transform(X)
        return np.asarray(Z, np.float32), {"reduced_to": dims}
    raise DivscopeError(f"unknown reduce {method!r}")


def cluster(Z: np.ndarray, min_cluster_size: int, min_samples: int, impl: str) -> np.ndarray:
    """HDBSCAN labels (-1 = noise), Euclidean on (normalised or PCA-reduced) embeddings.

    ``min_samples`` has the ``hdbscan`` package's meaning (neighbours other than the point itself)."""
    n = len(Z)
    if n < max(2, min_cluster_size):
        return np.full(n, -1, np.int64)
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    if impl == "hdbscan":
        import hdbscan

        # Prim on a kd-tree: identical labels to Boruvka, 1.8x faster on 20K x PCA-50 here (18 s vs 32 s)
        algo = "prims_kdtree" if Z.shape[1] <= 60 else "best"
        labels = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                 algorithm=algo, core_dist_n_jobs=1).fit_predict(Z)
    else:
        from sklearn.cluster import HDBSCAN

        # sklearn counts the point itself among its min_samples neighbours, the hdbscan package does not:
        # +1 gives identical labels (checked on ShareGPT embeddings, ARI = 1.0)
        labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples + 1,
                         copy=True).fit_predict(Z)
    return np.asarray(labels, np.int64)


def assign(X: np.ndarray, raw: np.ndarray, noise: str, min_cluster_size: int | None = None,
           ) -> tuple[np.ndarray, dict[str, Any]]:
    """Final labels 0..k-1 ordered by cluster size (ties: first member), noise per ``noise``.

    No cluster at all gives one type for the whole pool: recorded in the provenance (``fallback``) and warned
    about (``MacroFallbackWarning``, naming the fix), since every macro level then selects alike."""
    n = len(raw)
    n_noise = int((raw < 0).sum())
    found = sorted(set(raw[raw >= 0].tolist()))
    info: dict[str, Any] = {"hdbscan_clusters": len(found), "noise_points": n_noise,
                            "noise_fraction": n_noise / n if n else 0.0, "noise_type": None}
    if not found:  # nothing dense enough: every sample is one type
        info["fallback"] = "no cluster found: one type for the whole pool"
        used = f" with min_cluster_size={min_cluster_size}" if min_cluster_size is not None else ""
        warnings.warn(f"macro clustering found no cluster among {n} samples{used}: the whole pool is one type, "
                      "so every macro diversity level selects alike; lower --min-cluster-size (features.macro."
                      "min_cluster_size in a spec) and featurize again", MacroFallbackWarning, stacklevel=2)
        return np.zeros(n, np.int64), info
    labels = raw.copy()
    if noise == "nearest" and n_noise:
        cent = np.stack([X[raw == c].mean(axis=0) for c in found])
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        noise_idx = np.flatnonzero(raw < 0)
        for s in range(0, len(noise_idx), 4096):
            part = noise_idx[s:s + 4096]
            labels[part] = np.asarray(found)[np.argmax(X[part] @ cent.T, axis=1)]
    elif noise == "own" and n_noise:
        labels[raw < 0] = max(found) + 1
    # renumber by size desc, tie by first occurrence
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new = np.empty(len(uniq), np.int64)
    new[order] = np.arange(len(uniq))
    final = new[np.searchsorted(uniq, labels)]
    if noise == "own" and n_noise:
        info["noise_type"] = int(new[np.searchsorted(uniq, max(found) + 1)])
    return final, info


def cluster_names(texts: list[str], labels: np.ndarray, n_types: int, n_words: int = 3) -> list[str]:
    """``c<i>: <top words>`` by c-TF-IDF: W(t,c) = tf(t,c)/|c| * log(1 + A / f(t)) (BERTopic)."""
    if n_types == 0:
        return []
    from sklearn.feature_extraction.text import CountVectorizer

    try:
        cv = CountVectorizer(lowercase=True, stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b",
                             max_features=50_000, dtype=np.int32)
        X = cv.fit_transform(t[:NAME_CHARS] for t in texts)
    except ValueError:  # empty vocabulary
        return [f"c{i}" for i in range(n_types)]
    onehot = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n_types, len(labels)))
    tf = (onehot @ X).astype(np.float64).tocsr()  # clusters x words
    words_per_class = np.asarray(tf.sum(axis=1)).ravel()
    freq = np.asarray(tf.sum(axis=0)).ravel()
    avg = words_per_class.mean() if len(words_per_class) else 0.0
    idf = np.log1p(avg / np.maximum(freq, 1))
    vocab = cv.get_feature_names_out()
    names = []
    for i in range(n_types):
        row = tf.getrow(i)
        if row.nnz == 0:
            names.append(f"c{i}")
            continue
        w = row.data / max(words_per_class[i], 1) * idf[row.indices]
        top = row.indices[np.lexsort((row.indices, -w))[:n_words]]
        names.append(f"c{i}: " + " ".join(vocab[j] for j in top))
    return names
