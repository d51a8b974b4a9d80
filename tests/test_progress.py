"""Progress that moves: plain lines off a terminal (a line per stage, then one per interval, on an injected clock),
the embedding bar per model batch, a model-loading stage, and training steps reported by the trainer."""

from __future__ import annotations

import importlib.util
from itertools import count
from pathlib import Path

import pytest

import divscope
from divscope import models, ui
from divscope.cli import main
from divscope.features.macro import embed_texts
from helpers import real_pairs


@pytest.fixture()
def plain(monkeypatch: pytest.MonkeyPatch):
    """Plain progress lines, on a clock that moves 10 s each time it is read."""
    monkeypatch.setenv("DIVSCOPE_PROGRESS", "plain")
    ticks = count(0, 10)
    monkeypatch.setattr(ui, "clock", lambda: float(next(ticks)))
    return monkeypatch


def counts(err: str, prefix: str) -> list[int]:
    """The done counts of the periodic lines of stage ``prefix`` (``prefix: 32/150 (21%), ...``)."""
    return [int(ln.removeprefix(prefix + ": ").split("/")[0].replace(",", ""))
            for ln in err.splitlines() if ln.startswith(prefix + ": ") and "/" in ln.split(",")[0]]


def test_plain_lines_a_stage_then_one_per_interval(plain, capfd) -> None:
    plain.setenv("DIVSCOPE_PROGRESS_INTERVAL", "30")
    with ui.progress_bar("work", total=10) as advance:  # clock: 0 at the start, then 10, 20, ... per item
        for _ in range(10):
            advance()
    assert capfd.readouterr().err.splitlines() == [
        "work: started, 10 to do",
        "work: 3/10 (30%), 0.1/s, 30.0 s",
        "work: 6/10 (60%), 0.1/s, 1 min 00 s",
        "work: 9/10 (90%), 0.1/s, 1 min 30 s",
        "work: 10/10 (100%), 0.1/s, 1 min 50 s (done)",
    ]


def test_a_short_stage_is_one_line_and_off_is_silent(plain, capfd) -> None:
    with ui.progress_bar("quick") as advance:  # the default interval (30 s) is never reached
        advance(5)
    with ui.stage("load thing"):
        pass
    assert capfd.readouterr().err.splitlines() == ["quick: started", "load thing ..."]
    plain.setenv("DIVSCOPE_PROGRESS", "0")
    with ui.progress_bar("quiet", total=3) as advance, ui.stage("load"):
        advance(3)
    assert capfd.readouterr().err == ""


def test_the_cli_prints_plain_stage_lines(plain, ws, capfd) -> None:
    plain.setattr(ui, "clock", lambda: 0.0)  # a quick stage: its start line only
    assert main(["stats", str(ws.path)]) == 0
    assert capfd.readouterr().err.splitlines() == ["stats: started, 240 to do"]


@pytest.mark.slow
def test_the_embedding_bar_moves_per_model_batch_after_a_loading_stage(plain, capfd) -> None:
    plain.setenv("DIVSCOPE_PROGRESS_INTERVAL", "0")  # a line on every update
    models.clear_memo()
    texts = [p["messages"][0]["content"] for p in real_pairs(150)]
    embed_texts(texts, batch_size=32, description="embed", runtime="torch")
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "load embedder minilm (cpu) ..." and lines[1] == "embed: started, 150 to do", err
    assert counts(err, "embed") == [32, 64, 96, 128, 150, 150], err  # the last: the totals line (done)
    if importlib.util.find_spec("onnxruntime") is not None:  # ONNX Runtime (the CPU default) moves it alike
        embed_texts(texts, batch_size=32, description="embed", runtime="onnx")
        err = capfd.readouterr().err
        assert counts(err, "embed") == [32, 64, 96, 128, 150, 150], err


@pytest.mark.slow
def test_training_reports_its_steps(plain, tmp_path: Path, capfd) -> None:
    import torch

    from divscope.train.settings import TrainSettings
    from divscope.train.sft import train

    plain.setenv("DIVSCOPE_PROGRESS_INTERVAL", "0")
    torch.set_num_threads(1)
    plain.setattr(torch, "set_num_threads", lambda n: None)  # one thread: see tests/conftest.py _trained_run
    ws = tmp_path / "ws"
    divscope.ingest("builtin:demo", ws)
    records = divscope.Workspace(ws).pool.records()[:4]
    capfd.readouterr()
    steps: list[tuple[int, int]] = []  # what a study's cell status follows
    train(records, tmp_path / "run", TrainSettings(max_steps=3, batch_size=2, max_len=48, save_steps=100, seed=0),
          on_step=lambda step, total: steps.append((step, total)))
    err = capfd.readouterr().err
    assert "train run: steps: started, 3 to do" in err.splitlines(), err
    assert counts(err, "train run: steps") == [1, 2, 3, 3], err
    assert steps == [(1, 3), (2, 3), (3, 3)]
