"""Precision and optimizer settings (issue 17): what they resolve to, that they reach TrainingArguments, that mixed
precision autocasts while the weights stay fp32, and that runs finished before these settings existed still are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divscope.errors import DivscopeError
from divscope.train import precision as prec
from divscope.train.settings import TrainSettings

OLD_CONFIG = Path(__file__).parent / "data" / "train-config-7b14063.json"


def test_precision_resolves_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prec.resolve_precision("auto", "cpu") == prec.resolve_precision("fp32", "cpu") == "fp32"
    for mixed in ("bf16-mixed", "fp16-mixed"):  # asked for explicitly on a CPU: an error, never a silent fp32
        with pytest.raises(DivscopeError, match=f"precision {mixed} needs a CUDA GPU and training runs on cpu"):
            prec.resolve_precision(mixed, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", "cuda") == prec.resolve_precision("bf16-mixed", "cuda:1") == "bf16-mixed"
    assert prec.resolve_precision("auto", "cpu") == "fp32"  # a GPU in the machine, but training asked for the CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert prec.resolve_precision("auto", "cuda") == "fp32"
    assert prec.resolve_precision("fp16-mixed", "cuda") == "fp16-mixed"
    with pytest.raises(DivscopeError, match="does not support bf16; use --precision fp16-mixed"):
        prec.resolve_precision("bf16-mixed", "cuda")


def _records(tmp_path: Path) -> list:
    from divscope.io import read_records

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i}."}) + "\n"
                            for i in range(4)))
    return read_records(path)[0]


def test_8bit_adamw_needs_bitsandbytes_and_says_so_before_loading_a_model(monkeypatch, tmp_path: Path) -> None:
    from divscope.train import model as model_mod
    from divscope.train.sft import train

    records = _records(tmp_path)
    find_spec = prec.importlib.util.find_spec
    monkeypatch.setattr(prec.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes"
                        else find_spec(name, *a))  # whether or not this machine has it
    monkeypatch.setattr(model_mod, "load_with_format", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(DivscopeError, match=r"^optimizer adamw_8bit needs bitsandbytes: pip install bitsandbytes$"):
        train(records, tmp_path / "run", TrainSettings(optimizer="adamw_8bit", max_steps=1))
    assert prec.check_optimizer("adamw_torch") == "adamw_torch"


def test_training_loads_fp32_weights_whatever_the_precision(monkeypatch, tmp_path: Path) -> None:
    """On a (pretended) bf16 GPU, auto is bf16-mixed and the model is still loaded in fp32: the Trainer autocasts;
    bf16 weights would be updated in bf16 with no fp32 master copy."""
    import torch

    from divscope.train import model as model_mod
    from divscope.train.sft import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    calls = []

    def loaded(spec, device, dtype, chat):
        calls.append((device, dtype))
        raise KeyboardInterrupt  # stop before anything touches the (absent) GPU

    monkeypatch.setattr(model_mod, "load_with_format", loaded)
    for precision in ("auto", "bf16-mixed", "fp16-mixed", "fp32"):
        with pytest.raises(KeyboardInterrupt):
            train(_records(tmp_path), tmp_path / precision, TrainSettings(precision=precision, max_steps=1))
    assert calls == [("cuda", torch.float32)] * 4


def test_extra_cannot_override_what_a_setting_owns() -> None:
    from divscope.settings import parse

    for key, owner in (("optim", "optimizer"), ("bf16", "precision"), ("fp16", "precision"),
                       ("gradient_checkpointing", "gradient_checkpointing")):
        with pytest.raises(DivscopeError, match=f"extra.{key} is set by the `{owner}` setting"):
            parse(TrainSettings, {"extra": {key: True}})


def _tiny_dataset():
    import datasets

    from divscope.train.chat import encode_chat
    from divscope.train.model import load_causal_lm

    model, tok = load_causal_lm("smollm2", device="cpu", dtype=None)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How are you today?"}]
    return model, tok, datasets.Dataset.from_list([encode_chat(tok, msgs, 32)] * 2)


def test_settings_reach_the_trainer_and_mixed_precision_keeps_fp32_weights(tmp_path: Path) -> None:
    """One LoRA step under bf16 autocast (on the CPU here, as on a GPU): the linear layers compute in bf16, every
    weight (the trained adapter and the frozen base) is still fp32 afterwards, and it did learn."""
    import torch
    from peft import LoraConfig

    from divscope.train.sft import build_trainer

    model, tok, ds = _tiny_dataset()
    assert model.dtype == torch.float32  # the CPU default; training always loads fp32 (sft._fit)
    cfg = TrainSettings(max_steps=1, batch_size=2, max_len=32, lr=1e-3, optimizer="adamw_torch",
                        gradient_checkpointing=True)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = build_trainer(model, tok, ds, cfg, tmp_path / "ckpt", lora, precision="bf16-mixed")
    args = trainer.args
    assert (args.bf16, args.fp16, args.optim.value, args.gradient_checkpointing) == (True, False, "adamw_torch", True)
    seen: list[torch.dtype] = []
    layer = trainer.model.get_base_model().model.layers[0].mlp.down_proj
    hook = layer.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # autocast ran the forward in bf16
    params = dict(trainer.model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}  # master weights (trained and frozen) in fp32
    assert any(not torch.equal(before[n], params[n]) for n in before)  # and the fp32 weights were updated
    assert type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
                ) is torch.optim.AdamW

    fused = build_trainer(model, tok, ds, TrainSettings(max_steps=1, batch_size=2, max_len=32), tmp_path / "c2",
                          precision="fp32")  # the defaults: fused AdamW, no autocast
    assert (fused.args.bf16, fused.args.fp16, fused.args.optim.value) == (False, False, "adamw_torch_fused")
    fused.create_optimizer()
    opt = fused.optimizer.optimizer if hasattr(fused.optimizer, "optimizer") else fused.optimizer
    assert opt.defaults.get("fused") is True


def test_runs_finished_before_these_settings_are_still_finished(tmp_path: Path, monkeypatch) -> None:
    """``train.json`` as the previous version wrote it (its config made by that version's own ``model_dump``, in
    tests/data) lacks chat_template, precision and optimizer: at their defaults the request is the same run and it
    is reused; a request that sets one of them is another run and refused. A new run stores them only when set."""
    from divscope.store.atomic import write_json
    from divscope.train import sft

    old = json.loads(OLD_CONFIG.read_text())["config"]
    settings = dict(max_steps=1, batch_size=2, max_len=64, save_steps=100, seed=0)
    assert TrainSettings(**settings).identity() == old
    assert {"precision": "fp32"}.items() <= TrainSettings(**settings, precision="fp32").identity().items()

    records = _records(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "train.json", {"config": old, "data_fingerprint": sft.data_fingerprint(records),
                                    "global_step": 1, "samples": 4})
    monkeypatch.setattr(sft, "_fit", lambda *a: pytest.fail("trained again"))
    assert sft.train(records, run, TrainSettings(**settings)).summary["global_step"] == 1
    for change in ({"precision": "fp32"}, {"optimizer": "adamw_torch"}, {"chat_template": "chatml"}):
        with pytest.raises(DivscopeError, match="holds a finished run with other data or settings"):
            sft.train(records, run, TrainSettings(**settings, **change))


def test_a_spec_that_does_not_use_them_keeps_its_fingerprint() -> None:
    """The study fingerprint of the default spec, as the previous version (7b14063) computed it."""
    from divscope.experiment.spec import ExperimentSpec

    assert ExperimentSpec().fingerprint() == "420e026b037c086f"
    for change in ({"precision": "bf16-mixed"}, {"optimizer": "adamw_8bit"}, {"chat_template": "llama-2"}):
        assert ExperimentSpec(train=TrainSettings(**change)).fingerprint() != "420e026b037c086f"
