"""Metric card: hand-checkable metric values, Self-BLEU = sacrebleu, determinism, reuse of workspace caches by
row, card files and the directory table (real SmolLM2 tokenizer and MiniLM embedder, small data).

Tests marked slow load the embedder or build the 40-sample workspace (~30 s of CPU together, most of it model
loading and featurizing); the rest take about a second plus the one-time tokenizer conversion."""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

import divscope
from divscope import models
from divscope.errors import DivscopeError
from divscope.features.featurize import featurize, load_incidence
from divscope.io.record import Record, Turn
from divscope.io.workspace import Workspace
from divscope.metrics import (
    card_for_path,
    compression_ratio,
    distinct_n,
    entropy_bits,
    mean_cosine_distance,
    metric_card,
    self_bleu,
    self_bleu_scores,
    vendi_score,
)
from divscope.metrics.card import find_subsets, manifest_path, metrics_path
from divscope.metrics.commands import metrics_cmd
from divscope.metrics.lexical import tokenize_stats
from helpers import real_pairs

N = 40
SMALL = {"pairs_sample": 12, "bleu_sample": 8, "vendi_sample": 16}
pytestmark = pytest.mark.usefixtures("divscope_cache")  # tests/conftest.py: session-wide temp model cache


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A 40-sample workspace with micro and macro features (and so embeddings and token counts) of both sides."""
    path = tmp_path_factory.mktemp("metrics-ws")
    divscope.ingest(real_pairs(N), path)
    w = Workspace(path)
    for side in ("instruction", "response"):
        featurize(w, "micro", side)
        featurize(w, "macro", side, min_cluster_size=3)
    return w


def rec(instruction: str, response: str) -> Record:
    return Record.make([Turn("user", instruction), Turn("assistant", response)])


def write_subset(ws: Workspace, rows: list[int], path, fmt=None, manifest: bool = True, **extra) -> None:
    records = ws.pool.records(rows)
    divscope.write_records(records, path, fmt=fmt)
    if manifest:
        m = {"workspace": str(ws.path.resolve()), "pool_fingerprint": ws.pool.fingerprint, "rows": rows,
             "ids": [r.id for r in records], "strategy": "random", "diversity": None, "size": len(rows),
             "seed": 0, "k": None, "types_covered": None, "format": fmt or "auto", **extra}
        manifest_path(path).write_text(json.dumps(m), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- lexical

def test_distinct_n_by_hand():
    d = distinct_n(["A b a", "b  A"])  # words: a b a | b a  (lowercased, whitespace)
    assert d[1] == {"ratio": 2 / 5, "unique": 2, "total": 5}
    assert d[2] == {"ratio": 2 / 3, "unique": 2, "total": 3}  # ab ba | ba: never across texts
    assert d[3] == {"ratio": 1.0, "unique": 1, "total": 1}
    d = distinct_n(["x", "y"])
    assert d[1]["ratio"] == 1.0 and d[2] == {"ratio": None, "unique": 0, "total": 0}
    assert distinct_n([""])[1]["ratio"] is None
    # against a naive count on real text
    texts = [p["messages"][-1]["content"] for p in real_pairs(5)]
    for n in (1, 2, 3):
        grams = [tuple(w[i:i + n]) for w in (t.lower().split() for t in texts) for i in range(len(w) - n + 1)]
        assert distinct_n(texts)[n]["ratio"] == pytest.approx(len(set(grams)) / len(grams), abs=0)


def test_compression_ratio_by_hand():
    texts = ["abc" * 50, "hello world"]
    raw = ("abc" * 50 + "\nhello world").encode()
    ratio, size = compression_ratio(texts)
    assert size == len(raw) and ratio == len(zlib.compress(raw, 9)) / len(raw)
    rng = np.random.default_rng(0)
    noisy = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz "), 150)) for _ in range(2)]
    assert compression_ratio(noisy)[0] > ratio
    assert compression_ratio([""]) == (None, 0)


def test_entropy_by_hand():
    assert entropy_bits(np.array([1, 1, 1, 1])) == 2.0
    assert entropy_bits(np.array([7, 0, 0])) == 0.0
    assert entropy_bits(np.array([1, 3])) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))
    assert entropy_bits(np.zeros(3)) is None


def test_token_stats_real_tokenizer():
    tok = models.load_tokenizer("smollm2")
    texts = ["Hello world, hello again!", "Tokenizers split text.", ""]
    stats = tokenize_stats(texts, tok)
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    assert stats.lengths.tolist() == [len(x) for x in ids]
    c = Counter(i for x in ids for i in x)
    p = np.array(list(c.values())) / sum(c.values())
    assert stats.entropy_bits == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-12)
    assert stats.mean_length == pytest.approx(sum(map(len, ids)) / 3)


def test_self_bleu_identical_high_disjoint_low_and_equals_sacrebleu():
    import sacrebleu

    assert self_bleu(["the cat sat on the mat today"] * 4) == pytest.approx(100.0)
    disjoint = ["alpha beta gamma delta epsilon", "one two three four five", "red green blue cyan magenta",
                "north south east west up"]
    assert self_bleu(disjoint) < 5
    assert self_bleu(["only one"]) is None
    texts = [p["messages"][-1]["content"] for p in real_pairs(8)] + ["", "same same", "same same"]
    ours = self_bleu_scores(texts)
    ref = [sacrebleu.sentence_bleu(texts[i], texts[:i] + texts[i + 1:]).score for i in range(len(texts))]
    assert ours.tolist() == pytest.approx(ref, abs=1e-9)


# ----------------------------------------------------------------------------------------------- semantic

def test_vendi_and_cosine_by_hand():
    same = np.ones((5, 8))
    assert vendi_score(same) == pytest.approx(1.0) and mean_cosine_distance(same) == pytest.approx(0.0)
    eye = np.eye(6)
    assert vendi_score(eye) == pytest.approx(6.0) and mean_cosine_distance(eye) == pytest.approx(1.0)
    tall = np.eye(4, 50)  # m < d takes the m x m route
    assert vendi_score(tall) == pytest.approx(4.0)
    two = np.array([[1, 0], [1, 0], [0, 3], [0, 3]], float)  # scale does not matter (cosine)
    assert vendi_score(two) == pytest.approx(2.0)
    assert mean_cosine_distance(two) == pytest.approx(4 / 6)  # 2 pairs at 0, 4 at 1
    assert mean_cosine_distance(np.ones((1, 3))) is None


@pytest.mark.slow
def test_card_of_identical_texts_real_models():
    records = [rec("Write a haiku about rain.", "Soft rain on the roof")] * 6
    card = metric_card(records, **SMALL)
    for side in ("instruction", "response"):
        s = card[side]
        assert s["vendi"] == pytest.approx(1.0, abs=1e-6)
        assert s["mean_cosine_distance"] == pytest.approx(0.0, abs=1e-3)
        assert s["self_bleu"] == pytest.approx(100.0)
        assert s["embeddings_from"] == "computed" and s["tokens_from"] == "tokenized"
        assert s["types_covered"] is None
    assert card["response"]["distinct_1"] == round(5 / 30, 6)
    assert card["response"]["cosine_sample"] == 6 and card["response"]["bleu_sample"] == 6


# ----------------------------------------------------------------------------------------------- cards

@pytest.mark.slow
def test_determinism_and_recorded_samples(ws):
    rows = list(range(0, N, 2))
    records = ws.pool.records(rows)
    a = metric_card(records, ws=ws, rows=rows, seed=3, **SMALL)
    b = metric_card(records, ws=ws, rows=rows, seed=3, **SMALL)
    assert json.dumps(a, sort_keys=True).encode() == json.dumps(b, sort_keys=True).encode()
    c = metric_card(records, ws=ws, rows=rows, seed=4, **SMALL)
    assert c["response"]["self_bleu"] != a["response"]["self_bleu"]  # another sample of 8 of 20
    s = a["response"]
    assert (s["cosine_sample"], s["bleu_sample"], s["vendi_sample"]) == (12, 8, 16)
    assert a["params"]["seed"] == 3 and a["params"]["pairs_sample"] == 12
    assert s["embeddings_from"] == "workspace" and s["tokens_from"] == "workspace"
    with pytest.raises(DivscopeError):
        metric_card(records, ws=ws, rows=rows[:-1])
    with pytest.raises(DivscopeError):
        metric_card(records, pairs_sample=1)


@pytest.mark.slow
def test_card_for_path_with_manifest(ws, tmp_path):
    rows = [3, 1, 4, 15, 9, 26, 5, 35, 8, 27, 7, 2, 18, 28]
    path = tmp_path / "sub.jsonl"
    write_subset(ws, rows, path)
    card = card_for_path(path, **SMALL)
    out = metrics_path(path)
    assert out.is_file() and json.loads(out.read_text()) == card
    assert card["source"]["rows_reused"] and card["source"]["note"] is None
    assert card["subset"]["strategy"] == "random" and card["n"] == len(rows)
    for side in ("instruction", "response"):
        cov = {e["level"]: e for e in card[side]["types_covered"] if e["latest"]}
        assert set(cov) == {"macro", "micro"}
        for level, e in cov.items():
            inc = load_incidence(ws, side, level)
            expect = int((np.asarray(inc.matrix[rows].sum(axis=0)).ravel() > 0).sum())
            assert (e["covered"], e["types"]) == (expect, inc.n_types)
            assert e["fraction"] == round(expect / inc.n_types, 6)
        # lengths reused from the pool's token cache equal the micro lengths extra
        from divscope.features.featurize import load_extra

        lengths = load_extra(ws, side, "micro", "lengths.npy")
        assert card[side]["mean_tokens"] == round(float(lengths[rows].mean()), 6)

    # unchanged inputs and parameters: the card is not recomputed
    stamp = out.stat().st_mtime_ns
    assert card_for_path(path, **SMALL) == card and out.stat().st_mtime_ns == stamp
    assert card_for_path(path, **{**SMALL, "bleu_sample": 9})["response"]["bleu_sample"] == 9

    # the same records without manifest: tokenized / embedded here; same lexical values, near-equal embeddings
    alone = tmp_path / "alone" / "sub.jsonl"
    write_subset(ws, rows, alone, manifest=False)
    bare = card_for_path(alone, **SMALL)
    assert bare["source"]["rows_reused"] is False and bare["subset"] is None
    for side in ("instruction", "response"):
        x, y = card[side], bare[side]
        assert y["tokens_from"] == "tokenized" and y["embeddings_from"] == "computed" and y["types_covered"] is None
        for k in ("distinct_1", "distinct_2", "distinct_3", "compression_ratio", "self_bleu", "mean_tokens",
                  "token_entropy_bits", "tokens"):
            assert x[k] == y[k], k
        assert x["mean_cosine_distance"] == pytest.approx(y["mean_cosine_distance"], abs=2e-3)
        assert x["vendi"] == pytest.approx(y["vendi"], rel=2e-3)


@pytest.mark.slow
def test_manifest_that_does_not_match_the_file(ws, tmp_path):
    path = tmp_path / "odd.jsonl"
    write_subset(ws, [0, 1, 2, 3], path)
    m = json.loads(manifest_path(path).read_text())
    m["rows"] = [4, 5, 6, 7]
    manifest_path(path).write_text(json.dumps(m))
    card = card_for_path(path, **SMALL)
    assert card["source"]["rows_reused"] is False and "differ" in card["source"]["note"]
    assert card["response"]["types_covered"] is None
    with pytest.raises(DivscopeError):
        card_for_path(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_directory_table(ws, tmp_path):
    grid = tmp_path / "grid"
    write_subset(ws, list(range(0, 12)), grid / "random" / "n12-s0.jsonl")
    write_subset(ws, list(range(20, 30)), grid / "deep" / "er" / "n10-s1.parquet", fmt="parquet", strategy="k-center")
    (grid / "stray.jsonl").write_text("{}\n")  # no manifest: not a subset
    assert [p.name for p in find_subsets(grid)] == ["n10-s1.parquet", "n12-s0.jsonl"]
    runner = CliRunner()
    args = [str(grid), "--pairs-sample", "12", "--bleu-sample", "8", "--vendi-sample", "16"]
    result = runner.invoke(metrics_cmd, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "k-center" in result.output and "i.vendi" in result.output
    with open(grid / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["subset"] for r in table] == ["deep/er/n10-s1.parquet", "random/n12-s0.jsonl"]
    assert [r["size"] for r in table] == ["10", "12"]
    assert {"response.vendi", "instruction.micro_coverage", "response.macro_covered"} <= set(table[0])
    summary = json.loads((grid / "metrics.json").read_text())
    assert len(summary["subsets"]) == 2 and summary["params"]["bleu_sample"] == 8
    card = json.loads(metrics_path(grid / "random" / "n12-s0.jsonl").read_text())
    assert float(table[1]["response.vendi"]) == card["response"]["vendi"]
    # one file: its card as a table
    one = runner.invoke(metrics_cmd, [str(grid / "random" / "n12-s0.jsonl"), *args[1:]], catch_exceptions=False)
    assert one.exit_code == 0 and "micro types covered" in one.output
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(metrics_cmd, [str(empty)])
    assert isinstance(bad.exception, DivscopeError)
