"""Featurizer throughput on real ShareGPT pairs (builtin:study, 20K by default).

    python benchmarks/bench_features.py [--n 20000] [--embed-n N] [--ws DIR] [--json OUT]
    python benchmarks/bench_features.py --runtimes-only [--runtime-n 2000] [--rounds 4] [--side response]
        [--agreement-n N] [--agreement-runtimes onnx,onnx-int8] [--ws DIR]

Prints, measured in the same run on the same texts:
  * tokenization (micro): samples/s through divscope (tokenize + per-sample counts + CSR) vs the raw Rust
    tokenizer's ``encode_batch_fast``, for both sides;
  * embedding (macro): texts/s through divscope's ``embed_texts`` vs ``SentenceTransformer.encode`` on the
    same texts (batch 64, normalised), instruction side (``--embed-n`` caps the number of texts);
  * clustering of those embeddings: HDBSCAN (hdbscan package, the default) vs sklearn.cluster.HDBSCAN, on
    PCA-50 and on the raw 384-d vectors, and KMeans with the same number of clusters, with the agreement
    (adjusted Rand index) between the two HDBSCAN implementations;
  * embedding runtimes (``--runtimes``, ``--runtimes-only``): texts/s of torch (sentence-transformers), ONNX
    Runtime fp32 and ONNX Runtime int8 through ``embed_texts`` on the same ``--runtime-n`` texts of ``--side``
    (0: skip), measured in ``--rounds`` interleaved slices (every runtime on each slice in turn, so a changing
    load on a shared machine weighs on all alike; model load and ONNX export timed apart, after a warm-up
    batch); then, on the side's first ``--agreement-n`` texts (default: the whole side, 20,000 for the study
    pool): mean / min cosine of each of ``--agreement-runtimes`` to torch's embeddings and the adjusted Rand
    index of the macro labels (divscope's default macro options: PCA-50 above 5,000 samples, HDBSCAN, noise ->
    nearest; also the raw HDBSCAN labels) against torch's. Torch's embeddings are the workspace's cached ones
    when present (give ``--ws`` with them to skip recomputing); the others are computed in chunks of 1,000,
    saved under WS/bench-runtimes/ as they finish, so a stopped run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIVSCOPE_PROGRESS", "0")


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="pool size (builtin:study?n=N)")
    ap.add_argument("--embed-n", type=int, default=None, help="texts for the embedding comparison (default: all)")
    ap.add_argument("--ws", type=Path, default=None, help="workspace dir (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--skip-embed", action="store_true", help="tokenization only")
    ap.add_argument("--raw384", action="store_true", help="also cluster in the full 384-d space (slow at 20K)")
    ap.add_argument("--cluster-only", action="store_true",
                    help="reuse the workspace's cached embeddings (from an earlier run with --ws): clustering only")
    ap.add_argument("--runtimes", action="store_true", help="also compare embedding runtimes (torch / onnx / int8)")
    ap.add_argument("--runtimes-only", action="store_true", help="only the runtime comparison; keeps caches")
    ap.add_argument("--runtime-n", type=int, default=2_000, help="texts for the runtime throughput comparison")
    ap.add_argument("--side", default="response", choices=["instruction", "response"],
                    help="pool side of the runtime comparison")
    ap.add_argument("--agreement-n", type=int, default=None,
                    help="texts (the side's first) for the cosine / ARI comparison [the whole side; 0: none]")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved slices of the throughput comparison")
    ap.add_argument("--agreement-runtimes", default="onnx,onnx-int8",
                    help="runtimes compared with torch for cosine / ARI (comma-separated)")
    args = ap.parse_args()

    import numpy as np

    import divscope
    from divscope import models
    from divscope.features import macro, micro
    from divscope.io.workspace import Workspace

    ws_dir = args.ws or Path(tempfile.mkdtemp(prefix="divscope-bench-"))
    ws = Workspace(ws_dir)
    if not ws.pool_path.exists() or len(ws.pool) != args.n:
        _, t = timed(divscope.ingest, f"builtin:study?n={args.n}", ws_dir)
        ws = Workspace(ws_dir)
        print(f"ingest builtin:study?n={args.n}: {t:.1f}s")
    if args.runtimes_only:
        _dump(args.json, compare_runtimes(ws, args.side, args.runtime_n, args.agreement_n, args.rounds,
                                          tuple(args.agreement_runtimes.split(","))))
        return
    if not args.cluster_only:
        shutil.rmtree(ws_dir / "features", ignore_errors=True)
    n = len(ws.pool)
    results: dict = {"n": n, "cpu_count": os.cpu_count()}
    import torch

    results["torch_threads"] = torch.get_num_threads()

    # ---------------------------------------------------------------- tokenization
    tok = models.load_tokenizer("smollm2")
    backend = tok.backend_tokenizer
    for side in () if args.cluster_only else ("instruction", "response"):
        texts = ws.pool.texts(side)
        _, raw_t = timed(backend.encode_batch_fast, texts, add_special_tokens=False)
        counts, ours_t = timed(micro.token_counts, ws, side, texts=texts, tokenizer="smollm2")
        _, bands_t = timed(micro.band_incidence, counts.matrix, *micro.default_bands(n))
        results[f"tokenize_{side}"] = {"raw_samples_per_s": n / raw_t, "divscope_samples_per_s": n / ours_t,
                                       "tokens_total": int(counts.lengths.sum()), "bands_s": bands_t,
                                       "ratio": ours_t / raw_t}
        print(f"tokenize {side:11s}: raw encode_batch_fast {n / raw_t:8,.0f} samples/s | divscope (tokenize+"
              f"count+CSR+save) {n / ours_t:8,.0f} samples/s ({ours_t / raw_t:.2f}x) | "
              f"{counts.lengths.sum() / ours_t:,.0f} tokens/s | bands {bands_t:.2f}s")

    if args.skip_embed:
        _dump(args.json, results)
        return

    # ---------------------------------------------------------------- embedding
    side = "instruction"
    texts = ws.pool.texts(side)
    m = min(args.embed_n or n, n)
    sub = texts[:m]
    if not args.cluster_only:
        model, load_t = timed(models.load_embedder, "minilm")
        print(f"embedder load: {load_t:.1f}s on {model.device}")
        model.encode(sub[:64], batch_size=64)  # warm-up
        _, raw_t = timed(model.encode, sub, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
        if m == n:  # through the workspace cache (embed + float16 + atomic save), reused for clustering below
            _, ours_t = timed(macro.embeddings, ws, side, texts=texts, runtime="torch")
        else:
            _, ours_t = timed(macro.embed_texts, sub, model, runtime="torch")
        results["embed_instruction"] = {"texts": m, "raw_texts_per_s": m / raw_t,
                                        "divscope_texts_per_s": m / ours_t, "ratio": ours_t / raw_t}
        print(f"embed {side} ({m:,} texts): raw SentenceTransformer.encode {m / raw_t:7,.1f} texts/s | "
              f"divscope {m / ours_t:7,.1f} texts/s ({ours_t / raw_t:.2f}x the raw time)")

    # ---------------------------------------------------------------- clustering
    if m == n:
        X = macro.embeddings(ws, side, texts=texts, runtime="torch").astype(np.float32)
    else:
        X = macro.embed_texts(sub, models.load_embedder("minilm"), runtime="torch").astype(np.float16).astype(np.float32)
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    cfg = macro.normalize({}, len(X))
    mcs, ms = cfg["min_cluster_size"], cfg["min_samples"]
    (Z, _), pca_t = timed(macro.reduce_dims, X, "pca", 50, 0)
    print(f"cluster {len(X):,} x {X.shape[1]} (min_cluster_size={mcs}, min_samples={ms}); PCA-50 {pca_t:.2f}s")
    rows = {}
    runs = [("hdbscan pca50", Z, "hdbscan"), ("sklearn pca50", Z, "sklearn")]
    if args.raw384:
        runs += [("hdbscan raw384", X, "hdbscan"), ("sklearn raw384", X, "sklearn")]
    for name, data, impl in runs:
        labels, t = timed(macro.cluster, data, mcs, ms, impl)
        rows[name] = labels
        k = int(labels.max()) + 1
        results[f"cluster_{name.replace(' ', '_')}"] = {"s": t, "clusters": k, "noise": float((labels < 0).mean())}
        print(f"  {name:15s} {t:7.2f}s  clusters={k:5d} noise={np.mean(labels < 0):.2f}")
    ari = adjusted_rand_score(rows["hdbscan pca50"], rows["sklearn pca50"])
    results["ari_hdbscan_vs_sklearn_pca50"] = ari
    print(f"  ARI hdbscan vs sklearn (pca50): {ari:.4f}")
    k = max(2, int(rows["hdbscan pca50"].max()) + 1)
    km, t = timed(KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict, Z)
    results["cluster_kmeans_pca50"] = {"s": t, "clusters": k}
    print(f"  {'kmeans pca50':15s} {t:7.2f}s  clusters={k:5d} (k = HDBSCAN's)")
    labels, info = macro.assign(X, rows["hdbscan pca50"], "nearest")
    sizes = np.bincount(labels)
    results["final_cluster_sizes"] = {"max": int(sizes.max()), "median": float(np.median(sizes)),
                                      "min": int(sizes.min())}
    print(f"  after noise->nearest: {len(sizes)} types, sizes max {sizes.max()} median {np.median(sizes):.0f} "
          f"min {sizes.min()}")
    if args.runtimes:
        results["runtimes"] = compare_runtimes(ws, args.side, args.runtime_n, args.agreement_n, args.rounds,
                                               tuple(args.agreement_runtimes.split(",")))
    _dump(args.json, results)


def _has_cached(ws, side: str) -> bool:
    from divscope.errors import DivscopeError
    from divscope.features import macro

    try:
        macro.load_embeddings(ws, side, compute=False, runtime="torch")
        return True
    except DivscopeError:
        return False


def _interleaved(texts: list[str], runtimes: list[str], rounds: int, label: str) -> dict[str, float]:
    """Seconds each runtime takes to embed ``texts``, measured in ``rounds`` slices, every runtime on each slice
    in turn (the order rotating), so a load that changes on a shared machine weighs on all of them alike."""
    from divscope.features import macro

    total = dict.fromkeys(runtimes, 0.0)
    step = -(-len(texts) // max(1, rounds))
    for r, s in enumerate(range(0, len(texts), step)):
        chunk = texts[s:s + step]
        for rt in runtimes[r % len(runtimes):] + runtimes[:r % len(runtimes)]:
            _, t = timed(macro.embed_texts, chunk, runtime=rt)
            total[rt] += t
        print(f"    {label} slice {r + 1}: {s + len(chunk):,}/{len(texts):,} texts, load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    return total


def compare_runtimes(ws, side: str, n_texts: int, agreement_n: int | None = None, rounds: int = 4,
                     agreement_runtimes: tuple[str, ...] = ("onnx", "onnx-int8"), chunk: int = 1000) -> dict:
    """Throughput of each embedding runtime on the same texts (interleaved), then agreement with torch on the
    side's first ``agreement_n`` texts (default: all)."""
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    from divscope.features import embed_runtime, macro

    texts = ws.pool.texts(side)
    sub = texts[:min(n_texts, len(texts))]
    out: dict = {"side": side, "throughput_texts": len(sub), "pool": len(texts), "threads": torch.get_num_threads(),
                 "rounds": rounds, "load_before": os.getloadavg()}
    runtimes = list(embed_runtime.RUNTIMES)
    print(f"embedding runtimes, {side} side, {torch.get_num_threads()} threads: throughput on {len(sub):,} texts "
          f"in {rounds} interleaved slices (load {os.getloadavg()[0]:.1f})", flush=True)
    if sub:
        for rt in runtimes:
            _, load_t = timed(embed_runtime.load_embedder, "minilm", rt)  # ONNX: export on first use (cached)
            macro.embed_texts(sub[:64], runtime=rt)  # warm-up
            out[rt] = {"load_s": load_t}
        secs = _interleaved(sub, runtimes, rounds, "throughput")
        for rt in runtimes:
            out[rt]["texts_per_s"] = len(sub) / secs[rt]
            print(f"  {rt:9s} {len(sub) / secs[rt]:7.1f} texts/s ({secs['torch'] / secs[rt]:.2f}x torch)  load/export "
                  f"{out[rt]['load_s']:.1f}s", flush=True)
    out["load_after_throughput"] = os.getloadavg()
    if agreement_n == 0:
        return out
    m = min(agreement_n or len(texts), len(texts))
    part = texts[:m]
    cfg = macro.normalize({"runtime": "torch"}, m)
    print(f"agreement with torch on the first {m:,} of {len(texts):,} {side} texts (reduce={cfg['reduce']}, "
          f"min_cluster_size={cfg['min_cluster_size']}, min_samples={cfg['min_samples']}, noise={cfg['noise']})",
          flush=True)
    out["agreement_texts"] = m
    store = ws.path / "bench-runtimes"
    store.mkdir(exist_ok=True)
    embs: dict[str, np.ndarray] = {}
    if _has_cached(ws, side):  # the workspace's own torch embeddings (pool rows)
        embs["torch"], source = macro.load_embeddings(ws, side, compute=False, runtime="torch")[:m], "workspace cache"
    else:
        embs["torch"], source = macro.embed_texts(part, runtime="torch").astype(np.float16), "computed"
    out.setdefault("torch", {})["embeddings"] = source
    # the other runtimes in chunks, each saved (a stopped run resumes), interleaved chunk by chunk
    rts = [rt for rt in runtimes if rt in agreement_runtimes and rt != "torch"]
    parts: dict[str, list[np.ndarray]] = {rt: [] for rt in rts}
    secs = dict.fromkeys(rts, 0.0)
    computed = dict.fromkeys(rts, 0)
    for i, s in enumerate(range(0, m, chunk)):
        for rt in rts:
            saved = store / f"{side}-{m}-{rt}-{chunk}-{i}.npy"
            if saved.is_file():
                parts[rt].append(np.load(saved))
                continue
            emb32, t = timed(macro.embed_texts, part[s:s + chunk], runtime=rt)
            emb = emb32.astype(np.float16)  # stored like the workspace stores them
            np.save(saved, emb)
            parts[rt].append(emb)
            secs[rt] += t
            computed[rt] += len(emb)
        print(f"    agreement chunk {i + 1}: {min(m, s + chunk):,}/{m:,} texts, load {os.getloadavg()[0]:.1f}",
              flush=True)
    for rt in rts:
        embs[rt] = np.concatenate(parts[rt])
        if computed[rt]:
            out.setdefault(rt, {})["agreement_texts_per_s"] = computed[rt] / secs[rt]
            out[rt]["agreement_texts_computed"] = computed[rt]
    labels, raw = {}, {}
    for rt in ("torch", *rts):
        X = embs[rt].astype(np.float32)
        Z, _ = macro.reduce_dims(X, cfg["reduce"], cfg["dims"], cfg["seed"])
        raw[rt], cluster_t = timed(macro.cluster, Z, cfg["min_cluster_size"], cfg["min_samples"], cfg["impl"])
        labels[rt], _ = macro.assign(X, raw[rt], cfg["noise"])
        ref = embs["torch"].astype(np.float32)
        cos = (X * ref).sum(1) / np.linalg.norm(X, axis=1) / np.linalg.norm(ref, axis=1)
        row = {"mean_cosine_to_torch": float(cos.mean()), "min_cosine_to_torch": float(cos.min()),
               "clusters": int(labels[rt].max()) + 1, "noise": float((raw[rt] < 0).mean()),
               "ari_to_torch": adjusted_rand_score(labels["torch"], labels[rt]),
               "ari_raw_hdbscan_to_torch": adjusted_rand_score(raw["torch"], raw[rt]), "cluster_s": cluster_t}
        out.setdefault(rt, {}).update(row)
        speed = f", {out[rt]['agreement_texts_per_s']:.1f} texts/s" if "agreement_texts_per_s" in out[rt] else ""
        print(f"  {rt:9s} cosine mean {cos.mean():.6f} min {cos.min():.4f} | {row['clusters']} clusters, noise "
              f"{row['noise']:.2f} | ARI final {row['ari_to_torch']:.4f} raw {row['ari_raw_hdbscan_to_torch']:.4f}"
              f"{speed}", flush=True)
    out["load_after"] = os.getloadavg()
    return out


def _dump(path: Path | None, results: dict) -> None:
    if path:
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
