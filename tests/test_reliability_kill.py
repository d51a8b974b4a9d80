"""Fault injection: SIGKILL at seeded random delays and at chosen file events during ingest, featurize, grid,
respond, train and run (each a real ``divscope`` subprocess), then a rerun.

Each kill point asserts: (1) right after the kill no file is visible under its final name unless it is the
finished file (``killpoints.partial_files``); (2) the rerun ends byte-identical to an uninterrupted run
(``killpoints.diff``; JSON timing/reuse counters excluded). Caches: a half-written entry forced under its
final name (as a filesystem without atomic rename could leave it) is detected and rebuilt. Test ids name the
kill points; docs/reliability.md counts them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import divscope
from helpers import real_pairs
from killpoints import (
    KillPoint,
    appears,
    cli_argv,
    delays,
    diff,
    kill_at,
    lines_in,
    partial_files,
    run_to_end,
    snapshot,
)
from openai_server import OpenAIServer

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("divscope_cache")]

N_DELAYS = 3  # seeded random kill delays per stage, besides the file-event kill points


def _point(name: str, duration: float, stage: str, triggers: dict) -> KillPoint:
    if name.startswith("delay"):
        return delays(stage, N_DELAYS, duration)[int(name[5:])]
    t = triggers[name]
    return t if isinstance(t, KillPoint) else KillPoint(name, when=t)


ATTEMPTS = 4  # tries per kill point before the case fails for want of a kill that landed


def _kill_landed(argv: list[str], root: Path, point: KillPoint, ref: dict[str, bytes],
                 skip: tuple[str, ...] = ()) -> int:
    """Kill the stage at ``point`` until the kill *lands*: the process was still running when killed, and it had
    not yet written all its outputs (what is visible differs from the finished run), so the rerun has work to
    redo. A kill that missed (the stage, run faster than the reference, finished first; or a file trigger fired
    as the stage was ending) is retried on a clean folder, a seeded delay halved each time. Returns the number
    of tries; fails the case if none landed, so no case passes as a mere "run twice and compare"."""
    missed = []
    for attempt in range(1, ATTEMPTS + 1):
        alive = kill_at(argv, point)
        if alive and snapshot(root, skip) != ref:
            print(f"KILL {point.name} landed on try {attempt} (delay {point.delay})")
            return attempt
        missed.append("finished before the kill" if not alive else "killed after its last output")
        shutil.rmtree(root, ignore_errors=True)
        if point.delay is not None:
            point = KillPoint(point.name, delay=point.delay / 2)
    pytest.fail(f"kill at {point.name} never landed in {ATTEMPTS} tries: {missed}")


def _kill_rerun_compare(argv: list[str], root: Path, point: KillPoint, ref: dict[str, bytes],
                        skip: tuple[str, ...] = (), growing: tuple[str, ...] = ()) -> int:
    """The core property, for one kill point that landed; returns the tries it took to land."""
    tries = _kill_landed(argv, root, point, ref, skip)
    assert partial_files(root, ref, skip, growing) == [], f"after a kill at {point.name}"
    run_to_end(argv)
    assert diff(snapshot(root, skip), ref) == [], f"rerun after a kill at {point.name}"
    return tries


# --------------------------------------------------------------------------------------------------- ingest

INGEST_POINTS = [f"delay{i}" for i in range(N_DELAYS)] + ["rejects-tmp", "pool-tmp", "pool-final"]


@pytest.fixture(scope="module")
def ingest_case(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("kill-ingest")
    src = base / "in.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in real_pairs(1500)]
    bad = ['{"id": "cut", "messages": [{"role": "user", "content": "trunc', '[1, 2, 3]',
           '{"instruction": 5, "output": null}', lines[3]]  # truncated, wrong shape, wrong types, duplicate
    for i, b in enumerate(bad):
        lines.insert(100 + 300 * i, b)
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = base / "ws"
    argv = cli_argv("ingest", str(src), "--out", str(out))
    duration = run_to_end(argv)
    ref = snapshot(out)
    lines = {rel for rel in ref if rel.startswith("cache/lines/openai/")}  # the record lines ingest encodes
    assert set(ref) - lines == {"pool.parquet", "ingest.json", "rejects.jsonl"} and len(lines) == 5
    assert json.loads((out / "ingest.json").read_text())["rejected"] == len(bad)
    return argv, out, duration, ref


@pytest.mark.parametrize("name", INGEST_POINTS)
def test_ingest_killed_then_rerun_is_identical(ingest_case, name: str) -> None:
    argv, out, duration, ref = ingest_case
    shutil.rmtree(out, ignore_errors=True)
    triggers = {"rejects-tmp": appears(out, ".rejects.jsonl.*.tmp/rejects.jsonl"),
                "pool-tmp": appears(out, ".pool.parquet.*.tmp/pool.parquet"),
                "pool-final": appears(out, "pool.parquet")}
    _kill_rerun_compare(argv, out, _point(name, duration, "ingest", triggers), ref)


# ------------------------------------------------------------------------------------------------ featurize

FEATURIZE_POINTS = [f"delay{i}" for i in range(N_DELAYS)] + ["tokens-tmp", "tokens-final", "entry-tmp",
                                                               "entry-final"]


@pytest.fixture(scope="module")
def feat_case(tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("kill-featurize") / "ws"
    divscope.ingest(real_pairs(600), ws)
    argv = cli_argv("featurize", str(ws), "--level", "micro", "--side", "instruction")
    run_to_end(argv)  # warms the tokenizer conversion cache, so the timed run below is the stage itself
    shutil.rmtree(ws / "features")
    duration = run_to_end(argv)
    ref = snapshot(ws / "features")
    assert any(k.endswith("matrix.npz") for k in ref) and any(k.endswith("counts.npz") for k in ref)
    return argv, ws, duration, ref


def _feat_triggers(feats: Path) -> dict:
    return {"tokens-tmp": appears(feats, "_tokens/instruction/.*.tmp/*/counts.npz"),
            "tokens-final": appears(feats, "_tokens/instruction/*/meta.json"),
            "entry-tmp": KillPoint("entry-tmp", failpoint="featurize:entry-tmp"),
            # the entry renamed into place, latest.json not yet written: microseconds apart, so the process kills
            # itself there (an outside watcher landed this kill on some machines only)
            "entry-final": KillPoint("entry-final", failpoint="featurize:entry-final")}


@pytest.mark.parametrize("name", FEATURIZE_POINTS)
def test_featurize_killed_then_rerun_is_identical(feat_case, name: str) -> None:
    argv, ws, duration, ref = feat_case
    shutil.rmtree(ws / "features", ignore_errors=True)
    feats = ws / "features"
    _kill_rerun_compare(argv, feats, _point(name, duration, "featurize", _feat_triggers(feats)), ref)


@pytest.mark.parametrize("cache", ["tokens", "entry"])
def test_half_written_cache_under_final_name_is_rebuilt(feat_case, cache: str) -> None:
    """Kill mid-write, then move the half-written temporary to the final name (what a non-atomic rename or
    a copy of a live workspace could leave): the rerun must notice and rebuild, not load it."""
    argv, ws, _, ref = feat_case
    feats = ws / "features"
    shutil.rmtree(feats, ignore_errors=True)
    side_dir = feats / ("_tokens/instruction" if cache == "tokens" else "instruction-micro")
    name = "counts.npz" if cache == "tokens" else "matrix.npz"
    kill_at(argv, KillPoint(cache, when=appears(side_dir, f".*.tmp/*/{name}")))
    caught = list(side_dir.glob(f".*.tmp/*/{name}"))
    if caught:  # the kill landed mid-write: move the temporary under the final name
        entry = caught[0].parent
        entry = shutil.move(entry, side_dir / entry.name)
    else:  # the write was too quick to catch: damage the finished entry the same way
        entry = next(p for p in side_dir.glob(f"*/{name}") if not p.parent.name.startswith(".")).parent
        if cache == "tokens":  # the run may have finished the matrix too, which would make the rerun skip
            shutil.rmtree(feats / "instruction-micro", ignore_errors=True)  # the token cache entirely
    entry = Path(entry)
    (entry / "meta.json").unlink(missing_ok=True)
    (entry / "entry.json").unlink(missing_ok=True)
    half = entry / name
    half.write_bytes(half.read_bytes()[: max(1, half.stat().st_size // 2)])
    log: list[str] = []
    run_to_end(argv, log=log)
    assert diff(snapshot(feats), ref) == []
    if cache == "entry":
        assert "rebuilt" in "".join(log)  # detected as damaged, not mistaken for a missing entry


# ----------------------------------------------------------------------------------------------------- grid

GRID_POINTS = [f"delay{i}" for i in range(N_DELAYS)] + ["manifest-1", "manifests-4", "subset-tmp"]


@pytest.fixture(scope="module")
def grid_case(feat_case, tmp_path_factory: pytest.TempPathFactory):
    _, ws, _, _ = feat_case
    base = tmp_path_factory.mktemp("kill-grid")
    gws = base / "ws"
    shutil.copytree(ws, gws)
    out = base / "grid"
    argv = cli_argv("grid", str(gws), "--sizes", "40,80", "--levels", "3", "--strategies",
                    "instruction-micro,random", "--seeds", "0,1", "--out", str(out))
    duration = run_to_end(argv)
    ref = snapshot(out)
    assert sum(k.endswith(".manifest.json") for k in ref) == 16
    return argv, out, duration, ref


@pytest.mark.parametrize("name", GRID_POINTS)
def test_grid_killed_then_rerun_is_identical(grid_case, name: str) -> None:
    argv, out, duration, ref = grid_case
    shutil.rmtree(out, ignore_errors=True)
    triggers = {"manifest-1": appears(out, "*/*.manifest.json"),
                "manifests-4": appears(out, "*/*.manifest.json", 4),
                "subset-tmp": appears(out, "*/.*.jsonl.*.tmp/*.jsonl")}
    _kill_rerun_compare(argv, out, _point(name, duration, "grid", triggers), ref,
                        growing=("dataset_info.json",))


# -------------------------------------------------------------------------------------------------- respond

RESPOND_POINTS = [f"delay{i}" for i in range(N_DELAYS)] + ["cache-5", "cache-30", "failures-final",
                                                             "pool-tmp"]


def _regen(messages: list[dict]) -> str:
    return "REGEN: " + messages[-1]["content"][::-1]


@pytest.fixture(scope="module")
def respond_case(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("kill-respond")
    src = base / "ws"
    divscope.ingest(real_pairs(60), src)
    with OpenAIServer(responder=_regen, latency=0.05) as srv:
        out = base / "ws2"
        argv = cli_argv("respond", str(src), "--endpoint", srv.base_url, "--model", "m", "--out", str(out),
                        "--concurrency", "2")
        duration = run_to_end(argv)
        ref = snapshot(out, skip=("cache/",))
        assert set(ref) == {"pool.parquet", "ingest.json", "rejects.jsonl", "respond_failures.jsonl"}
        yield argv, out, duration, ref


@pytest.mark.parametrize("name", RESPOND_POINTS)
def test_respond_killed_then_rerun_is_identical(respond_case, name: str) -> None:
    argv, out, duration, ref = respond_case
    shutil.rmtree(out, ignore_errors=True)
    cache = out / "cache" / "respond.jsonl"
    triggers = {"cache-5": lines_in(cache, 5), "cache-30": lines_in(cache, 30),
                "failures-final": appears(out, "respond_failures.jsonl"),
                "pool-tmp": appears(out, ".pool.parquet.*.tmp/pool.parquet")}
    _kill_rerun_compare(argv, out, _point(name, duration, "respond", triggers), ref, skip=("cache/",))
    # The endpoint cache is an append log: every line but a torn last one parses.
    lines = cache.read_bytes().split(b"\n")
    for line in lines[:-2]:
        json.loads(line)


# ---------------------------------------------------------------------------------------------------- train

TRAIN_POINTS = ["checkpoint-1-dir", "model-tmp"]  # mid checkpoint save, mid final save (kept few: slow)
TRAIN_SKIP = ("checkpoints/",)  # resumable trainer state (a cache): its own test checks it is never trusted half


@pytest.fixture(scope="module")
def train_case(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("kill-train")
    divscope.ingest(real_pairs(6), base / "ws")
    subset = divscope.write_records(divscope.Workspace(base / "ws").pool.records(), base / "subset.jsonl")
    run = base / "run"
    argv = cli_argv("train", str(subset), "--out", str(run), "--max-steps", "2", "--batch-size", "2",
                    "--max-len", "64", "--save-steps", "1", "--seed", "0")
    duration = run_to_end(argv)
    ref = snapshot(run, TRAIN_SKIP)
    assert "model/adapter_model.safetensors" in ref
    return argv, run, duration, ref


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAIN_POINTS)
def test_train_killed_then_rerun_is_identical(train_case, name: str) -> None:
    argv, run, duration, ref = train_case
    shutil.rmtree(run, ignore_errors=True)
    triggers = {"checkpoint-1-dir": appears(run, "checkpoints/checkpoint-1"),
                "model-tmp": appears(run, ".model.*.tmp/*")}
    _kill_rerun_compare(argv, run, KillPoint(name, when=triggers[name]), ref, skip=TRAIN_SKIP)


# ------------------------------------------------------------------------------------------------------ run

RUN_SPEC = """
name: killtiny
pool:
  source: builtin:sharegpt-pairs?n=60&seed=4
selection:
  strategies: [random]
  sizes: [4]
  baseline_seeds: [0]
train:
  max_steps: 2
  batch_size: 2
  max_len: 64
  save_steps: 1
evaluate:
  - eval_set: alpaca_eval
    method: nll
    limit: 2
    max_len: 64
"""
RUN_POINTS = ["pool-final", "checkpoint-1-dir"]  # chained in one study: after ingest, mid checkpoint save
PLANTED_KEY = "sk-divscope-planted-3f9c2a7e51"


@pytest.mark.slow
def test_run_killed_then_rerun_is_identical_and_leaks_no_key(tmp_path: Path, monkeypatch) -> None:
    """`divscope run` of a one-cell study: killed after ingest and again mid checkpoint, then finished, ends
    byte-identical to an uninterrupted run. API keys planted in the environment appear in no output and no log."""
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    monkeypatch.setenv("DIVSCOPE_API_KEY", PLANTED_KEY)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(RUN_SPEC)
    out = tmp_path / "study"
    argv = cli_argv("run", str(spec), "--out", str(out))
    logs: list[str] = []
    run_to_end(argv, timeout=1800, log=logs)
    skip = ("runs/random/n4-s0/checkpoints/",)
    ref = snapshot(out, skip)
    assert "results.jsonl" in ref and "report.html" in ref
    leaked = [p for p in out.rglob("*") if p.is_file() and PLANTED_KEY.encode() in p.read_bytes()]
    shutil.rmtree(out)

    triggers = {"pool-final": appears(out, "ws/pool.parquet"),
                "checkpoint-1-dir": appears(out, "runs/*/*/checkpoints/checkpoint-1")}
    for name in RUN_POINTS:
        assert kill_at(argv, KillPoint(name, when=triggers[name]), timeout=1800), f"{name}: finished first"
        assert partial_files(out, ref, skip, growing=("dataset_info.json",)) == [], f"after a kill at {name}"
    run_to_end(argv, timeout=1800, log=logs)
    assert diff(snapshot(out, skip), ref) == []
    leaked += [p for p in out.rglob("*") if p.is_file() and PLANTED_KEY.encode() in p.read_bytes()]
    assert leaked == [] and not any(PLANTED_KEY in text for text in logs)
