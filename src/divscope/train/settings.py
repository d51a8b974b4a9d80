"""The train stage's settings: ``divscope train`` options and the spec's ``train:`` section (one source).

``train.json`` stores them (:meth:`TrainSettings.identity`), and a run is finished for a request only when they
match. Fields added after runs were already trained (:data:`ADDED_LATER`) are left out of the stored config
while at their default, so a run trained before they existed, whose config lacks them, is still finished for
the same request. What they resolved to on the machine that trained (``auto`` precision, the chat format, ...)
is recorded apart, under ``resolved`` in ``train.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from divscope.settings import Settings, setting

# How a run is executed, not what it learns: kept out of the run's identity and the study's fingerprint.
HOW_TO_RUN = ("launcher", "num_processes", "sharding", "keep_checkpoints", "micro_batch")
# The micro-batch of training on the CPU when --micro-batch is not given: peak memory grows with the samples of a
# forward pass (activations of every layer are kept for the backward pass), and a CPU gains no speed from large
# batches. SmolLM2-135M, LoRA, max_len 256, batch 8: peak RSS 9.85 GB in one pass, 2.46 GB in passes of 1, CPU
# time 0.88x (no padding) at 256 tokens, 1.07x at 128 (docs/training.md).
CPU_MICRO_BATCH = 1
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
    batch_size: int = setting(8, "Samples per batch. The global batch (one optimizer step) is batch_size x "
                              "grad_accum whatever --num-processes or --micro-batch (docs/gpu.md).")
    grad_accum: int = setting(1, "Gradient accumulation steps of one process; P processes accumulate 1/P as "
                              "many (or split the micro-batch), so the global batch stays the same.")
    micro_batch: int | None = setting(
        None, "Most samples per forward pass: memory and speed, not what is learnt (the global batch stays; "
        "more accumulation steps make it up). [auto: batch_size on a GPU, at most 1 on the CPU]", ge=1)
    max_len: int = setting(256, "Tokens per sample (truncated).")
    warmup_ratio: float = setting(0.03, "Warmup as a fraction of the total steps.")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    lora_r: int = setting(8, "LoRA rank.")
    lora_alpha: int = setting(16, "LoRA alpha.")
    lora_dropout: float = setting(0.05, "LoRA dropout.")
    seed: int = setting(0, "Training seed (initialisation, data order, dropout).")
    save_steps: int = setting(50, "Checkpoint every N steps.")
    keep_checkpoints: int = setting(1, "Checkpoints kept while training (the last N); a study deletes them once "
                                    "the cell's evaluations are recorded (the final model stays).")
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
    launcher: Literal["none", "accelerate"] = setting(
        "none", "none: train in this process; accelerate: `accelerate launch` --num-processes processes (one per "
        "GPU; gloo on CPU) running the same training.")
    num_processes: int = setting(1, "Training processes (--launcher accelerate), one per GPU.")
    sharding: Literal["none", "fsdp", "zero2", "zero3"] = setting(
        "none", "With --launcher accelerate: plain data parallel (none), FSDP, or DeepSpeed ZeRO-2/3 (pip install "
        "deepspeed); sharding needs GPUs.")
    extra: dict[str, Any] = setting(help="Further transformers TrainingArguments (spec only).", cli=False,
                                    default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        for name in ("batch_size", "grad_accum", "max_len", "save_steps", "lora_r", "keep_checkpoints",
                     "num_processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("give epochs > 0 or max_steps > 0")
        if self.launcher == "none" and (self.num_processes > 1 or self.sharding != "none"):
            raise ValueError("num_processes > 1 and sharding need launcher: accelerate")
        if self.launcher != "none" and self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device {self.device!r}: with a launcher give cpu or cuda (each process takes its "
                             "own GPU; choose them with CUDA_VISIBLE_DEVICES)")
        self.layout(self.device or "cpu")  # the global batch must split exactly over the processes
        if not self.chat_template.strip():
            raise ValueError(f"chat_template: give one of {', '.join(CHAT_TEMPLATES)} or a Jinja file")
        for key in sorted(set(self.extra) & set(_OWNED)):
            raise ValueError(f"extra.{key} is set by the `{_OWNED[key]}` setting; use that instead")
        return self

    def processes(self) -> int:
        return self.num_processes if self.launcher != "none" else 1

    def micro_batch_on(self, device: str) -> int:
        """The most samples per forward pass on ``device``: ``micro_batch`` when given; else ``batch_size``, at
        most :data:`CPU_MICRO_BATCH` on the CPU."""
        if self.micro_batch is not None:
            return self.micro_batch
        return min(self.batch_size, CPU_MICRO_BATCH) if device.split(":")[0] == "cpu" else self.batch_size

    def layout(self, device: str) -> dict[str, int]:
        """How the global batch (batch_size x grad_accum) is made with P processes on ``device`` (cpu, cuda,
        cuda:1 ...): per-device batch x P x accumulation. The per-device batch is the largest divisor of the
        per-process batch that is at most :meth:`micro_batch_on` (without --micro-batch it never exceeds
        batch_size: memory as stated). A global batch that P does not divide is refused."""
        total, p = self.batch_size * self.grad_accum, self.processes()
        if total % p:
            raise ValueError(f"the global batch {total} (batch_size {self.batch_size} x grad_accum "
                             f"{self.grad_accum}) does not split over {p} processes: make it a multiple of {p}")
        per_process = total // p
        cap = min(self.micro_batch_on(device), per_process)
        per_device = max(d for d in range(1, cap + 1) if per_process % d == 0)
        return {"global_batch": total, "processes": p, "per_device_batch": per_device,
                "grad_accum": per_process // per_device}

    def identity(self) -> dict[str, Any]:
        """The settings that decide what is trained (``train.json``'s ``config``, what a finished run is matched
        on). How it runs is left out, so a run trained in one process is reused by a request for eight (same
        global batch); fields added later are left out at their default (the value that behaves as runs trained
        before them did)."""
        data = self.model_dump(exclude=set(HOW_TO_RUN))
        for name in ADDED_LATER:
            if data[name] == type(self).model_fields[name].get_default():
                data.pop(name)
        return data

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.method == "lora" else 2e-5)


# Added with issue 17. At their defaults they behave as earlier versions did: the model's own chat template where
# it has one, fp32 on CPU, and transformers' default optimizer (fused AdamW). Two cases did change, and such runs
# are still accepted as finished (their train.json has no ``resolved``): a model without a template was trained
# on plain-text ChatML markers (evaluation keeps that format for them, ``train.run.Run.load``), and on a GPU the
# weights were bf16 with no fp32 master copy.
ADDED_LATER = ("chat_template", "precision", "optimizer")
