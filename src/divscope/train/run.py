"""A finished training run: the one owner of its folder, summary (``train.json``) and model.

Evaluation, generation and studies all reach a trained model through :class:`Run`, so what "finished" means,
where the model lives and how it loads (base + LoRA adapter, or the full model) is decided in one place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError

TRAIN_FILE = "train.json"


@dataclass(frozen=True)
class Run:
    path: Path
    summary: dict[str, Any]

    @staticmethod
    def is_finished(path: str | Path) -> bool:
        """``train.json`` is written last, so its presence marks a finished run."""
        return (Path(path) / TRAIN_FILE).is_file()

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        if not cls.is_finished(path):
            raise DivscopeError(f"{path}: not a finished training run (no {TRAIN_FILE}); run `divscope train` first")
        return cls(path, json.loads((path / TRAIN_FILE).read_text(encoding="utf-8")))

    @property
    def config(self) -> dict[str, Any]:
        return self.summary["config"]

    @property
    def model_dir(self) -> Path:
        return self.path / self.summary.get("model_dir", "model")

    @property
    def model_id(self) -> str:
        """Identity of the trained model (settings + data), for caches of what it generated."""
        blob = json.dumps({"config": self.summary.get("config"), "data": self.summary.get("data_fingerprint"),
                           "model_dir": self.summary.get("model_dir", "model")}, sort_keys=True, default=str)
        return "run:" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load(self, device: str | None = None) -> tuple[Any, Any]:
        """(model, tokenizer): the base model with the LoRA adapter, or the fully fine-tuned model."""
        from divscope.train.model import load_causal_lm

        if self.config["method"] == "lora":
            from peft import PeftModel

            base, tok = load_causal_lm(self.config["model"], device=device)
            return PeftModel.from_pretrained(base, str(self.model_dir)), tok
        return load_causal_lm(str(self.model_dir), device=device)
