"""Micro level: mid-frequency token types of the target model's tokenizer (DESIGN.md, "Micro frequency bands").

1. Tokenize every text of the pool side (no special tokens, no truncation) in batches with the Rust backend
   (``encode_batch_fast``), or split on whitespace with ``unit="words"``.
2. Count *occurrences* of each type over the whole side.
3. Keep the types with ``low <= count <= high``; drop the rest (above: function words, punctuation; below:
   noise). A sample carries every kept type that occurs in it (boolean incidence).

Default bands scale the paper's (low=10, high=500 at a 117,000-sample pool) linearly with the pool size n::

    low  = max(2, floor(10  * n / 117000 + 0.5))
    high = max(5 * low, floor(500 * n / 117000 + 0.5))

(round half up; the floor of 2 keeps hapaxes out on small pools, and ``high >= 5 * low`` keeps a usable band.)
Both can be set explicitly.

``unit="words"``: ``str.split()`` whitespace words, nothing else (punctuation stays attached, case kept);
``lowercase=True`` lowercases first. Type names: tokens are shown decoded with their id (``▁hello#1234``: a
leading space is ``▁``, ``\\n``/``\\t`` are escaped, a partial UTF-8 byte is ``\\xe2``); words as themselves.

The per-sample token counts (sample x vocabulary CSR) and lengths are cached separately under
``WS/features/_tokens`` so changing the bands never re-tokenizes; :func:`token_lengths` gives the target
tokenizer length of every pool sample (metrics, length control).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope import models
from divscope.errors import DivscopeError
from divscope.features.base import Built, Stages
from divscope.io.workspace import Workspace
from divscope.store.atomic import atomic_path, write_json
from divscope.ui import progress_bar

PAPER_LOW, PAPER_HIGH, PAPER_POOL = 10, 500, 117_000
LOW_FLOOR, HIGH_OVER_LOW = 2, 5
UNITS = ("tokens", "words")
BATCH = 1024
TOKENS_VERSION = 1


def default_bands(n_samples: int) -> tuple[int, int]:
    """(low, high) for a pool of ``n_samples``: the paper's 10/500 at 117K, scaled linearly, with floors."""
    scale = n_samples / PAPER_POOL
    low = max(LOW_FLOOR, int(np.floor(PAPER_LOW * scale + 0.5)))
    high = max(HIGH_OVER_LOW * low, int(np.floor(PAPER_HIGH * scale + 0.5)))
    return low, high


# ------------------------------------------------------------------------------------------- registry API

def normalize(options: dict[str, Any], n_samples: int) -> dict[str, Any]:
    unit = options.get("unit") or "tokens"
    if unit not in UNITS:
        raise DivscopeError(f"unknown unit {unit!r}: use tokens or words")
    lowercase = bool(options.get("lowercase") or False)
    d_low, d_high = default_bands(n_samples)
    low = d_low if options.get("low") is None else int(options["low"])
    high = d_high if options.get("high") is None else int(options["high"])
    if low < 1:
        raise DivscopeError(f"--low must be >= 1 (got {low})")
    if high < low:
        raise DivscopeError(f"--high ({high}) must be >= --low ({low})")
    tokenizer = None if unit == "words" else str(options.get("tokenizer") or models.DEFAULT_TOKENIZER)
    return {"unit": unit, "tokenizer": tokenizer, "lowercase": lowercase, "low": low, "high": high}


def identity(config: dict[str, Any]) -> str:
    if config["unit"] == "words":
        return "words:str.split" + (":lower" if config["lowercase"] else "")
    return models.tokenizer_identity(config["tokenizer"])


def build(ws: Workspace, side: str, texts: list[str], config: dict[str, Any], stages: Stages) -> Built:
    counts = token_counts(ws, side, texts=texts, tokenizer=config["tokenizer"], unit=config["unit"],
                          lowercase=config["lowercase"], stages=stages)
    with stages("bands"):
        matrix, keep, prov = band_incidence(counts.matrix, config["low"], config["high"])
        names = counts.names(keep)
    prov.update({"identity": counts.identity, "vocab_size": counts.matrix.shape[1],
                 "n_units_total": int(counts.lengths.sum()),
                 "length_unit": "words" if config["unit"] == "words" else "tokens",
                 "bands_default": dict(zip(("low", "high"), default_bands(len(texts)), strict=True)),
                 "token_cache": counts.key})
    return Built(matrix, names, prov, {"lengths.npy": counts.lengths})


class MicroFeaturizer:
    """The micro level behind the ``Featurizer`` protocol (registered by ``divscope.features.featurize``)."""

    level = "micro"
    normalize = staticmethod(normalize)
    identity = staticmethod(identity)
    build = staticmethod(build)


# ------------------------------------------------------------------------------------------- counting

@dataclass
class TokenCounts:
    """Occurrences of every unit in every sample (CSR, int32) and per-sample lengths (int64)."""

    matrix: sp.csr_matrix
    lengths: np.ndarray
    identity: str
    key: str
    tokenizer: str | None
    vocab: list[str] | None  # words unit: the words; tokens: None (names come from the tokenizer)

    def names(self, ids: np.ndarray) -> list[str]:
        if self.vocab is not None:
            return unique_names([printable(self.vocab[i]) for i in ids])
        tok = models.load_tokenizer(self.tokenizer or models.DEFAULT_TOKENIZER)
        return token_names(tok, ids)

    def corpus_counts(self) -> np.ndarray:
        return np.asarray(self.matrix.sum(axis=0)).ravel()


def _rows_to_csr(row_ids: list[np.ndarray], n_cols: int) -> sp.csr_matrix:
    """One CSR row per id array: column = id, value = occurrences (exact, via a sort of row*V+id keys)."""
    lens = np.fromiter((len(r) for r in row_ids), np.int64, count=len(row_ids))
    if lens.sum() == 0:
        return sp.csr_matrix((len(row_ids), n_cols), dtype=np.int32)
    flat = np.concatenate(row_ids).astype(np.int64)
    rows = np.repeat(np.arange(len(row_ids), dtype=np.int64), lens)
    keys, cnt = np.unique(rows * n_cols + flat, return_counts=True)
    r, c = np.divmod(keys, n_cols)
    indptr = np.zeros(len(row_ids) + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=len(row_ids)), out=indptr[1:])
    return sp.csr_matrix((cnt.astype(np.int32), c.astype(np.int32), indptr), shape=(len(row_ids), n_cols))


class TokenizeTask:
    """Chunk task: per-sample token counts of one chunk as CSR parts (built where the chunk is tokenized)."""

    uses_gpu = False

    def __init__(self, tokenizer: str | Any, lowercase: bool = False):
        self.tokenizer = tokenizer  # a name (loaded where the task runs) or a loaded tokenizer
        self.lowercase = lowercase
        self._encode: Any = None

    def setup(self) -> None:
        tok = models.load_tokenizer(self.tokenizer) if isinstance(self.tokenizer, str) else self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:  # slow (Python) tokenizer
            self._encode = lambda batch: tok(batch, add_special_tokens=False)["input_ids"]
            return
        from tokenizers import Tokenizer

        if backend.truncation is not None or backend.padding is not None:
            backend = Tokenizer.from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        enc = getattr(backend, "encode_batch_fast", backend.encode_batch)
        self._encode = lambda batch: [e.ids for e in enc(batch, add_special_tokens=False)]

    def __call__(self, chunk: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, data, lengths) of the chunk's rows; column = token id (no width yet)."""
        ids = [np.asarray(x, np.int64) for x in self._encode([t.lower() for t in chunk] if self.lowercase else chunk)]
        top = max((int(x.max()) for x in ids if len(x)), default=-1)
        m = _rows_to_csr(ids, top + 1)
        return m.indptr, m.indices, m.data, np.fromiter((len(x) for x in ids), np.int64, count=len(ids))


def _tokenized_matrix(tok: Any, tokenizer: str, texts: list[str], lowercase: bool,
                      description: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sample x vocabulary counts and lengths, tokenized in chunks of ``BATCH`` on the current engine."""
    from divscope.backend import map_chunks

    chunks = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
    parts = map_chunks(TokenizeTask(tokenizer, lowercase), chunks, description)
    n_cols = max(len(tok), getattr(tok, "vocab_size", 0) or 0,
                 max((int(p[1].max()) + 1 for p in parts if len(p[1])), default=0))
    mats = [sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_cols))
            for indptr, indices, data, _ in parts]
    matrix = sp.vstack(mats, format="csr") if mats else sp.csr_matrix((0, n_cols), dtype=np.int32)
    lengths = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)
    return matrix, lengths


def _words_batches(texts: list[str], lowercase: bool, advance: Any) -> tuple[list[np.ndarray], list[str]]:
    vocab: dict[str, int] = {}
    rows: list[np.ndarray] = []
    for start in range(0, len(texts), BATCH):
        for t in texts[start:start + BATCH]:
            words = (t.lower() if lowercase else t).split()
            rows.append(np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int64, count=len(words)))
        advance(min(BATCH, len(texts) - start))
    return rows, list(vocab)


def tokens_dir(ws: Workspace) -> Path:
    return ws.path / "features" / "_tokens"


def token_counts(ws: Workspace, side: str, *, texts: list[str] | None = None, tokenizer: str | None = None,
                 unit: str = "tokens", lowercase: bool = False, stages: Stages | None = None) -> TokenCounts:
    """Per-sample unit counts of a pool side, cached in ``WS/features/_tokens/<side>/<key>/``."""
    stages = stages or Stages()
    if unit == "words":
        tokenizer = None
        ident = "words:str.split" + (":lower" if lowercase else "")
    else:
        tokenizer = tokenizer or models.DEFAULT_TOKENIZER
        ident = models.tokenizer_identity(tokenizer)
    pool = ws.pool
    key = hashlib.sha256(json.dumps([TOKENS_VERSION, pool.fingerprint, side, ident, unit, lowercase])
                         .encode()).hexdigest()[:20]
    path = tokens_dir(ws) / side / key
    if (path / "meta.json").is_file():
        try:
            with stages("load tokens"):
                return _load_counts(path, key, tokenizer, len(pool))
        except Exception:  # damaged: recount
            pass
    if texts is None:
        texts = pool.texts(side)
    vocab = None
    if unit == "words":
        with stages("split words"), progress_bar(f"{side}: split words", len(texts)) as advance:
            rows, vocab = _words_batches(texts, lowercase, advance)
            matrix = _rows_to_csr(rows, max(len(vocab), 1))
            lengths = np.fromiter((len(r) for r in rows), np.int64, count=len(rows))
    else:
        with stages("load tokenizer"):
            tok = models.load_tokenizer(tokenizer)
        with stages("tokenize"):
            matrix, lengths = _tokenized_matrix(tok, tokenizer, texts, lowercase, f"{side}: tokenize")
    with stages("save tokens"), atomic_path(path) as tmp:
        tmp.mkdir()
        np.savez(tmp / "counts.npz", indptr=matrix.indptr.astype(np.int64), indices=matrix.indices.astype(np.int32),
                 data=matrix.data.astype(np.int32), shape=np.asarray(matrix.shape, np.int64))
        np.save(tmp / "lengths.npy", lengths)
        if vocab is not None:
            write_json(tmp / "vocab.json", vocab)
        write_json(tmp / "meta.json", {"identity": ident, "unit": unit, "lowercase": lowercase, "side": side,
                                       "tokenizer": tokenizer, "pool_fingerprint": pool.fingerprint,
                                       "n_samples": len(texts), "nnz": int(matrix.nnz),
                                       "total": int(lengths.sum())})
    return TokenCounts(matrix, lengths, ident, key, tokenizer, vocab)


def _load_counts(path: Path, key: str, tokenizer: str | None, n: int) -> TokenCounts:
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    with np.load(path / "counts.npz", allow_pickle=False) as z:
        shape = tuple(int(x) for x in z["shape"])
        m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
    lengths = np.load(path / "lengths.npy", allow_pickle=False)
    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8")) if meta["unit"] == "words" else None
    if shape[0] != n or len(lengths) != n or int(lengths.sum()) != meta["total"] or int(m.sum()) != meta["total"]:
        raise ValueError(f"{path}: inconsistent token cache")
    return TokenCounts(m, lengths, meta["identity"], key, tokenizer, vocab)


def token_lengths(ws: Workspace | str | Path, side: str, tokenizer: str | None = None) -> np.ndarray:
    """Length of every pool sample's ``side`` in tokens of ``tokenizer`` (default: the target model's)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    return token_counts(ws, side, tokenizer=tokenizer).lengths


# ------------------------------------------------------------------------------------------- bands

def band_incidence(counts: sp.csr_matrix, low: int, high: int) -> tuple[sp.csr_matrix, np.ndarray, dict[str, Any]]:
    """Boolean sample x kept-type matrix for ``low <= corpus count <= high``; kept ids; band statistics."""
    total = np.asarray(counts.sum(axis=0)).ravel()
    occurring = total > 0
    below = occurring & (total < low)
    above = total > high
    mid = occurring & ~below & ~above
    keep = np.flatnonzero(mid)
    remap = np.full(counts.shape[1], -1, np.int64)
    remap[keep] = np.arange(len(keep))
    new_cols = remap[counts.indices]
    ok = new_cols >= 0
    row_of = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    indptr = np.zeros(counts.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(row_of[ok], minlength=counts.shape[0]), out=indptr[1:])
    m = sp.csr_matrix((np.ones(int(ok.sum()), np.bool_), new_cols[ok].astype(np.int32), indptr),
                      shape=(counts.shape[0], len(keep)))
    per_sample = np.diff(indptr)
    prov = {"types_below": int(below.sum()), "types_mid": int(len(keep)), "types_above": int(above.sum()),
            "occurrences_mid": int(total[keep].sum()), "occurrences_total": int(total.sum()),
            "samples_without_type": int((per_sample == 0).sum()),
            "mean_types_per_sample": float(per_sample.mean()) if len(per_sample) else 0.0}
    return m, keep, prov


# ------------------------------------------------------------------------------------------- names

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "▁"}


def printable(s: str) -> str:
    """One-line, visible rendering of a token string: spaces as ▁, control characters escaped."""
    if not s:
        return "∅"
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif not ch.isprintable():
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}~{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _decoder_kind(tok: Any) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return "other"
    try:
        dec = json.dumps(json.loads(backend.to_str()).get("decoder"))
    except Exception:
        return "other"
    if '"ByteLevel"' in dec:
        return "bytelevel"
    if "\u2581" in dec or "\\u2581" in dec or '"Metaspace"' in dec or '"ByteFallback"' in dec:
        return "spm"
    return "other"


def token_names(tok: Any, ids: np.ndarray) -> list[str]:
    """Readable, unique names: decoded token text made printable, then ``#id``."""
    ids = [int(i) for i in ids]
    raw = tok.convert_ids_to_tokens(ids)
    kind = _decoder_kind(tok)
    inv = {c: b for b, c in _bytes_to_unicode().items()} if kind == "bytelevel" else {}
    out = []
    for i, r in zip(ids, raw, strict=True):
        r = "" if r is None else str(r)
        s = r
        if kind == "bytelevel" and r and all(c in inv for c in r):
            s = bytes(inv[c] for c in r).decode("utf-8", errors="backslashreplace")
        elif kind == "spm":
            if len(r) == 6 and r.startswith("<0x") and r.endswith(">"):
                b = int(r[3:5], 16)
                s = chr(b) if b < 0x80 else f"\\x{b:02x}"
            else:
                s = r.replace("\u2581", " ")
        out.append(f"{printable(s)}#{i}")
    return out
