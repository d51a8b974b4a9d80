"""Training the shipped SmolLM2-135M on CPU: masked labels, loss goes down, a killed run resumes identically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import divscope
from divscope.train.chat import IGNORE, encode_chat, labels_from

CFG = {"max_steps": 6, "batch_size": 8, "max_len": 96, "lr": 1e-3, "save_steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def tokenizer():
    from divscope.train.model import load_tokenizer_for

    return load_tokenizer_for("smollm2")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    ws = tmp_path_factory.mktemp("ws")
    divscope.ingest("builtin:demo", ws)
    return divscope.Workspace(ws).pool.records()[:64]


def test_labels_mask_everything_but_assistant_turns(tokenizer) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}]
    enc = encode_chat(tokenizer, msgs, 512)
    labels = labels_from(enc)
    learnt = tokenizer.decode([t for t in labels if t != IGNORE])
    assert learnt == "Hello!<|im_end|>\n4<|im_end|>\n"
    prompt = tokenizer.decode([t for t, lab in zip(enc["input_ids"], labels, strict=True) if lab == IGNORE])
    assert "Hi there" in prompt and "2+2?" in prompt and "Be brief." in prompt and "Hello" not in prompt
    assert encode_chat(tokenizer, msgs, 8) is None  # truncation leaves no answer token: nothing to learn


@pytest.mark.slow
def test_trl_collator_labels_follow_the_masks(tokenizer, samples) -> None:
    """Inspect the labels TRL's own data pipeline gives the model, not just ours."""
    from trl import SFTConfig, SFTTrainer

    from divscope.train.model import load_causal_lm
    from divscope.train.sft import build_dataset

    model, tok = load_causal_lm("smollm2")
    ds, _ = build_dataset(samples[:8], tok, 96)
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir="/tmp/unused-divscope", report_to=[],
                                                     max_length=96, use_cpu=True),
                         train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    for row in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][row].tolist()
        labels = batch["labels"][row].tolist()
        enc = next(e for e in ds if e["input_ids"] == ids[: len(e["input_ids"])])
        expect = labels_from(enc) + [IGNORE] * (len(ids) - len(enc["input_ids"]))
        assert labels == expect


def _train_subprocess(subset: Path, run: Path) -> subprocess.Popen:
    code = ("import json,sys; from divscope.io import read_records; from divscope.train.sft import train; "
            "from divscope.train.settings import TrainSettings; recs,_=read_records(sys.argv[1]); train(recs, sys.argv[2], TrainSettings(**json.loads("
            "sys.argv[3])))")
    return subprocess.Popen([sys.executable, "-c", code, str(subset), str(run), json.dumps(CFG)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_train_loss_decreases_and_kill_resume_is_identical(samples, tmp_path: Path) -> None:
    from divscope.evaluate.nll import mean_nll
    from divscope.train.model import load_causal_lm
    from divscope.train.run import Run
    from divscope.train.settings import TrainSettings
    from divscope.train.sft import train

    subset = divscope.write_records(samples, tmp_path / "subset.jsonl")
    convs = [r.messages() for r in samples]
    base, tok = load_causal_lm("smollm2")
    before = mean_nll(base, tok, convs, max_len=96).mean_nll

    full = train(samples, tmp_path / "full", TrainSettings(**CFG))
    assert full.summary["global_step"] == 6 and full.summary["resumed_from"] is None
    after = mean_nll(*Run.open(tmp_path / "full").load(), convs, max_len=96).mean_nll
    assert after < before - 0.05, (before, after)

    # Kill a second, identical run once its first checkpoint is complete, then rerun it.
    proc = _train_subprocess(subset, tmp_path / "killed")
    ckpt = tmp_path / "killed" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # a step can be quick on a fast machine: catch the checkpoint early
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "train.json").exists()
    resumed = train(divscope.read_records(subset)[0], tmp_path / "killed", TrainSettings(**CFG))
    assert resumed.summary["resumed_from"] is not None
    assert resumed.summary["global_step"] == 6
    a = (tmp_path / "full" / "model" / "adapter_model.safetensors").read_bytes()
    b = (tmp_path / "killed" / "model" / "adapter_model.safetensors").read_bytes()
    assert a == b
    # A finished run is not redone.
    again = train(samples, tmp_path / "full", TrainSettings(**CFG))
    assert again.summary == full.summary


def test_train_threads_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from divscope.errors import DivscopeError
    from divscope.train.sft import train_threads

    monkeypatch.delenv("DIVSCOPE_TRAIN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert train_threads() == max(1, os.cpu_count() or 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert train_threads() == 3
    monkeypatch.setenv("DIVSCOPE_TRAIN_THREADS", "5")  # the specific variable wins over OpenMP's
    assert train_threads() == 5
    monkeypatch.setenv("DIVSCOPE_TRAIN_THREADS", "two")
    with pytest.raises(DivscopeError, match="DIVSCOPE_TRAIN_THREADS='two'"):
        train_threads()


def test_no_optimizer_step_runs_at_lr_zero(tokenizer, tmp_path: Path) -> None:
    """The schedule the trainer really builds: no step of a 1-4 step run has lr 0 (transformers' own warmup gave
    the first step lr 0 whenever warmup_ratio * steps rounded up to a step), and warmup still ramps on long runs."""
    import warnings

    import datasets

    from divscope.train.model import load_causal_lm
    from divscope.train.settings import TrainSettings
    from divscope.train.sft import build_trainer

    model, tok = load_causal_lm("smollm2")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ds = datasets.Dataset.from_list([encode_chat(tok, msgs, 48)] * 4)
    for total, ratio in ((1, 0.03), (2, 0.03), (3, 0.5), (4, 0.03), (4, 0.5), (4, 1.0), (100, 0.03)):
        cfg = TrainSettings(max_steps=total, warmup_ratio=ratio, batch_size=4, max_len=48, lr=1e-3)
        trainer = build_trainer(model, tok, ds, cfg, tmp_path / "ckpt")
        trainer.create_optimizer_and_scheduler(num_training_steps=total)
        lrs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scheduler.step() without optimizer.step(): only the lr is read
            for _ in range(total):
                lrs.append(trainer.optimizer.param_groups[0]["lr"])
                trainer.lr_scheduler.step()
        assert all(lr > 0 for lr in lrs), (total, ratio, lrs)
        if total <= 4 and ratio < 0.25:  # floor(ratio * total) = 0: no warmup, the first step at the full lr
            assert lrs[0] == pytest.approx(1e-3)
        if total == 100:  # 3 warmup steps ramp up to the peak, then the cosine decays
            assert lrs[0] == pytest.approx(1e-3 / 4) and lrs[3] == pytest.approx(1e-3) and lrs[-1] < lrs[50]


# Per-step losses, one forward pass of 8 samples vs 8 passes of 1 accumulated (the default on the CPU), LoRA
# dropout 0: the relative difference allowed. Measured here (16 samples, 2 steps, max_len 64): 7.0e-7. Splitting a batch changes only the
# float summation order (gradients summed over 8 passes, no padding in a pass of one sample); 1e-5 leaves room and
# is still far below what any change of what is trained gives (another seed or learning rate moves the losses by
# 1e-2 and more). With the default dropout (0.05) the masks are drawn per pass, so the curves differ as two
# processes' do (tests/test_launch.py).
MICRO_RTOL = 1e-5


@pytest.mark.slow
def test_micro_batches_train_like_the_whole_batch(samples, tmp_path: Path) -> None:
    from divscope.train.settings import TrainSettings
    from divscope.train.sft import train

    cfg = {"max_steps": 2, "batch_size": 8, "max_len": 64, "lr": 1e-3, "save_steps": 2, "seed": 3,
           "lora_dropout": 0.0, "device": "cpu"}
    whole = train(samples[:16], tmp_path / "whole", TrainSettings(**cfg, micro_batch=8))
    split = train(samples[:16], tmp_path / "split", TrainSettings(**cfg))  # the CPU default
    per_pass = {name: json.loads((tmp_path / name / "checkpoints" / "checkpoint-2" / "trainer_state.json")
                                 .read_text())["train_batch_size"] for name in ("whole", "split")}
    assert per_pass == {"whole": 8, "split": 1}  # what the Trainer really ran
    assert whole.summary["batch"]["global_batch"] == split.summary["batch"]["global_batch"] == 8
    assert (split.summary["batch"]["per_device_batch"], split.summary["batch"]["grad_accum"]) == (1, 8)
    a, b = whole.summary["losses"], split.summary["losses"]
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))
    print(f"losses micro-batch 8 {a}\nlosses micro-batch 1 {b}\nworst relative difference {worst:.2e}")
    assert len(a) == len(b) == 2 and worst < MICRO_RTOL, (a, b)
