"""Meso level: tag clusters. ``build_meso(texts, config, cache_dir) -> (matrix, type_names, provenance)``.

Pipeline (docs/meso.md has the details and measured numbers):

1. **Tag** every distinct text with the configured tagger (:mod:`divscope.features.tagging`): ``offline``
   (default, spaCy verb-object + noun chunks, no server) or ``endpoint`` (InsTag prompt to an
   OpenAI-compatible server). Raw tags are cached per text in ``cache_dir/tags-<tagger>-<identity>.jsonl``
   (key = sha256 of the text; the file name carries the hash of the tagger's identity, so another tagger or
   another setting never reads these tags). The cache is the kill-safe append-only JSONL of
   :class:`divscope.store.JsonlStore`, written after every chunk: a rerun or a crashed run never re-tags a
   text; endpoint failures are not cached (a rerun retries exactly them).
2. **Normalise** each tag: Unicode NFKC, lower case, ``_ - /`` to spaces, other punctuation dropped (``+`` and
   ``#`` kept for c++/c#, dots kept inside words: node.js), whitespace collapsed, each word lemmatised with
   spaCy ("Writing Poems" -> "write poem"), tags over 6 words or 60 characters dropped.
3. **Drop rare tags**: tags carried by fewer than ``min_count`` texts (default ``max(2, ceil(n / 5000))``:
   2 up to 10,000 texts, 24 for the paper's 117K pool). At most ``max_kept_tags`` (default 8,000) of the most
   frequent survivors go on (bounds the clustering's O(n^2) memory).
4. **Merge near-synonyms**: embed the kept tags (all-MiniLM-L6-v2), average-linkage agglomerative clustering on
   cosine distance cut at ``merge_threshold`` (default 0.2, i.e. mean similarity >= 0.8: merges "write poem" /
   "write poetry" / "compose poem", keeps "write email" / "write letter" (0.68) and "python programming" /
   "javascript programming" (0.37) apart). Deterministic: tags enter in (frequency desc, name) order. Each
   cluster is a type named by its most frequent member, with the number of other members:
   ``"write poem (+2)"``.
5. **Incidence**: a text carries every type one of its tags belongs to (several types per sample); types are
   ordered by how many texts carry them (desc), then name.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope.backend import current_backend, map_chunks, use_backend
from divscope.endpoint import check_parsed
from divscope.errors import DivscopeError
from divscope.features.base import Built, Stages
from divscope.features.settings import MesoSettings
from divscope.features.tagging_common import UNPARSEABLE

VERSION = 1
# Endpoint tagging stops early when this many replies in a row, from the start, held no JSON tag list.
NEVER_PARSED = 50
UNPARSEABLE_HINT = ("the tagger model does not answer the InsTag prompt with JSON: use an instruction-tuned model "
                    "(its chat template applied by the server), a larger max_tokens, or tagger=offline")

# Stage options and their defaults live in MesoSettings (one source); ``options`` holds the tagger's own.
DEFAULTS: dict[str, Any] = {k: v for k, v in MesoSettings().model_dump().items() if k != "options"}
MAX_TAG_WORDS = 6
MAX_TAG_CHARS = 60


def default_min_count(n_texts: int) -> int:
    """One occurrence per 5,000 texts, at least 2 (a tag seen once cannot be shared by two samples)."""
    return max(2, math.ceil(n_texts / 5000))


def normalize_config(options: dict[str, Any], n_samples: int) -> dict[str, Any]:
    """Defaults filled in and ``min_count`` resolved for a pool of ``n_samples`` (hook for the feature cache)."""
    cfg = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if cfg["tagger"] not in ("offline", "endpoint"):
        raise DivscopeError(f"unknown meso tagger {cfg['tagger']!r}: use tagger=offline or tagger=endpoint")
    from divscope.features.tagging import check_tagger_options

    check_tagger_options(cfg["tagger"], {k: v for k, v in options.items() if k not in DEFAULTS})
    if cfg["tagger"] == "offline":
        from divscope.features.tagging_offline import DEFAULT_OFFLINE_METHOD

        cfg.setdefault("method", DEFAULT_OFFLINE_METHOD)
    if cfg.get("min_count") is None:
        cfg["min_count"] = default_min_count(n_samples)
    cfg["min_count"] = int(cfg["min_count"])
    if cfg["min_count"] < 1:
        raise DivscopeError(f"meso min_count must be >= 1, got {cfg['min_count']}")
    thr = float(cfg["merge_threshold"])
    if not 0.0 <= thr < 2.0:
        raise DivscopeError(f"meso merge_threshold is a cosine distance in [0, 2), got {thr}")
    cfg["merge_threshold"] = thr
    return cfg


def config_identity(config: dict[str, Any]) -> str:
    """What, besides the config, determines the output: module version, spaCy model, embedder identity."""
    from divscope.features.tagging import SPACY_MODEL, tag_embedder_identity

    try:
        import spacy

        sp_version = spacy.__version__
    except ImportError:  # pragma: no cover
        sp_version = "none"
    return f"meso:{VERSION}:spacy-{sp_version}:{SPACY_MODEL}:{tag_embedder_identity()}"


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------

_SEP = re.compile(r"[_\-/\\|:;,]+")
_KEEP = re.compile(r"[^\w\s+#.]")
_DOT = re.compile(r"(?<!\w)\.|\.(?!\w)")
_WS = re.compile(r"\s+")


def clean_tag(tag: str) -> str:
    """Case, punctuation and whitespace normalisation of one tag (no lemmatisation); "" if unusable."""
    if not isinstance(tag, str):
        return ""
    s = unicodedata.normalize("NFKC", tag).lower()
    s = _SEP.sub(" ", s)
    s = _KEEP.sub(" ", s)
    s = _DOT.sub(" ", s)
    s = _WS.sub(" ", s).strip()
    if not s or len(s) > MAX_TAG_CHARS or len(s.split()) > MAX_TAG_WORDS:
        return ""
    if not any(ch.isalpha() for ch in s):
        return ""
    return s


def lemmatize_tags(tags: Sequence[str], batch_size: int = 512) -> dict[str, str]:
    """tag -> tag with every word lemmatised (spaCy tagger + lemmatiser; the parser is not needed)."""
    from divscope.features.tagging_offline import LEMMA_FIXES, load_spacy

    nlp = load_spacy()
    out: dict[str, str] = {}
    disable = [p for p in ("parser", "ner") if p in nlp.pipe_names]
    with nlp.select_pipes(disable=disable):
        for tag, doc in zip(tags, nlp.pipe(list(tags), batch_size=batch_size), strict=True):
            parts = []
            for tok in doc:
                lem = tok.lemma_.lower().strip()
                if tok.lower_ != lem:
                    lem = LEMMA_FIXES.get(lem, lem)
                if not (tok.is_alpha and lem.isalpha()):
                    lem = tok.lower_  # c++, node.js, numbers: as written
                parts.append(lem + tok.whitespace_)
            out[tag] = _WS.sub(" ", "".join(parts)).strip()
    return out


def normalize_tags(tag_lists: Sequence[Sequence[str]], lemmatize: bool = True,
                   cache_dir: Path | None = None) -> list[list[str]]:
    """Normalised, de-duplicated tags per text (order of first appearance kept).

    With ``cache_dir``, lemmatised forms are remembered in ``tag-lemmas-<spacy>.jsonl`` (a rebuild with other
    settings re-lemmatises only new tags)."""
    cleaned = [[clean_tag(t) for t in tags] for tags in tag_lists]
    mapping: dict[str, str] = {}
    if lemmatize:
        uniq = sorted({t for ts in cleaned for t in ts if t})
        store = None
        if cache_dir is not None:
            from divscope.features.tagging_offline import spacy_versions
            from divscope.store import JsonlStore

            ident = hashlib.sha256(f"{VERSION}:{spacy_versions()}".encode()).hexdigest()[:16]
            store = JsonlStore(Path(cache_dir) / f"tag-lemmas-{ident}.jsonl")
            for t in uniq:
                rec = store.get(t)
                if rec is not None:
                    mapping[t] = rec["l"]
        todo = [t for t in uniq if t not in mapping]
        if todo:
            new = lemmatize_tags(todo)
            mapping.update(new)
            if store is not None:
                store.put_many((t, {"l": new[t]}) for t in todo)
    out = []
    for ts in cleaned:
        norm = [mapping.get(t, t) for t in ts if t]
        out.append(list(dict.fromkeys(t for t in norm if t)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Merging
# ----------------------------------------------------------------------------------------------------------------


def merge_tags(tags: Sequence[str], counts: Sequence[int], threshold: float,
               embeddings: np.ndarray | None = None) -> list[list[int]]:
    """Groups of near-synonym tags (indices into ``tags``), each ordered by (count desc, name).

    Average-linkage agglomerative clustering on cosine distance, cut at ``threshold``; groups come out ordered
    by their most frequent member (count desc, name). ``threshold <= 0`` merges nothing.
    """
    n = len(tags)
    order = sorted(range(n), key=lambda i: (-counts[i], tags[i]))
    if n <= 1 or threshold <= 0:
        return [[i] for i in order]
    if embeddings is None:
        from divscope.features.tagging_common import embed

        embeddings = embed([tags[i] for i in order])
    else:
        embeddings = embeddings[order]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    dist = pdist(np.asarray(embeddings, np.float64), metric="cosine")
    np.clip(dist, 0.0, 2.0, out=dist)
    labels = fcluster(linkage(dist, method="average"), t=threshold, criterion="distance")
    groups: dict[int, list[int]] = {}
    for pos, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(order[pos])  # positions are in (count desc, name) order
    return sorted(groups.values(), key=lambda g: (-counts[g[0]], tags[g[0]]))


def cached_tag_embeddings(tags: Sequence[str], cache_dir: Path) -> np.ndarray:
    """Embeddings of ``tags`` through ``cache_dir/tag-embeddings-<embedder>.npz`` (rewritten atomically with the
    union of old and new tags), so a rebuild with another ``min_count`` or threshold embeds only new tags."""
    from divscope.features.tagging_common import embed, tag_embedder_identity
    from divscope.store.atomic import atomic_path

    ident = hashlib.sha256(tag_embedder_identity().encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"tag-embeddings-{ident}.npz"
    known: dict[str, int] = {}
    vecs = np.zeros((0, 384), np.float32)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [str(x) for x in z["tags"]]
                vecs = np.asarray(z["vectors"], np.float32)
            if len(names) == len(vecs):
                known = {t: i for i, t in enumerate(names)}
            else:
                vecs = vecs[:0]
        except (OSError, ValueError, KeyError):
            known, vecs = {}, vecs[:0]
    missing = sorted({t for t in tags if t not in known})
    if missing:
        new = embed(missing)
        if vecs.shape[1:] != new.shape[1:]:
            known, vecs = {}, np.zeros((0, new.shape[1]), np.float32)
        base = len(known)
        known.update({t: base + i for i, t in enumerate(missing)})
        vecs = np.concatenate([vecs[:base], new])
        order = sorted(known, key=known.get)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, tags=np.asarray(order, dtype=str), vectors=vecs)
    return vecs[[known[t] for t in tags]] if len(tags) else np.zeros((0, vecs.shape[1]), np.float32)


def type_name(members: Sequence[str]) -> str:
    return members[0] if len(members) == 1 else f"{members[0]} (+{len(members) - 1})"


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()


def tag_cache_path(cache_dir: Path, identity: dict[str, Any]) -> Path:
    ident = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"tags-{identity.get('tagger', 'tagger')}-{ident}.jsonl"


def tag_texts(texts: Sequence[str], tagger: Any, cache_dir: Path, chunk_size: int = 1000,
              progress: str | None = "meso: tagging") -> tuple[list[list[str]], dict[str, Any]]:
    """Raw tags per text through the per-text cache; returns (tags, stats). Failed texts get []."""
    from divscope.store import JsonlStore

    store = JsonlStore(tag_cache_path(cache_dir, tagger.identity()))
    keys = [_sha(t or "") for t in texts]
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in store and k not in todo:
            todo[k] = t or ""
    n_unique = len(set(keys))
    stats: dict[str, Any] = {"unique_texts": n_unique, "cached_texts": n_unique - len(todo),
                             "tagged_texts": 0, "failed_texts": 0, "errors": [], "unparseable_texts": 0,
                             "unparseable_example": "",
                             "cache_file": store.path.name, "cache_corrupt_lines": store.corrupt_lines}
    items = list(todo.items())
    chunk_keys = [[k for k, _ in items[s:s + chunk_size]] for s in range(0, len(items), chunk_size)]

    def keep(i: int, result: tuple[list[list[str]], list[str | None]]) -> None:
        tags, errors = result  # stored chunk by chunk, so an interrupted run keeps what it tagged
        store.put_many([(k, {"tags": tg}) for k, tg, err in zip(chunk_keys[i], tags, errors, strict=True)
                        if err is None])
        unparseable = [err for err in errors if err is not None and err.startswith(UNPARSEABLE)]
        bad = [err for err in errors if err is not None and not err.startswith(UNPARSEABLE)]
        stats["tagged_texts"] += len(errors) - len(bad) - len(unparseable)
        stats["failed_texts"] += len(bad)
        stats["unparseable_texts"] += len(unparseable)
        stats["unparseable_example"] = stats["unparseable_example"] or (unparseable[0] if unparseable else "")
        if not stats["tagged_texts"] and not stats["cached_texts"] and stats["unparseable_texts"] >= NEVER_PARSED:
            raise DivscopeError(f"meso tagging: the first {stats['unparseable_texts']} replies held no JSON tag "
                                f"list ({stats['unparseable_example']}); {UNPARSEABLE_HINT}")
        for err in bad:
            if len(stats["errors"]) < 5 and err not in stats["errors"]:
                stats["errors"].append(err)

    if items:
        chunks = [[t for _, t in items[s:s + chunk_size]] for s in range(0, len(items), chunk_size)]
        engine = "local" if getattr(tagger, "name", "") == "endpoint" else current_backend()
        with use_backend(engine):
            map_chunks(_Tag(tagger), chunks, progress or "meso: tagging", on_result=keep)
    out = []
    for k in keys:
        rec = store.get(k)
        out.append(list(rec["tags"]) if rec is not None else [])
    return out, stats


class _Tag:
    """Chunk task: tags and per-text errors of one chunk. Offline tagging goes to Ray workers on the ray
    engine; an endpoint tagger always runs here (it is network-bound and already sends ``max_concurrency``
    requests at a time through one client, which holds a connection pool that cannot travel)."""

    def __init__(self, tagger: Any):
        self.tagger = tagger
        self.uses_gpu = False

    def setup(self) -> None:
        pass

    def __call__(self, chunk: list[str]) -> tuple[list[list[str]], list[str | None]]:
        return self.tagger.tag_with_status(chunk)


def build_meso(texts: Sequence[str], config: dict[str, Any], cache_dir: Path
               ) -> tuple[sp.csr_matrix, list[str], dict[str, Any]]:
    """Tag, normalise, drop rare tags, merge near-synonyms; see the module docstring.

    ``config``: ``tagger`` (``offline`` | ``endpoint``); offline: ``method`` and the other ``OfflineTagger``
    options; endpoint: ``base_url``, ``model``, ``api_key_env``, ``max_concurrency``, ``timeout``,
    ``max_retries``, ``max_tokens``, ``max_chars`` (query truncation), ``max_tags`` (per reply),
    ``cache_path``; and ``min_count``, ``merge_threshold``, ``max_kept_tags``, ``lemmatize``,
    ``max_failure_rate``, ``chunk_size``.
    Returns a boolean CSR matrix (n_texts x n_types), the type names, and the provenance.
    """
    from divscope.features.tagging import make_tagger

    t_start = time.perf_counter()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    texts = list(texts)
    n = len(texts)
    cfg = normalize_config(dict(config), n)
    tagger_cfg = {k: v for k, v in cfg.items() if k not in DEFAULTS or k == "tagger"}
    tagger = make_tagger(tagger_cfg, cache_dir)
    chunk = int(cfg["chunk_size"] or (256 if cfg["tagger"] == "endpoint" else 1000))

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    raw, tag_stats = tag_texts(texts, tagger, cache_dir, chunk_size=chunk)
    timings["tag_s"] = round(time.perf_counter() - t0, 3)
    # Unparseable replies are never stored as tags (a rerun parses them again from the endpoint cache), so this
    # run saw all of them; the texts tagged earlier are in the tag cache.
    answered = tag_stats["cached_texts"] + tag_stats["tagged_texts"] + tag_stats["unparseable_texts"]
    check_parsed("meso tagging", tag_stats["unparseable_texts"], answered, tag_stats["unparseable_example"],
                 UNPARSEABLE_HINT)
    failed = tag_stats["failed_texts"]
    if failed:
        rate = failed / max(1, tag_stats["unique_texts"])
        if rate > float(cfg["max_failure_rate"]):
            raise DivscopeError(
                f"meso tagging failed for {failed} of {tag_stats['unique_texts']} texts "
                f"(first error: {tag_stats['errors'][0] if tag_stats['errors'] else '?'}); fix the endpoint and "
                f"rerun (tags so far are cached), or allow it with max_failure_rate={rate:.3f}")

    t0 = time.perf_counter()
    norm = normalize_tags(raw, lemmatize=bool(cfg["lemmatize"]), cache_dir=cache_dir)
    timings["normalise_s"] = round(time.perf_counter() - t0, 3)
    doc_freq: Counter[str] = Counter(t for ts in norm for t in ts)
    min_count = cfg["min_count"]
    kept = [t for t, c in doc_freq.items() if c >= min_count]
    kept.sort(key=lambda t: (-doc_freq[t], t))
    truncated = 0
    if len(kept) > int(cfg["max_kept_tags"]):
        truncated = len(kept) - int(cfg["max_kept_tags"])
        kept = kept[: int(cfg["max_kept_tags"])]

    t0 = time.perf_counter()
    emb = cached_tag_embeddings(kept, cache_dir) if cfg["merge_threshold"] > 0 and len(kept) > 1 else None
    groups = merge_tags(kept, [doc_freq[t] for t in kept], cfg["merge_threshold"], emb)
    timings["merge_s"] = round(time.perf_counter() - t0, 3)
    members = [[kept[i] for i in g] for g in groups]
    tag_to_group = {t: gi for gi, ms in enumerate(members) for t in ms}

    rows: list[int] = []
    cols: list[int] = []
    for r, ts in enumerate(norm):
        for gi in sorted({tag_to_group[t] for t in ts if t in tag_to_group}):
            rows.append(r)
            cols.append(gi)
    m = sp.csr_matrix((np.ones(len(rows), np.bool_), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                      shape=(n, len(members)), dtype=np.bool_)
    # Order types by document frequency (desc), then name.
    df = np.asarray(m.sum(axis=0)).ravel()
    names = [type_name(ms) for ms in members]
    perm = sorted(range(len(members)), key=lambda j: (-int(df[j]), names[j]))
    m = sp.csr_matrix(m[:, perm], dtype=np.bool_)
    m.sort_indices()
    names = [names[j] for j in perm]
    members = [members[j] for j in perm]

    types_per_sample = np.diff(m.indptr)
    prov: dict[str, Any] = {
        "level": "meso",
        "version": VERSION,
        "tagger": cfg["tagger"],
        "tagger_identity": tagger.identity(),
        "config": {k: v for k, v in cfg.items() if k != "api_key"},
        "n_texts": n,
        "tagging": {k: tag_stats[k] for k in ("unique_texts", "failed_texts", "errors", "unparseable_texts")},
        "raw_tags": int(sum(len(ts) for ts in raw)),
        "raw_unique_tags": len({t for ts in raw for t in ts}),
        "normalised_unique_tags": len(doc_freq),
        "min_count": min_count,
        "kept_tags": len(kept),
        "kept_tags_truncated": truncated,
        "n_types": len(members),
        "merged_types": sum(1 for ms in members if len(ms) > 1),
        "mean_tags_per_sample": round(float(np.mean([len(ts) for ts in raw])) if n else 0.0, 4),
        "mean_types_per_sample": round(float(types_per_sample.mean()) if n else 0.0, 4),
        "typeless_samples": int((types_per_sample == 0).sum()),
        "type_members": members,
        # What this particular run did (varies between a first run and a rerun; the rest does not).
        "run": {**{k: tag_stats[k] for k in ("cached_texts", "tagged_texts", "cache_file", "cache_corrupt_lines")},
                "unparseable_replies": int(getattr(tagger, "unparseable", 0)),
                "timings": {**timings, "total_s": round(time.perf_counter() - t_start, 3)}},
    }
    return m, names, prov


class MesoFeaturizer:
    """The meso level behind the ``Featurizer`` protocol: ``build_meso`` with its tag caches in ``WS/cache/meso``."""

    level = "meso"

    @staticmethod
    def normalize(options: dict[str, Any], n_samples: int) -> dict[str, Any]:
        cfg = normalize_config({k: v for k, v in options.items() if v is not None}, n_samples)
        return json.loads(json.dumps(cfg, sort_keys=True, default=str))  # the cache key's exact JSON form

    identity = staticmethod(config_identity)

    @staticmethod
    def build(ws: Any, side: str, texts: list[str], config: dict[str, Any], stages: Stages) -> Built:
        with stages("tag+cluster"):
            matrix, names, prov = build_meso(texts, dict(config), ws.subdir("cache", "meso"))
        prov = dict(prov or {})
        prov.pop("run", None)  # cache hits and timings of this build: not part of what the features are
        return Built(sp.csr_matrix(matrix), list(names), prov)
