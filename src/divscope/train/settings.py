"""The train stage's settings: ``divscope train`` options and the spec's ``train:`` section (one source).

``train.json`` stores them (:meth:`TrainSettings.run_config`), and a run is finished for a request only when they
match. Fields added after runs were already trained (:data:`ADDED_LATER`) are left out of the stored config
while at their default, so a run trained before they existed, whose config lacks them, is still finished for
the same request. What they resolved to on the machine that trained (``auto`` precision, the chat format, ...)
is recorded apart, under ``resolved`` in ``train.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from divscope.settings import Settings, setting

CHAT_TEMPLATES = ("auto", "model", "chatml", "llama-2")
PRECISIONS = ("auto", "fp32", "bf16-mixed", "fp16-mixed")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit")
# TrainingArguments that a setting owns: ``extra`` must not set them behind the setting's back.
_OWNED = {"bf16": "precision", "fp16": "precision", "optim": "optimizer",
          "gradient_checkpointing": "gradient_checkpointing"}


class TrainSettings(Settings):
    model: str = setting("smollm2", "smollm2 (SmolLM2-135M-Instruct, shipped) or any HF model id / local folder.")
    method: Literal["lora", "full"] = setting("lora", "LoRA adapter or full fine-tune.",
                                              flags={"--lora": "lora", "--full": "full"})
    epochs: float = setting(1.0, "Passes over the subset.")
    max_steps: int = setting(-1, "If > 0, overrides --epochs.")
    lr: float | None = setting(None, "Learning rate [2e-4 LoRA, 2e-5 full].")
    batch_size: int = setting(8, "Samples per device step.")
    grad_accum: int = setting(1, "Gradient accumulation steps.")
    max_len: int = setting(256, "Tokens per sample (truncated).")
    warmup_ratio: float = setting(0.03, "Warmup as a fraction of the total steps.")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    lora_r: int = setting(8, "LoRA rank.")
    lora_alpha: int = setting(16, "LoRA alpha.")
    lora_dropout: float = setting(0.05, "LoRA dropout.")
    seed: int = setting(0, "Training seed (initialisation, data order, dropout).")
    save_steps: int = setting(50, "Checkpoint every N steps.")
    logging_steps: int = setting(1, "Log the loss every N steps.")
    gradient_checkpointing: bool = setting(False, "Trade compute for memory (large models on small GPUs).")
    chat_template: str = setting(
        "auto", "auto (the model's own template, else llama-2 for a SentencePiece <s>/</s> vocabulary, else chatml)"
        ", model, chatml, llama-2, or a Jinja file. Evaluation uses the one training used.", metavar="NAME|FILE")
    precision: Literal["auto", "fp32", "bf16-mixed", "fp16-mixed"] = setting(
        "auto", "Mixed precision keeps fp32 master weights (autocast). [auto: bf16-mixed on a CUDA GPU with bf16, "
        "else fp32]")
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit"] = setting(
        "adamw_torch_fused", "AdamW: torch, torch fused, or 8-bit (bitsandbytes).")
    device: str | None = setting(None, "cpu, cuda, cuda:1 ... [cuda if available]")
    extra: dict[str, Any] = setting(help="Further transformers TrainingArguments (spec only).", cli=False,
                                    default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        for name in ("batch_size", "grad_accum", "max_len", "save_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("give epochs > 0 or max_steps > 0")
        if not self.chat_template.strip():
            raise ValueError(f"chat_template: give one of {', '.join(CHAT_TEMPLATES)} or a Jinja file")
        for key in sorted(set(self.extra) & set(_OWNED)):
            raise ValueError(f"extra.{key} is set by the `{_OWNED[key]}` setting; use that instead")
        return self

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.method == "lora" else 2e-5)

    def run_config(self) -> dict[str, Any]:
        """The config ``train.json`` stores and a finished run is matched on: fields added later are left out at
        their default (the value that behaves as runs trained before them did)."""
        data = self.model_dump()
        for name in ADDED_LATER:
            if data[name] == type(self).model_fields[name].get_default():
                data.pop(name)
        return data


# Added with issue 17. At their defaults they behave as earlier versions did: the model's own chat template where
# it has one, fp32 on CPU, and transformers' default optimizer (fused AdamW). Two cases did change, and such runs
# are still accepted as finished (their train.json has no ``resolved``): a model without a template was trained
# on plain-text ChatML markers (evaluation keeps that format for them, ``train.run.Run.load``), and on a GPU the
# weights were bf16 with no fp32 master copy.
ADDED_LATER = ("chat_template", "precision", "optimizer")
