"""Training in several processes (``--launcher accelerate``) and the disk policy.

The slow test launches 2 gloo processes on this CPU and compares their loss curve with one process's; the others
check the arithmetic (batch layout, Ray GPU reservation), the launch command and refusals, and what a study keeps
on disk, without training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import divscope
from divscope.errors import DivscopeError
from divscope.settings import parse
from divscope.train.settings import TrainSettings

# 1 vs 2 processes: the relative difference of per-step losses allowed. Measured on this CPU (16 samples, 4 steps,
# global batch 8, max_len 64, LoRA dropout 0): at most 3.3e-7 (step 1 identical; later steps differ by float
# reduction order: gloo's all-reduce of two half-batch gradients vs one accumulated sum). 1e-5 leaves 30x room.
# With the default LoRA dropout (0.05) the curves differ by up to 3.1e-3: each process draws its own masks.
LOSS_RTOL = 1e-5


@pytest.mark.parametrize(("batch", "accum", "procs", "want"), [
    (8, 1, 1, (8, 1)), (8, 1, 2, (4, 1)), (2, 4, 2, (2, 2)), (4, 32, 8, (4, 4)), (4, 32, 64, (2, 1)),
    (3, 4, 2, (3, 2)), (4, 32, 16, (4, 2)), (4, 3, 2, (3, 2))])  # last: 6 per process, micro-batch 4 -> 3
def test_global_batch_is_kept_whatever_the_processes(batch, accum, procs, want) -> None:
    cfg = TrainSettings(batch_size=batch, grad_accum=accum, launcher="accelerate", num_processes=procs)
    lay = cfg.layout("cuda")
    assert (lay["per_device_batch"], lay["grad_accum"]) == want
    assert lay["per_device_batch"] * lay["processes"] * lay["grad_accum"] == lay["global_batch"] == batch * accum
    assert lay["per_device_batch"] <= batch  # the micro-batch (memory) never grows


@pytest.mark.parametrize(("settings", "device", "want"), [
    ({}, "cpu", (1, 8)), ({}, "cuda", (8, 1)), ({}, "cuda:1", (8, 1)),  # the defaults: 1 per pass on the CPU
    ({"micro_batch": 4}, "cpu", (4, 2)), ({"micro_batch": 4}, "cuda", (4, 2)),
    ({"micro_batch": 3}, "cpu", (2, 4)),  # the largest divisor of the batch within the micro-batch
    ({"micro_batch": 16, "batch_size": 4, "grad_accum": 8}, "cuda", (16, 2)),  # given, it may exceed batch_size
    ({"batch_size": 2, "grad_accum": 4, "launcher": "accelerate", "num_processes": 2}, "cpu", (1, 4)),
    ({"batch_size": 2, "grad_accum": 4, "launcher": "accelerate", "num_processes": 2, "micro_batch": 8}, "cpu",
     (4, 1))])
def test_the_micro_batch_is_memory_not_the_global_batch(settings, device, want) -> None:
    """On the CPU training runs one sample per forward pass unless told otherwise (peak memory, docs/training.md);
    the global batch, the optimizer steps and the run's identity stay what the settings say."""
    cfg = TrainSettings(**settings)
    lay = cfg.layout(device)
    assert (lay["per_device_batch"], lay["grad_accum"]) == want
    assert lay["per_device_batch"] * lay["processes"] * lay["grad_accum"] == lay["global_batch"] == \
        cfg.batch_size * cfg.grad_accum
    assert cfg.identity() == TrainSettings(**{**settings, "micro_batch": 5}).identity()  # how to run, not what
    with pytest.raises(DivscopeError, match=r"^--micro-batch: Input should be greater than or equal to 1$"):
        TrainSettings.from_cli({"micro_batch": 0})


def test_a_global_batch_the_processes_cannot_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DivscopeError, match=r"^train: \(top level\): the global batch 128 \(batch_size 4 x grad_accum 32\) does "
                                            r"not split over 6 processes: make it a multiple of 6$"):
        parse(TrainSettings, {"batch_size": 4, "grad_accum": 32, "launcher": "accelerate", "num_processes": 6},
              "train")
    with pytest.raises(DivscopeError, match="need launcher: accelerate"):
        parse(TrainSettings, {"num_processes": 2})
    with pytest.raises(DivscopeError, match="each process takes its own GPU"):
        parse(TrainSettings, {"launcher": "accelerate", "device": "cuda:1"})
    subset = divscope.write_records([divscope.Record.make([divscope.Turn("user", "a"),
                                                          divscope.Turn("assistant", "b")])], tmp_path / "s.jsonl")
    r = subprocess.run([sys.executable, "-m", "divscope.cli", "train", str(subset), "--out", str(tmp_path / "run"),
                        "--launcher", "accelerate", "--num-processes", "3"], capture_output=True, text=True)
    assert r.returncode == 2 and "does not split over 3 processes" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_how_a_run_executes_is_not_what_it_is() -> None:
    """A run trained in 1 process is the run asked for in 8 (same global batch), and a study continues."""
    from divscope.experiment.spec import parse_spec

    one, eight = TrainSettings(), TrainSettings(launcher="accelerate", num_processes=8, sharding="fsdp",
                                                keep_checkpoints=3)
    assert one.identity() == eight.identity() and "launcher" not in one.identity()
    assert parse_spec({"train": eight.changed()}).fingerprint() == parse_spec({}).fingerprint()
    assert parse_spec({"train": {"lr": 1e-3}}).fingerprint() != parse_spec({}).fingerprint()


def test_launch_command_and_refusals(tmp_path: Path) -> None:
    from divscope.train.launch import accelerate_command, check_launch

    job = tmp_path / "launch"
    ddp = accelerate_command(TrainSettings(launcher="accelerate", num_processes=2), job)
    assert ddp[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and "--multi_gpu" in ddp
    assert ddp[-3:] == ["-m", "divscope.train.worker", str(job)] and ddp[ddp.index("--num_processes") + 1] == "2"
    assert ddp[ddp.index("--config_file") + 1] == str(job / "accelerate.json")  # never the user's default config
    one = accelerate_command(TrainSettings(launcher="accelerate"), job)
    assert "--multi_gpu" not in one  # accelerate refuses --multi_gpu with one process
    fsdp = accelerate_command(TrainSettings(launcher="accelerate", num_processes=8, sharding="fsdp"), job)
    assert "--use_fsdp" in fsdp and "FULL_STATE_DICT" in fsdp and "--multi_gpu" not in fsdp
    z3 = accelerate_command(TrainSettings(launcher="accelerate", num_processes=8, sharding="zero3", batch_size=4,
                                          grad_accum=32), job)
    assert z3[z3.index("--zero_stage") + 1] == "3" and z3[z3.index("--gradient_accumulation_steps") + 1] == "4"
    with pytest.raises(DivscopeError, match="needs GPUs: accelerate shards only across GPU processes"):
        check_launch(TrainSettings(launcher="accelerate", num_processes=2, sharding="fsdp"), gpus=0)
    with pytest.raises(DivscopeError, match="--num-processes 4 but 2 GPU"):
        check_launch(TrainSettings(launcher="accelerate", num_processes=4), gpus=2)
    check_launch(TrainSettings(launcher="accelerate", num_processes=4), gpus=0)  # CPU: gloo processes
    check_launch(TrainSettings(launcher="accelerate", num_processes=8, sharding="fsdp"), gpus=8)
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(DivscopeError, match=r"^--sharding zero2 needs DeepSpeed: pip install deepspeed$"):
            check_launch(TrainSettings(launcher="accelerate", num_processes=8, sharding="zero2"), gpus=8)


def test_the_trainer_batch_is_checked() -> None:
    """What the Trainer really built must give the stated global batch: DataParallel over the GPUs one process
    sees would multiply it, silently."""
    from divscope.train.launch import check_batch

    cfg = TrainSettings(batch_size=4, grad_accum=2, launcher="accelerate", num_processes=2)
    ok = SimpleNamespace(train_batch_size=4, gradient_accumulation_steps=1, world_size=2, n_gpu=1)
    assert check_batch(ok, cfg, "cuda") == {"global_batch": 8, "processes": 2, "per_device_batch": 4, "grad_accum": 1,
                                    "launcher": "accelerate", "sharding": "none"}
    with pytest.raises(DivscopeError, match="8 GPUs are visible to one training process"):
        check_batch(SimpleNamespace(train_batch_size=32, gradient_accumulation_steps=2, world_size=1, n_gpu=8),
                    TrainSettings(batch_size=4, grad_accum=2), "cuda")
    with pytest.raises(DivscopeError, match="runs in 1 process"):
        check_batch(SimpleNamespace(train_batch_size=4, gradient_accumulation_steps=1, world_size=1, n_gpu=0), cfg,
                    "cpu")


def test_the_job_carries_the_same_records(tmp_path: Path) -> None:
    from divscope.train.launch import read_job, write_job
    from divscope.train.sft import data_fingerprint

    recs = [divscope.Record.make([divscope.Turn("system", "s"), divscope.Turn("user", f"q{i} é"),
                                  divscope.Turn("assistant", "a")], source="x", source_id=f"id{i}" if i else None,
                                 metadata={"k": [i]}) for i in range(3)]
    cfg = TrainSettings(launcher="accelerate", num_processes=2, lr=1e-3)
    job = write_job(recs, tmp_path / "run", cfg, "sub.jsonl")
    back, run, cfg2, source = read_job(job)
    assert back == recs and data_fingerprint(back) == data_fingerprint(recs)
    assert run == (tmp_path / "run").resolve() and cfg2 == cfg and source == "sub.jsonl"


@pytest.mark.parametrize(("procs", "launcher", "nodes", "cell_gpus", "want"), [
    (1, "none", [], None, {"num_cpus": 3}),
    (2, "accelerate", [], None, {"num_cpus": 3}),
    (4, "accelerate", [], None, {"num_cpus": 4}),  # a CPU cell: one CPU per gloo process at least
    (1, "none", [8, 8], None, {"num_cpus": 3, "num_gpus": 1}),
    (8, "accelerate", [8, 4], None, {"num_cpus": 3, "num_gpus": 8}),
    (2, "accelerate", [2, 2], 2, {"num_cpus": 3, "num_gpus": 2}),
    (8, "accelerate", [4, 4], None, "largest node of the Ray cluster has 4"),  # never on two nodes
    (2, "accelerate", [8], 4, "--cell-gpus 4, but a cell trains in 2 process"),
    (1, "none", [8], 2, "--cell-gpus 2, but a cell trains in 1 process"),
    (1, "none", [], 1, "the Ray cluster has no GPU")])
def test_ray_reserves_the_gpus_a_cell_trains_on(procs, launcher, nodes, cell_gpus, want) -> None:
    from divscope.experiment.distributed import cell_resources

    train = TrainSettings(launcher=launcher, num_processes=procs)
    if isinstance(want, str):
        with pytest.raises(DivscopeError, match=want):
            cell_resources(train, 3, nodes, cell_gpus)
    else:
        assert cell_resources(train, 3, nodes, cell_gpus) == want


def test_cell_gpus_option_needs_ray() -> None:
    from divscope.backend import as_backend

    assert as_backend("ray", gpus_per_cell=4).gpus_per_cell == 4
    with pytest.raises(DivscopeError, match="need --engine ray"):
        as_backend("local", gpus_per_cell=4)


def _finished_run(run: Path) -> None:
    """A run folder as training leaves it (file contents do not matter to the disk policy)."""
    for rel, size in (("model/adapter_model.safetensors", 5000), ("model/tokenizer.json", 300),
                      ("checkpoints/checkpoint-2/optimizer.pt", 10000), ("checkpoints/checkpoint-2/adapter.bin", 5000),
                      ("launch/log.txt", 40), ("launch/records.jsonl", 700)):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"x" * size)
    (run / "train.json").write_text(json.dumps({"config": {"method": "lora", "model": "smollm2"}}))


def test_a_cell_keeps_its_model_and_drops_its_checkpoints_once_evaluated(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import divscope.evaluate.runs
    import divscope.train.sft
    from divscope.experiment.cells import Cell, run_cell
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import write_results
    from divscope.train.run import Run

    spec = parse_spec({"evaluate": [{"eval_set": "alpaca_eval", "method": "nll", "limit": 2}]})
    subset = divscope.write_records([divscope.Record.make([divscope.Turn("user", "q"),
                                                          divscope.Turn("assistant", "a")])], tmp_path / "s.jsonl")
    seen = []

    def fake_train(records, run_dir, cfg, source="", on_step=None):  # the signature of train()
        _finished_run(Path(run_dir))
        return Run.open(run_dir)

    def fake_eval(run_dir, *args, **kwargs):
        seen.append((Path(run_dir) / "checkpoints").is_dir())  # still there while evaluating
        (Path(run_dir) / "eval").mkdir(exist_ok=True)
        (Path(run_dir) / "eval" / "alpaca_eval.nll.json").write_text("{}")
        return {"score": -1.0}

    monkeypatch.setattr(divscope.train.sft, "train", fake_train)
    monkeypatch.setattr(divscope.evaluate.runs, "evaluate_run", fake_eval)
    run = tmp_path / "runs" / "s" / "n1"
    cell = Cell("s/n1", "random", 1, None, 0, subset, run)
    run_cell(cell, spec)
    assert seen == [True] and not (run / "checkpoints").exists() and not (run / "launch" / "records.jsonl").exists()
    assert (run / "model" / "adapter_model.safetensors").stat().st_size == 5000 and (run / "launch" / "log.txt").is_file()
    kept = 5000 + 300 + 40 + 2 + (run / "train.json").stat().st_size
    assert cell.results["disk_bytes"] == kept == Run.open(run).disk_bytes()
    shared = Cell("v/n1", "random", 1, None, 0, subset, run, results={"shared_run": str(run)})
    run_cell(shared, spec)  # counted where it was trained
    assert shared.results["disk_bytes"] == 0
    write_results(tmp_path, [cell, shared], spec)
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["disk_bytes"] for r in rows] == [kept, 0]
    from divscope.analysis.pilot import timings

    assert timings(tmp_path, rows[:1], "alpaca_eval.nll")["run_mb"] == kept / 1e6


def test_plan_prints_gpu_hours_and_disk_of_the_paper_grid() -> None:
    """``divscope plan examples/paper.yaml``: GPU-hours and peak disk per cell and in total (GPU costs assumed)."""
    from divscope.analysis.plan import plan
    from divscope.cli import cli

    paper = Path(__file__).resolve().parents[1] / "examples" / "paper.yaml"
    r = CliRunner().invoke(cli, ["plan", str(paper)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    c = plan(paper)["costs"]
    assert c["device"] == "gpu" and "ASSUMED" in c["source"] and "cost on gpu" in r.output
    for head in ("GPU-h", "kept disk GB", "peak disk GB", "per cell"):
        assert head in r.output
    assert f"{c['gpu_hours']:.1f}" in r.output
    t = read_train(paper)
    per = {d["size"]: d for d in c["per_cell"]}
    params = 7e9
    steps = -(-10_000 * t.epochs // (t.batch_size * t.grad_accum))
    assert per[10_000]["steps"] == steps == 235
    # full fine-tune: a checkpoint holds fp32 weights + AdamW's two fp32 moments; the Trainer writes the new one
    # before deleting the oldest, so keep_checkpoints + 1 are on disk at the peak
    assert per[10_000]["checkpoint_mb"] == pytest.approx(params * 12 / 1e6)
    assert per[10_000]["checkpoints_held"] == t.keep_checkpoints + 1 == 2
    assert per[10_000]["peak_mb"] - per[10_000]["kept_mb"] == pytest.approx(2 * params * 12 / 1e6)
    assert per[10_000]["kept_mb"] == pytest.approx(params * 4 / 1e6 + 10_000 * 2e-3)
    kept = sum(d["cells"] * d["kept_mb"] for d in c["per_cell"]) / 1e3
    assert c["disk_gb"] == pytest.approx(kept) and c["peak_disk_gb"] == pytest.approx(kept + 2 * params * 12 / 1e9)
    assert c["gpu_hours"] == pytest.approx(c["gpus_per_cell"] * (c["train_hours"] + c["eval_hours"])
                                           + c["featurize_hours"])


def read_train(path: Path) -> TrainSettings:
    from divscope.analysis.plan import read_spec

    return read_spec(path)["train"]


# ------------------------------------------------------------------------------------------- 2 processes, gloo

CFG = {"max_steps": 4, "batch_size": 2, "grad_accum": 4, "micro_batch": 2, "max_len": 64, "lr": 1e-3, "save_steps": 2,
       "seed": 3, "lora_dropout": 0.0}


def _launch_subprocess(subset: Path, run: Path, cfg: dict) -> subprocess.Popen:
    code = ("import json,sys; from divscope.io import read_records; from divscope.train.sft import train; "
            "from divscope.train.settings import TrainSettings; recs,_=read_records(sys.argv[1]); "
            "train(recs, sys.argv[2], TrainSettings(**json.loads(sys.argv[3])))")
    return subprocess.Popen([sys.executable, "-c", code, str(subset), str(run), json.dumps(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 DDP processes (gloo, this CPU), killed after their first checkpoint and resumed, give the one-process
    loss curve (``LOSS_RTOL``) at the same global batch; rank 0 alone writes the model."""
    from divscope.train.run import Run
    from divscope.train.sft import train

    monkeypatch.setenv("DIVSCOPE_TRAIN_THREADS", "1")  # one core per process; the 2-core machine is shared
    ws = tmp_path / "ws"
    divscope.ingest("builtin:demo", ws)
    samples = divscope.Workspace(ws).pool.records()[:16]  # 2 epochs of 2 steps of 8
    subset = divscope.write_records(samples, tmp_path / "subset.jsonl")
    two_cfg = {**CFG, "launcher": "accelerate", "num_processes": 2}

    proc = _launch_subprocess(subset, tmp_path / "two", two_cfg)
    ckpt = tmp_path / "two" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher, accelerate and both training processes
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "two" / "train.json").exists()
    time.sleep(1)  # let the killed processes' port and files go
    two = train(divscope.read_records(subset)[0], tmp_path / "two", TrainSettings(**two_cfg))
    one = train(samples, tmp_path / "one", TrainSettings(**CFG))

    assert two.summary["resumed_from"] is not None and two.summary["global_step"] == one.summary["global_step"] == 4
    b1, b2 = one.summary["batch"], two.summary["batch"]
    assert b1["global_batch"] == b2["global_batch"] == 8
    assert (b1["processes"], b1["per_device_batch"], b1["grad_accum"]) == (1, 2, 4)
    assert (b2["processes"], b2["per_device_batch"], b2["grad_accum"]) == (2, 2, 2)
    l1, l2 = one.summary["losses"], two.summary["losses"]
    assert len(l1) == len(l2) == 4 and l1[0] > l1[-1]
    worst = max(abs(a - b) / abs(a) for a, b in zip(l1, l2, strict=True))
    print(f"losses 1 process {l1}\nlosses 2 processes {l2}\nworst relative difference {worst:.2e}")
    assert worst < LOSS_RTOL, (l1, l2)
    # rank 0 alone wrote the model, atomically: one folder, no leftovers; the launch log kept, its job data gone
    run = tmp_path / "two"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "launch", "model", "train.json"]
    assert (run / "model" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (run / "launch").iterdir()) == ["accelerate.json", "job.json", "log.txt"]
    assert Run.open(run).summary["config"] == Run.open(tmp_path / "one").summary["config"]  # same run identity
    # the finished run is reused, in one process or two
    again = train(samples, run, TrainSettings(**CFG))
    assert again.summary == two.summary
