"""The command line as a user meets it: help, builtin pool, one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from divscope.cli import main

BROKEN = Path(__file__).parent / "data" / "broken"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "divscope.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_subcommands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("ingest", "stats", "export"):
        assert cmd in out.stdout
    assert "builtin:demo" in run("ingest", "--help").stdout


@pytest.mark.parametrize("args", [
    ("ingest", str(BROKEN / "all_bad.jsonl"), "--out", "{tmp}/ws"),
    ("ingest", str(BROKEN / "empty.jsonl"), "--out", "{tmp}/ws"),
    ("ingest", "missing-file.json", "--out", "{tmp}/ws"),
    ("ingest", "builtin:nope", "--out", "{tmp}/ws"),
    ("ingest", str(BROKEN / "alpaca_mixed.jsonl"), "--out", "{tmp}/ws", "--strict"),
    ("stats", "{tmp}/no-such-ws"),
])
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = run(*(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_builtin_demo_ingest_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "builtin:demo", "--out", str(tmp_path / "ws")]) == 0
    rep = json.loads((tmp_path / "ws" / "ingest.json").read_text())
    assert rep["accepted"] == 3000 and rep["by_reason"] == {"truncated": 1}
    [rej] = [json.loads(x) for x in (tmp_path / "ws" / "rejects.jsonl").read_text().splitlines()]
    assert rej["reason"] == "truncated" and rej["raw"].startswith("{")
    assert main(["stats", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    assert "3,000" in out and "response_words" in out


@pytest.mark.slow
def test_builtin_views_counts(tmp_path: Path) -> None:
    """The packaged ShareGPT file: every complete record recovered, pair views deduplicated."""
    import divscope

    raw = divscope.ingest("builtin:sharegpt", tmp_path / "raw").report
    assert raw["read"] == 17672 and raw["by_reason"]["truncated"] == 1  # 17,671 complete + the broken tail
    pairs = divscope.ingest("builtin:sharegpt-pairs", tmp_path / "pairs").report
    assert pairs["accepted"] == 57200
    study = divscope.ingest("builtin:study", tmp_path / "study").report
    assert study["accepted"] == 20000
