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
    assert {r["cell"] for r in rows} == {"instruction-micro/n8-d0.000-s0", "instruction-micro/n8-d1.000-s0",
                                         "random/n8-s0"}
    assert all(r["metric"] == "alpaca_eval.nll" and r["score"] < 0 for r in rows)
    html = (out / "report.html").read_text()
    assert "instruction-micro" in html and "data:image/png;base64," in html

    # A third run has nothing left to do and reproduces the same results file.
    before = (out / "results.jsonl").read_bytes()
    proc = _run(spec, out)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log
    assert (out / "results.jsonl").read_bytes() == before


def test_run_refuses_a_different_study_in_the_same_dir(tmp_path: Path) -> None:
    from divscope import DivscopeError
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import check_study

    check_study(tmp_path, parse_spec({"name": "a"}), "cmd")
    check_study(tmp_path, parse_spec({"name": "a"}), "cmd")
    with pytest.raises(DivscopeError, match="holds another study"):
        check_study(tmp_path, parse_spec({"name": "b"}), "cmd")


def test_study_written_before_a_new_option_still_continues(tmp_path: Path) -> None:
    """A study.json from an older version lacks options added since; at their defaults it is the same study."""
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import check_study

    spec = parse_spec({"name": "a"})
    check_study(tmp_path, spec, "cmd")
    stored = json.loads((tmp_path / "study.json").read_text())
    del stored["spec"]["train"]["gradient_checkpointing"]  # as if written before that option existed
    stored["spec_fingerprint"] = "from-an-older-version"
    (tmp_path / "study.json").write_text(json.dumps(stored))
    check_study(tmp_path, spec, "cmd")
