"""The metric card: every post-hoc metric of a subset, per side, as one JSON document (DESIGN.md, "Post-hoc
metrics").

``metric_card(records, ws=..., rows=...)`` computes it for records in memory; ``card_for_path(path)`` reads a
subset file and its manifest (``<file>.manifest.json``, written by ``divscope select`` / ``grid``) and writes
``<file>.metrics.json`` beside it, atomically, skipping the work when a card with the same parameters and the
same input bytes is already there.

Sampling: one seeded permutation ``perm = np.random.default_rng(seed).permutation(n)`` of the subset's positions
serves every sampled metric; cosine distance uses its first ``pairs_sample`` positions, Vendi its first
``vendi_sample``, Self-BLEU its first ``bleu_sample`` (nested prefixes: at most ``max(pairs_sample,
vendi_sample)`` texts per side are ever embedded), the same positions for both sides. Sizes actually used are
recorded per side. When the subset comes with its workspace and pool rows, cached pool embeddings, cached
target-token counts and every cached incidence are reused by row; otherwise texts are embedded / tokenized
here and types covered are not available. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope import models
from divscope.errors import DivscopeError
from divscope.features import embed_runtime
from divscope.features.incidence import LEVELS, SIDES
from divscope.features.settings import LEGACY_RUNTIME
from divscope.io.record import Record
from divscope.io.workspace import Workspace
from divscope.metrics import lexical, semantic
from divscope.metrics.settings import MetricSettings
from divscope.select.subsets import MANIFEST_SUFFIX, manifest_path
from divscope.settings import parse
from divscope.store.cached import cached_result

METRICS_VERSION = 1
DIGITS = 6  # every float in a card is rounded to 6 decimals
NGRAMS = (1, 2, 3)
METRICS_SUFFIX = ".metrics.json"
SUBSET_KEYS = ("strategy", "diversity", "size", "seed", "k", "types_covered")
READ_FORMATS = ("alpaca", "sharegpt", "openai", "json", "jsonl", "parquet", "hf")

# the per-side metrics shown in tables and in metrics.csv, in order
MAIN_METRICS = ("distinct_1", "distinct_2", "distinct_3", "mean_cosine_distance", "mean_tokens",
                "compression_ratio", "self_bleu", "token_entropy_bits", "vendi")


def metrics_path(path: Path) -> Path:
    return path.with_name(path.name + METRICS_SUFFIX)


class Resources:
    """Objects loaded once and shared by the cards of one process (a grid's subsets share one workspace)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def workspace(self, path: str | Path) -> Workspace:
        p = Path(path).resolve()
        return self.get(("ws", str(p)), lambda: Workspace(p))


# ----------------------------------------------------------------------------------------------- helpers

def _clean(obj: Any) -> Any:
    """JSON-native copy: floats rounded to DIGITS decimals (NaN/inf -> None), numpy scalars unwrapped."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            return None
        x = round(x, DIGITS)
        return 0.0 if x == 0 else x  # no "-0.0"
    return obj


def card_params(settings: MetricSettings | None = None, **values: Any) -> dict[str, Any]:
    """The parameters a card depends on (with model identities), validated; stored in the card as ``params``.

    Give a ``MetricSettings`` or its fields as keywords (defaults: ``MetricSettings``'s)."""
    m = settings if settings is not None else parse(MetricSettings, values)
    seed, pairs_sample, bleu_sample, vendi_sample = m.seed, m.pairs_sample, m.bleu_sample, m.vendi_sample
    tokenizer, embedder = m.tokenizer, m.embedder
    runtime = embed_runtime.resolve(m.runtime)
    return {
        "metrics_version": METRICS_VERSION, "seed": int(seed), "pairs_sample": int(pairs_sample),
        "bleu_sample": int(bleu_sample), "vendi_sample": int(vendi_sample),
        "tokenizer": tokenizer, "tokenizer_identity": models.tokenizer_identity(tokenizer),
        "embedder": embedder, "embedder_identity": models.embedder_identity(embedder),
        # added later: absent for torch (what ran before), so cards computed then keep their parameters; auto is
        # recorded as the runtime it resolved to here
        **({} if runtime == LEGACY_RUNTIME else {"embed_runtime": runtime}),
        "distinct_n": "lowercased whitespace words, n = 1, 2, 3, within texts",
        "compression": f"{lexical.COMPRESSION} level {lexical.COMPRESSION_LEVEL}, texts joined by newline",
        "self_bleu": "sacrebleu sentence BLEU (13a, exp smoothing, effective order), 0-100, each sampled text "
                     "against the other sampled texts",
        "float_digits": DIGITS,
    }


# ----------------------------------------------------------------------------------------------- reuse by row

def _token_cache_present(ws: Workspace, side: str, identity: str) -> bool:
    """Whether WS/features/_tokens holds target-token counts of this pool side for this tokenizer (without
    recomputing micro's cache key: the key folders' meta.json say what they hold)."""
    from divscope.features.micro import tokens_dir

    d = tokens_dir(ws) / side
    if not d.is_dir():
        return False
    for meta_path in d.glob("*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if (meta.get("identity") == identity and meta.get("unit") == "tokens" and not meta.get("lowercase")
                and meta.get("pool_fingerprint") == ws.pool.fingerprint):
            return True
    return False


def _ws_token_stats(ws: Workspace, side: str, rows: np.ndarray, tokenizer: str, identity: str,
                    res: Resources) -> lexical.TokenStats | None:
    """Lengths and unigram counts of the subset from the pool's cached token counts (what micro features and
    their ``lengths.npy`` extras are built from), or None when that cache is absent."""
    if not _token_cache_present(ws, side, identity):
        return None
    from divscope.features.micro import token_counts

    tc = res.get(("tokens", str(ws.path), side, identity), lambda: token_counts(ws, side, tokenizer=tokenizer))
    sub = tc.matrix[rows]
    counts = np.bincount(sub.indices, weights=sub.data, minlength=sub.shape[1]).astype(np.int64)
    return lexical.TokenStats(np.asarray(tc.lengths)[rows], counts, "workspace")


def _ws_embeddings(ws: Workspace, side: str, embedder: str, res: Resources,
                   runtime: str = LEGACY_RUNTIME) -> np.ndarray | None:
    from divscope.features.macro import load_embeddings

    def load() -> np.ndarray | None:
        try:
            return load_embeddings(ws, side, embedder, compute=False, runtime=runtime)
        except DivscopeError:
            return None

    return res.get(("emb", str(ws.path), side, embedder, runtime), load)


def types_covered(ws: Workspace, side: str, rows: np.ndarray, res: Resources | None = None) -> list[dict[str, Any]]:
    """For every incidence of ``side`` cached in the workspace (every level, every cache entry): its number of
    types, how many are carried by at least one of ``rows``, and that fraction. Stale entries are skipped."""
    from divscope.features.featurize import latest_entry, list_entries, load_incidence

    res = res or Resources()
    out = []
    for level in LEVELS:
        entries = list_entries(ws, side, level)
        if not entries:
            continue
        latest = latest_entry(ws, side, level).name
        for entry in sorted(entries, key=lambda p: p.name):
            def load(entry: Path = entry, level: str = level) -> Any:
                try:
                    return load_incidence(ws, side, level, key=entry.name)
                except DivscopeError:
                    return None

            inc = res.get(("inc", str(ws.path), side, level, entry.name), load)
            if inc is None:
                continue
            covered = int(len(np.unique(inc.matrix[rows].indices)))
            out.append({"level": level, "key": entry.name, "latest": entry.name == latest, "types": inc.n_types,
                        "covered": covered, "fraction": covered / inc.n_types if inc.n_types else None})
    return out


# ----------------------------------------------------------------------------------------------- the card

def metric_card(records: Sequence[Record], *, ws: Workspace | str | Path | None = None,
                rows: Sequence[int] | np.ndarray | None = None, resources: Resources | None = None,
                **settings: Any) -> dict[str, Any]:
    """All post-hoc metrics of ``records``, per side, as a JSON-native dict (floats rounded to 6 decimals; the
    same inputs give byte-identical ``json.dumps(card, sort_keys=True)``).

    ``ws`` + ``rows`` (pool row of each record, in order) let cached pool embeddings, token counts and
    incidences be reused and give types covered; without them texts are embedded and tokenized here.
    ``settings``: the fields of ``MetricSettings`` (seed and sample sizes, tokenizer, embedder).
    """
    res = resources or Resources()
    m = parse(MetricSettings, settings)
    params = card_params(m)
    seed, pairs_sample, bleu_sample, vendi_sample, tokenizer = (m.seed, m.pairs_sample, m.bleu_sample,
                                                                m.vendi_sample, m.tokenizer)
    n = len(records)
    if n == 0:
        raise DivscopeError("the subset has no records: nothing to measure")
    wsp: Workspace | None = None
    row_arr: np.ndarray | None = None
    if ws is not None and rows is not None:
        wsp = ws if isinstance(ws, Workspace) else res.workspace(ws)
        row_arr = np.asarray(rows, np.int64)
        if row_arr.shape != (n,):
            raise DivscopeError(f"{len(row_arr)} rows given for {n} records")
        n_pool = len(wsp.pool)
        if n and (row_arr.min() < 0 or row_arr.max() >= n_pool):
            raise DivscopeError(f"rows out of range for the pool of {wsp.path} ({n_pool} samples)")

    perm = np.random.default_rng(int(seed)).permutation(n)
    m_pairs, m_vendi, m_bleu = min(n, pairs_sample), min(n, vendi_sample), min(n, bleu_sample)
    emb_pos = perm[:max(m_pairs, m_vendi)]
    tok = None
    sides: dict[str, Any] = {}
    for side in SIDES:
        texts = [r.side(side) for r in records]
        s: dict[str, Any] = {}
        dn = lexical.distinct_n(texts, NGRAMS)
        for k in NGRAMS:
            s[f"distinct_{k}"] = dn[k]["ratio"]
            s[f"ngrams_{k}"] = {"unique": dn[k]["unique"], "total": dn[k]["total"]}
        s["words"] = dn[1]["total"]
        s["compression_ratio"], s["bytes"] = lexical.compression_ratio(texts)
        s["self_bleu"] = lexical.self_bleu([texts[i] for i in perm[:m_bleu]])
        s["bleu_sample"] = m_bleu

        stats = None
        if wsp is not None and row_arr is not None:
            stats = _ws_token_stats(wsp, side, row_arr, tokenizer, params["tokenizer_identity"], res)
        if stats is None:
            if tok is None:
                tok = models.load_tokenizer(tokenizer)
            stats = lexical.tokenize_stats(texts, tok)
        s["mean_tokens"] = stats.mean_length
        s["tokens"] = int(stats.lengths.sum())
        s["token_types"] = int((stats.counts > 0).sum())
        s["token_entropy_bits"] = stats.entropy_bits
        s["tokens_from"] = stats.source

        emb = None
        runtime = params.get("embed_runtime", LEGACY_RUNTIME)
        if wsp is not None and row_arr is not None:
            pool_emb = _ws_embeddings(wsp, side, params["embedder"], res, runtime)
            if pool_emb is not None:
                emb, s["embeddings_from"] = pool_emb[row_arr[emb_pos]], "workspace"
        if emb is None:
            emb = semantic.embed_sample([texts[i] for i in emb_pos], params["embedder"], runtime)
            s["embeddings_from"] = "computed"
        s["mean_cosine_distance"] = semantic.mean_cosine_distance(emb[:m_pairs])
        s["cosine_sample"] = m_pairs
        s["vendi"] = semantic.vendi_score(emb[:m_vendi])
        s["vendi_sample"] = m_vendi

        s["types_covered"] = (types_covered(wsp, side, row_arr, res)
                              if wsp is not None and row_arr is not None else None)
        sides[side] = s
    card = {"n": n, "params": params, **sides}
    return _clean(card)


# ----------------------------------------------------------------------------------------------- files

def _sha_path(path: Path, h: Any) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\x00")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)


def input_digest(path: Path) -> str:
    """sha256 of the subset's bytes (every file of a directory subset) and of its manifest, if any."""
    h = hashlib.sha256()
    _sha_path(path, h)
    mp = manifest_path(path)
    if mp.is_file():
        _sha_path(mp, h)
    return h.hexdigest()[:32]


def read_manifest(path: Path) -> dict[str, Any] | None:
    mp = manifest_path(path)
    if not mp.is_file():
        return None
    try:
        m = json.loads(mp.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DivscopeError(f"{mp}: not valid JSON ({e})") from e
    if not isinstance(m, dict):
        raise DivscopeError(f"{mp}: a manifest must be a JSON object")
    return m


def _resolve_rows(manifest: dict[str, Any] | None, records: list[Record],
                  res: Resources) -> tuple[Workspace | None, np.ndarray | None, str | None]:
    """(workspace, rows, note): rows are used only if the pool still holds exactly these texts at these rows."""
    if manifest is None:
        return None, None, "no manifest: texts embedded and tokenized here, types covered unavailable"
    where, rows = manifest.get("workspace"), manifest.get("rows")
    if not where or not isinstance(rows, list):
        return None, None, "manifest names no workspace/rows"
    ws = res.workspace(where)
    if not ws.pool_path.is_file():
        return None, None, f"workspace {where} not found"
    pool = ws.pool
    fp = manifest.get("pool_fingerprint")
    if fp and fp != pool.fingerprint:
        return None, None, f"the pool of {where} changed since the subset was selected"
    try:
        arr = np.asarray(rows, np.int64)
    except (TypeError, ValueError):
        return None, None, "manifest rows are not integers"
    if arr.shape != (len(records),) or (len(arr) and (arr.min() < 0 or arr.max() >= len(pool))):
        return None, None, "manifest rows do not match the file's records"
    for a, b in zip(records, pool.records(arr.tolist()), strict=True):
        if a.instruction != b.instruction or a.response != b.response:
            return None, None, "the file's texts differ from the pool rows named in the manifest"
    return ws, arr, None


def subset_keys(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a card records of the subset's manifest (``SUBSET_KEYS``: strategy, d, N, seed, k, types covered)."""
    return _clean({k: manifest.get(k) for k in SUBSET_KEYS})


def card_for_path(path: str | Path, *, force: bool = False, resources: Resources | None = None,
                  **settings: Any) -> dict[str, Any]:
    """The card of the subset file (or HF directory) ``path``, written to ``<path>.metrics.json``.

    Reads ``<path>.manifest.json`` if present (workspace, rows, strategy, d, ...). An existing card is returned
    as is when its ``params`` and ``input_sha256`` (subset + manifest bytes) match, unless ``force``.
    """
    path = Path(path)
    if not path.exists():
        raise DivscopeError(f"{path}: no such file or directory")
    res = resources or Resources()
    params = card_params(**settings)
    manifest = read_manifest(path)
    digest = input_digest(path)

    def compute() -> dict[str, Any]:
        from divscope.io import read_records

        fmt = (manifest or {}).get("format")
        records, rejects = read_records(path, fmt if fmt in READ_FORMATS else None)
        if not records:
            raise DivscopeError(f"{path}: no valid record ({len(rejects)} rejected)")
        ws, rows, note = _resolve_rows(manifest, records, res)
        card = metric_card(records, ws=ws, rows=rows, resources=res, **settings)
        card["source"] = {"file": path.name, "manifest": manifest_path(path).name if manifest else None,
                          "workspace": (manifest or {}).get("workspace"), "rows_reused": rows is not None,
                          "note": note, "rejected_records": len(rejects)}
        card["subset"] = subset_keys(manifest) if manifest else None
        return card

    return cached_result(metrics_path(path), {"params": params, "input_sha256": digest}, compute, force=force)


# ----------------------------------------------------------------------------------------------- directories

def find_subsets(directory: str | Path) -> list[Path]:
    """Every subset under ``directory`` (any depth): a path with ``<path>.manifest.json`` beside it. Hidden
    folders and half-written temporaries (names starting with '.') are ignored."""
    directory = Path(directory)
    found = []
    for mp in directory.rglob("*" + MANIFEST_SUFFIX):
        rel = mp.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        subset = mp.with_name(mp.name[: -len(MANIFEST_SUFFIX)])
        if subset.exists():
            found.append(subset)
    return sorted(found)


def latest_coverage(side: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """level -> the types-covered entry of the most recently featurized incidence of that level."""
    return {e["level"]: e for e in side.get("types_covered") or [] if e.get("latest")}


def summary_row(card: dict[str, Any], name: str) -> dict[str, Any]:
    """One flat row of the directory table: subset identity, then ``<side>.<metric>`` for the main metrics and
    ``<side>.<level>_covered`` / ``_coverage`` for each level with a cached incidence (latest entry)."""
    sub = card.get("subset") or {}
    row: dict[str, Any] = {"subset": name, "strategy": sub.get("strategy"), "diversity": sub.get("diversity"),
                           "size": sub.get("size") if sub.get("size") is not None else card["n"],
                           "seed": sub.get("seed"), "k": sub.get("k"), "n": card["n"]}
    for side in SIDES:
        s = card[side]
        for m in MAIN_METRICS:
            row[f"{side}.{m}"] = s.get(m)
        for level, e in latest_coverage(s).items():
            row[f"{side}.{level}_covered"] = e["covered"]
            row[f"{side}.{level}_coverage"] = e["fraction"]
    return row


def summary_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Columns of the directory table: fixed ones first, then coverage columns by side and level order."""
    cols = ["subset", "strategy", "diversity", "size", "seed", "k", "n"]
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    for side in SIDES:
        cols += [f"{side}.{m}" for m in MAIN_METRICS]
        for level in LEVELS:
            cols += [c for c in (f"{side}.{level}_covered", f"{side}.{level}_coverage") if c in present]
    return cols
