"""The train stage's settings: ``divscope train`` options and the spec's ``train:`` section (one source).

``train.json`` stores them whole (``model_dump``), and a run is finished for a request only when they match.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from divscope.settings import Settings, setting


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
        return self

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.method == "lora" else 2e-5)
