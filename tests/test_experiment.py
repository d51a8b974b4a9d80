"""`divscope run` on a tiny spec: a kill half way and a rerun complete without redoing finished cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_study

TINY = tiny_study()


def _run(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "divscope.cli", "run", str(spec), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "DIVSCOPE_PROGRESS": "0"})


@pytest.mark.slow
def test_run_killed_and_resumed(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    out = tmp_path / "study"
    proc = _run(spec, out)
    cells = out / "cells"
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline and not (cells.is_dir() and any(cells.iterdir())):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (out / "runs" / json.loads(p.read_text())["cell"] / "train.json").stat().st_mtime_ns
                for p in cells.iterdir()}
    assert finished and not (out / "report.html").exists()

    proc = _run(spec, out)
    log, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, log
    assert "report:" in log
    for name, mtime in finished.items():  # finished cells were not trained again
        cell = json.loads((cells / name).read_text())["cell"]
        assert (out / "runs" / cell / "train.json").stat().st_mtime_ns == mtime
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["cell"] for r in rows} == {"base", "instruction-micro/n8-d0.000-s0", "instruction-micro/n8-d1.000-s0",
                                         "random/n8-s0"}  # names as without replicates, and the untrained anchor
    assert all(r["metric"] == "alpaca_eval.nll" and r["score"] < 0 for r in rows)
    html = (out / "report.html").read_text()
    assert "instruction-micro" in html and "data:image/png;base64," in html

    # A third run has nothing left to do and reproduces the same results file.
    before = (out / "results.jsonl").read_bytes()
    trained = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/train.json")}
    assert len(trained) == 4  # three cells and the anchor's train.json
    proc = _run(spec, out)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log
    assert (out / "results.jsonl").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/**/train.json")} == trained  # nothing retrained
    # study.json as an older divscope wrote it for this spec (tests/data/study-39a1ed8.json): that version
    # included typeless samples, this spec now excludes them, so the folder holds another study: refused, with
    # the fix named, nothing touched (test_study_written_before_a_new_option_still_continues: it continues with
    # `typeless: include`).
    (out / "study.json").write_bytes(OLD_STUDY.read_bytes())
    proc = _run(spec, out)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "holds another study" in log and "typeless: include" in log, log
    assert (out / "results.jsonl").read_bytes() == before
    assert (out / "study.json").read_bytes() == OLD_STUDY.read_bytes()
    # Another spec in the same folder: one line, exit code 2, nothing touched.
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("sizes: [8]", "sizes: [9]"))
    proc = _run(other, out)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "holds another study" in log, log
    assert (out / "results.jsonl").read_bytes() == before


def test_run_refuses_a_different_study_in_the_same_dir(tmp_path: Path) -> None:
    from divscope import DivscopeError
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import check_study

    check_study(tmp_path, parse_spec({"name": "a"}), "cmd")
    check_study(tmp_path, parse_spec({"name": "a"}), "cmd")
    with pytest.raises(DivscopeError, match="holds another study"):
        check_study(tmp_path, parse_spec({"name": "b"}), "cmd")


# study.json exactly as divscope wrote it at commit 39a1ed8 (the first study runner, version 0.1.0) for the spec
# of helpers.tiny_study(): made by running that commit's own `_check_study` (git archive 39a1ed8 src), not edited.
OLD_STUDY = Path(__file__).parent / "data" / "study-39a1ed8.json"


def _leaves(d: dict, prefix: str = "") -> set[str]:
    return {k for key, v in d.items()
            for k in (_leaves(v, f"{prefix}{key}.") if isinstance(v, dict) else {f"{prefix}{key}"})}


def _merged(base: dict, over: dict) -> dict:
    return {**base, **{k: _merged(base.get(k, {}), v) if isinstance(v, dict) else v for k, v in over.items()}}


def test_study_written_before_a_new_option_still_continues(tmp_path: Path) -> None:
    """A study.json written by an older divscope lacks the options added since (and holds the fingerprint that
    version computed); at their defaults it is the same study: it continues, and the file is left as written.
    An option whose new default changes behaviour (``typeless``: older versions included typeless samples) is read
    as the old value: the spec continues the study only when it says ``typeless: include``.
    A spec that really differs (an old option changed, or a new option away from its default) is refused;
    adding a variant continues the study and records the spec now run."""
    import yaml

    from divscope import DivscopeError
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import check_study

    new_default = parse_spec(yaml.safe_load(TINY))
    raw = _merged(yaml.safe_load(TINY), {"selection": {"typeless": "include"}})
    spec = parse_spec(raw)
    old = json.loads(OLD_STUDY.read_text())
    # The file really is from before these options: the path under test is exercised, not assumed.
    assert _leaves(spec.model_dump(mode="json")) - _leaves(old["spec"]) == {
        "train.gradient_checkpointing", "selection.length_range", "selection.length_side",
        "selection.length_tokenizer", "variants", "selection.typeless", "selection.spacing", "selection.pruning",
        "selection.replicates", "selection.hold",  # issue 16: replicates
        "selection.where",  # issue 18: eligibility filter
        "selection.features",  # issue 19: the feature builds a selection uses
        # issue 15: every setting of a stage is a spec field now (features per level, train, metrics)
        "features.micro.lowercase", *(f"features.macro.{k}" for k in ("dims", "impl", "min_samples", "name_words",
                                                                      "reduce", "seed")),
        *(f"features.meso.{k}" for k in ("chunk_size", "lemmatize", "max_failure_rate", "max_kept_tags",
                                         "merge_threshold", "min_count")),
        *(f"metrics.{k}" for k in ("bleu_sample", "embedder", "pairs_sample", "seed", "tokenizer", "vendi_sample")),
        *(f"train.{k}" for k in ("device", "logging_steps", "lora_alpha", "lora_dropout", "warmup_ratio",
                                 "weight_decay")),
        "train.chat_template", "train.precision", "train.optimizer",  # issue 17: chat formats, precision
        # issue 17: how a run executes (never in the fingerprint)
        *(f"train.{k}" for k in ("launcher", "num_processes", "sharding", "keep_checkpoints", "micro_batch")),
        "pool.strict", "pool.repair",  # issue 18: the ingest settings in the pool section
        "features.macro.runtime", "metrics.runtime",  # issue 18: the embedding runtime
        "pool.dedup", "pool.near_threshold",  # issue 19: near-duplicate removal at ingest
        "selection.balance_by",  # issue 19: stratified selection
        "selection.replicates_for"}  # issue 20: replicates per strategy
    assert old["spec_fingerprint"] != spec.fingerprint()
    study = tmp_path / "study.json"
    study.write_bytes(OLD_STUDY.read_bytes())
    with pytest.raises(DivscopeError, match="holds another study.*set `typeless: include` under selection:"):
        check_study(tmp_path, new_default, "divscope run tiny.yaml --out study")
    check_study(tmp_path, spec, "divscope run tiny.yaml --out study")
    assert study.read_bytes() == OLD_STUDY.read_bytes()

    for change in ({"selection": {"sizes": [16]}}, {"train": {"max_steps": 2}}, {"name": "other"},
                   {"train": {"gradient_checkpointing": True}}, {"selection": {"length_range": "10:200"}},
                   {"metrics": {"seed": 1}}, {"evaluate": [{**raw["evaluate"][0], "seed": 1}]},
                   {"selection": {"length_side": "instruction", "length_range": "10:200"}},
                   {"selection": {"replicates": 2}}, {"selection": {"replicates_for": {"random": 2}}},
                   {"evaluate": [{**raw["evaluate"][0], "end_of_turn": "exclude"}]},
                   {"selection": {"spacing": "coverage"}}, {"selection": {"pruning": "samples"}},
                   {"train": {"precision": "fp32"}}, {"train": {"chat_template": "chatml"}},
                   {"selection": {"where": "turns == 1"}}, {"selection": {"balance_by": "source"}}):
        with pytest.raises(DivscopeError, match="holds another study"):
            check_study(tmp_path, parse_spec(_merged(raw, change)), "cmd")
        assert study.read_bytes() == OLD_STUDY.read_bytes(), change

    # The embedding runtime: the old study ran on torch (the only runtime then); a spec at the default (auto)
    # continues it on torch, a spec that asks for onnx is another study, and the error says how to continue it.
    assert check_study(tmp_path, spec, "cmd").features.macro.runtime == "torch"
    with pytest.raises(DivscopeError, match="holds another study.*runtime torch; to continue it, set `runtime: torch`"):
        check_study(tmp_path, parse_spec(_merged(raw, {"features": {"macro": {"runtime": "onnx"}}})), "cmd")
    assert study.read_bytes() == OLD_STUDY.read_bytes()

    with_variant = parse_spec(_merged(raw, {"variants": [{"name": "v1", "selection": {"levels": 3}}]}))
    ran = check_study(tmp_path, with_variant, "cmd")
    now = json.loads(study.read_text())
    assert (ran.features.macro.runtime, ran.metrics.runtime) == ("torch", "torch")  # what is stored is what ran
    assert now["spec"] == ran.model_dump(mode="json") and now["spec_fingerprint"] == with_variant.fingerprint() \
        == ran.fingerprint()
    assert now["command"] == old["command"] and now["divscope_version"] == old["divscope_version"]
    check_study(tmp_path, spec, "cmd")  # the base study without the variant is still the same study
