"""Numeric precision and optimizer of a training run, resolved for the machine it runs on.

Mixed precision keeps fp32 master weights: the model is always loaded in fp32 for training and the Trainer
autocasts the forward and backward passes (``bf16=True`` / ``fp16=True`` in ``TrainingArguments``); weights are
never loaded in bf16 and updated in bf16, where most updates at a fine-tuning learning rate fall below bf16's
resolution and are lost.

``auto`` is bf16-mixed on a CUDA GPU that supports bf16, else fp32. Mixed precision asked for explicitly where
training runs on the CPU is an error, not a silent fallback: the numbers of a run must be the ones its settings
say. ``adamw_8bit`` needs bitsandbytes, which is not a dependency of divscope.
"""

from __future__ import annotations

import importlib.util

from divscope.errors import DivscopeError


def training_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: str) -> str:
    """fp32 | bf16-mixed | fp16-mixed for ``precision`` (auto or one of those) on ``device``."""
    import torch

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16-mixed" if bf16_ok else "fp32"
    if precision != "fp32" and not cuda:
        raise DivscopeError(f"precision {precision} needs a CUDA GPU and training runs on {device}: use --precision "
                            "fp32 (or auto, which is fp32 there)")
    if precision == "bf16-mixed" and not bf16_ok:
        raise DivscopeError("precision bf16-mixed: this GPU does not support bf16; use --precision fp16-mixed")
    return precision


def check_optimizer(optimizer: str) -> str:
    """The ``TrainingArguments.optim`` name of ``optimizer``, once what it needs is installed."""
    if optimizer == "adamw_8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise DivscopeError("optimizer adamw_8bit needs bitsandbytes: pip install bitsandbytes")
    return optimizer


def trainer_flags(precision: str) -> dict[str, bool]:
    """The ``TrainingArguments`` of a resolved precision (the model itself stays fp32)."""
    return {"bf16": precision == "bf16-mixed", "fp16": precision == "fp16-mixed"}
