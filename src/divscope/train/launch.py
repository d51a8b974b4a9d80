"""Training in P processes (``--launcher accelerate``): ``accelerate launch`` runs the same training in each.

The launching process writes the job into the run folder and starts ``accelerate launch`` (its public CLI, run
as ``python -m accelerate.commands.launch``) on the entry point :mod:`divscope.train.worker`, which calls the
same ``train()`` in every process: the HF Trainer inside sees the ``torch.distributed`` environment and trains
data-parallel (DDP: NCCL on GPUs, gloo on CPU), or sharded (FSDP through accelerate, DeepSpeed ZeRO-2/3).

    RUN/launch/job.json, records.jsonl   what to train (written by the launching process)
    RUN/launch/accelerate.json           the accelerate config of the launch (a user's default config is not read)
    RUN/launch/log.txt                   the processes' output, appended on every launch
    RUN/launch/summary.json | error.json rank 0's summary (or the one-line error every rank raised)

Only rank 0 writes: the model (atomically, :func:`main_process_path`), Trainer checkpoints (the Trainer's own
rule) and the summary; the launching process then writes ``train.json`` from it, last, as for one process, so
"finished" and resumption mean the same thing whatever the launcher. The global batch is the one the settings
state (``TrainSettings.layout``), checked in every process against what the Trainer really built
(:func:`check_batch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError
from divscope.io.record import Record, Turn
from divscope.store.atomic import atomic_open, atomic_path, write_json
from divscope.train.settings import TrainSettings

WORKER_ENV = "DIVSCOPE_LAUNCHED"  # set in the launched processes: train() runs in place there
JOB_DIR = "launch"


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def main_process_path(final: Path, is_main: bool) -> Iterator[Path]:
    """A folder to save into: on the main process moved atomically to ``final``; on the others a throwaway one
    (saving is collective under FSDP / ZeRO-3, so every process calls the save, and only rank 0 writes)."""
    if is_main:
        with atomic_path(final) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="divscope-rank-") as tmp:
        yield Path(tmp) / final.name


def check_batch(args: Any, cfg: TrainSettings, device: str) -> dict[str, Any]:
    """The batch layout the Trainer will use (``TrainingArguments``) on ``device``, refused unless it gives the
    stated global batch in the stated processes; returned as recorded in ``train.json``."""
    want = cfg.layout(device)
    got = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    if args.n_gpu > 1:
        raise DivscopeError(f"{args.n_gpu} GPUs are visible to one training process (the Trainer would split its "
                            f"batch over them with DataParallel): use --launcher accelerate --num-processes "
                            f"{args.n_gpu}, or show it one GPU (CUDA_VISIBLE_DEVICES)")
    if args.world_size != want["processes"] or got != want["global_batch"]:
        raise DivscopeError(f"training runs in {args.world_size} process(es) with a global batch of {got}; the "
                            f"settings ask for {want['processes']} and {want['global_batch']}")
    return {**want, "launcher": cfg.launcher, "sharding": cfg.sharding}


def check_launch(cfg: TrainSettings, gpus: int) -> None:
    """Refuse, in one line, a launch that cannot run as asked on a machine with ``gpus`` visible GPUs."""
    p = cfg.processes()
    if cfg.sharding in ("zero2", "zero3") and importlib.util.find_spec("deepspeed") is None:
        raise DivscopeError(f"--sharding {cfg.sharding} needs DeepSpeed: pip install deepspeed")
    if cfg.sharding != "none" and not gpus:
        raise DivscopeError(f"--sharding {cfg.sharding} needs GPUs: accelerate shards only across GPU processes "
                            "(on CPU it would silently train plain data-parallel); use --sharding none")
    if gpus and cfg.device != "cpu" and p > gpus:
        raise DivscopeError(f"--num-processes {p} but {gpus} GPU(s) are visible: one process per GPU")


def accelerate_config(cfg: TrainSettings) -> dict[str, Any]:
    """The accelerate config file of the launch: what the CLI flags do not set, spelled out, so that a user's
    default config (``accelerate config``) cannot change how divscope trains."""
    return {"compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "num_processes": cfg.processes(),
            "num_machines": 1, "machine_rank": 0, "mixed_precision": "no", "use_cpu": False, "debug": False,
            "gpu_ids": "all", "same_network": True, "rdzv_backend": "static", "main_training_function": "main",
            "downcast_bf16": "no", "tpu_use_cluster": False, "tpu_use_sudo": False, "tpu_env": []}


def accelerate_command(cfg: TrainSettings, job_dir: Path) -> list[str]:
    """``accelerate launch`` of :mod:`divscope.train.worker` for ``cfg`` (mixed precision is the Trainer's
    setting, not the launcher's)."""
    p = cfg.processes()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(job_dir / "accelerate.json"),
           "--num_processes", str(p), "--num_machines", "1", "--machine_rank", "0", "--main_process_port", "0",
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if cfg.sharding == "fsdp":
        # FSDP2, one unit per decoder layer, full-shard; FULL_STATE_DICT so that model/ is a plain HF folder
        cmd += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_reshard_after_forward", "true", "--fsdp_state_dict_type", "FULL_STATE_DICT",
                "--fsdp_cpu_ram_efficient_loading", "false"]
    elif cfg.sharding in ("zero2", "zero3"):  # on GPUs (check_launch)
        cmd += ["--use_deepspeed", "--zero_stage", cfg.sharding[-1], "--gradient_accumulation_steps",
                str(cfg.layout("cuda")["grad_accum"]), "--offload_optimizer_device", "none", "--offload_param_device",
                "none"]
        if cfg.sharding == "zero3":
            cmd += ["--zero3_init_flag", "false", "--zero3_save_16bit_model", "true"]
    elif p > 1:
        cmd += ["--multi_gpu"]  # accelerate's name for torch.distributed.run of P processes; gloo on CPU
    return [*cmd, "-m", "divscope.train.worker", str(job_dir)]


def write_job(records: list[Record], run: Path, cfg: TrainSettings, source: str) -> Path:
    job_dir = run / JOB_DIR
    for name in ("summary.json", "error.json"):
        (job_dir / name).unlink(missing_ok=True)
    with atomic_open(job_dir / "records.jsonl") as fh:
        for r in records:
            fh.write(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n")
    write_json(job_dir / "accelerate.json", accelerate_config(cfg))
    write_json(job_dir / "job.json", {"run": str(run.resolve()), "source": source,
                                      "config": cfg.model_dump(mode="json")})
    return job_dir


def read_job(job_dir: Path) -> tuple[list[Record], Path, TrainSettings, str]:
    """What :func:`write_job` wrote: the same records (ids, hashes, metadata), run folder, settings, source."""
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    records = []
    with open(job_dir / "records.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            d["conversation"] = tuple(Turn(**t) for t in d["conversation"])
            records.append(Record(**d))
    return records, Path(job["run"]), TrainSettings.model_validate(job["config"]), job["source"]


def launch(records: list[Record], run: Path, cfg: TrainSettings, source: str, threads: int) -> dict[str, Any]:
    """Train in ``cfg.num_processes`` processes; rank 0's summary (the launching process writes train.json).

    ``threads``: the CPU threads this training may use, shared among the processes when they run on CPU."""
    import torch

    gpus = torch.cuda.device_count() if cfg.device != "cpu" else 0
    check_launch(cfg, gpus)
    job_dir = write_job(records, run, cfg, source)
    package_root = str(Path(__file__).resolve().parents[2])  # the processes import this same divscope
    env = {**os.environ, WORKER_ENV: "1", "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    if not gpus:
        env["DIVSCOPE_TRAIN_THREADS"] = str(max(1, threads // cfg.processes()))
    log = job_dir / "log.txt"
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.Popen(accelerate_command(cfg, job_dir), stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            code = proc.wait()
        except BaseException:  # interrupted: stop the processes too, then let the interruption through
            proc.terminate()
            proc.wait()
            raise
    error = job_dir / "error.json"
    if error.is_file():
        raise DivscopeError(json.loads(error.read_text(encoding="utf-8"))["error"])
    summary = job_dir / "summary.json"
    if code != 0 or not summary.is_file():
        lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        raise DivscopeError(f"training in {cfg.processes()} processes failed (exit {code}): "
                            f"{lines[-1][:300] if lines else 'no output'}; see {log}")
    out = json.loads(summary.read_text(encoding="utf-8"))
    for name in ("records.jsonl", "summary.json"):  # the summary becomes train.json; the log stays
        (job_dir / name).unlink(missing_ok=True)
    return out
