"""Macro level: one cluster per sample, noise handling, determinism, embeddings reuse (real MiniLM model)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from divscope import models
from divscope.errors import DivscopeError
from divscope.features import macro
from divscope.features.featurize import featurize, featurize_result, load_extra
from divscope.io.workspace import Workspace
from helpers import POOL_N as N

pytestmark = pytest.mark.usefixtures("divscope_cache")  # tests/conftest.py: session-wide temp model cache


@pytest.fixture(scope="module")
def ws(pool_dir, tmp_path_factory):
    """One workspace for the module: embeddings are computed once and reused by every test."""
    path = tmp_path_factory.mktemp("macro-ws")
    shutil.copy(pool_dir / "pool.parquet", path / "pool.parquet")
    return Workspace(path)


def test_default_min_cluster_size():
    assert macro.default_min_cluster_size(50) == 5
    assert macro.default_min_cluster_size(3_000) == 5
    assert macro.default_min_cluster_size(20_000) == 14
    assert macro.default_min_cluster_size(117_000) == 34


def test_one_type_per_sample_and_embeddings_stored(ws):
    inc = featurize(ws, "macro", "instruction")
    assert inc.n_samples == N
    assert (inc.types_per_sample() == 1).all()
    assert inc.n_types == inc.config["provenance"]["n_clusters"] >= 2
    sizes = np.asarray(inc.matrix.sum(axis=0)).ravel()
    assert (np.diff(sizes) <= 0).all(), "clusters are numbered by size"
    assert all(name.startswith(f"c{i}") for i, name in enumerate(inc.type_names))
    assert "noise" not in inc.type_names
    labels = load_extra(ws, "instruction", "macro", "labels.npy")
    assert np.array_equal(labels, inc.matrix.indices)
    emb = macro.load_embeddings(ws, "instruction", compute=False)
    assert emb.dtype == np.float16 and emb.shape == (N, 384)
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # the stored embeddings are the model's own (float16-rounded)
    model = models.load_embedder("minilm")
    texts = ws.pool.texts("instruction")
    direct = model.encode(texts[:8], normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(direct - emb[:8].astype(np.float32)).max() < 2e-3


def test_embeddings_reused_across_clustering_options(ws):
    featurize(ws, "macro", "instruction")
    before = models.LOAD_CALLS["embedder"]
    res = featurize_result(ws, "macro", "instruction", min_cluster_size=15)
    assert res.status == "built"
    assert models.LOAD_CALLS["embedder"] == before, "embeddings must come from the workspace cache"
    default = featurize(ws, "macro", "instruction")
    assert res.incidence.n_types <= default.n_types


def test_noise_nearest_vs_own(ws):
    own = featurize(ws, "macro", "instruction", noise="own", min_cluster_size=10, min_samples=10)
    near = featurize(ws, "macro", "instruction", noise="nearest", min_cluster_size=10, min_samples=10)
    raw = load_extra(ws, "instruction", "macro", "hdbscan_labels.npy")
    assert (raw < 0).any(), "this setting leaves noise on the test pool"
    assert own.config["provenance"]["noise_points"] == int((raw < 0).sum())
    assert "noise" in own.type_names and "noise" not in near.type_names
    noise_col = own.type_names.index("noise")
    assert np.array_equal(own.matrix[:, noise_col].toarray().ravel(), raw < 0)
    assert own.n_types == near.n_types + 1
    # clustered points keep the same partition; each noise point joins the nearest centroid (cosine)
    a, b = own.matrix.indices, near.matrix.indices
    core = raw >= 0
    pairs = set(zip(a[core].tolist(), b[core].tolist(), strict=True))
    assert len(pairs) == len(set(a[core].tolist()))
    X = macro.load_embeddings(ws, "instruction").astype(np.float32)
    cent = np.stack([X[core & (b == c)].mean(axis=0) for c in range(near.n_types)])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    noise_rows = np.flatnonzero(~core)
    assert np.array_equal(np.argmax(X[noise_rows] @ cent.T, axis=1), b[noise_rows])


def test_deterministic(ws):
    a = featurize_result(ws, "macro", "instruction", reduce="pca", dims=10, min_cluster_size=6)
    b = featurize_result(ws, "macro", "instruction", reduce="pca", dims=10, min_cluster_size=6, rebuild=True)
    assert b.status == "built"
    assert a.incidence.fingerprint == b.incidence.fingerprint
    assert a.incidence.type_names == b.incidence.type_names
    X = macro.load_embeddings(ws, "instruction").astype(np.float32)
    r1 = macro.cluster(X, 8, 5, "hdbscan")
    assert macro.cluster(X, 8, 5, "hdbscan").tolist() == r1.tolist()
    # rows in reverse order: the same clusters up to ties at their borders
    from sklearn.metrics import adjusted_rand_score

    r2 = macro.cluster(X[::-1].copy(), 8, 5, "hdbscan")[::-1]
    assert adjusted_rand_score(r1, r2) > 0.9


def test_implementations_agree(ws):
    from sklearn.metrics import adjusted_rand_score

    X = macro.load_embeddings(ws, "instruction").astype(np.float32)
    for mcs, ms in ((5, 1), (8, 5), (5, 2)):
        a = macro.cluster(X, mcs, ms, "hdbscan")
        b = macro.cluster(X, mcs, ms, "sklearn")
        assert int((a < 0).sum()) == int((b < 0).sum())
        assert adjusted_rand_score(a, b) == pytest.approx(1.0)


def test_ctfidf_names():
    texts = ["python code function bug"] * 5 + ["chocolate cake recipe sugar"] * 5 + ["the and of"] * 2
    labels = np.array([0] * 5 + [1] * 5 + [0, 1])
    names = macro.cluster_names(texts, labels, 2, n_words=2)
    assert names[0].startswith("c0: ") and names[1].startswith("c1: ")
    assert set(names[0][4:].split()) <= {"python", "code", "function", "bug"}
    assert set(names[1][4:].split()) <= {"chocolate", "cake", "recipe", "sugar"}


def test_bad_options(ws):
    with pytest.raises(DivscopeError, match="noise"):
        featurize(ws, "macro", "instruction", noise="drop")
    with pytest.raises(DivscopeError, match="min-cluster-size"):
        featurize(ws, "macro", "instruction", min_cluster_size=1)


def test_no_cluster_found_is_warned_not_silent(ws):
    """HDBSCAN finding no cluster (min_cluster_size too large for the pool) leaves one type for the whole pool:
    kept in the provenance, and warned about with the fix. A clustering that finds clusters warns nothing."""
    with pytest.warns(macro.MacroFallbackWarning, match=r"no cluster among 240 samples with min_cluster_size=200.*"
                                                        r"lower --min-cluster-size"):
        inc = featurize_result(ws, "macro", "instruction", min_cluster_size=200, rebuild=True).incidence
    assert inc.n_types == 1 and (inc.types_per_sample() == 1).all()
    prov = inc.config["provenance"]
    assert prov["hdbscan_clusters"] == 0 and prov["fallback"] == "no cluster found: one type for the whole pool"
    with warnings.catch_warnings():
        warnings.simplefilter("error", macro.MacroFallbackWarning)
        assert featurize_result(ws, "macro", "instruction", min_cluster_size=15, rebuild=True).incidence.n_types > 1
        labels, info = macro.assign(np.eye(3, dtype=np.float32), np.array([0, 0, 1]), "nearest")
        assert labels.tolist() == [0, 0, 1] and "fallback" not in info
