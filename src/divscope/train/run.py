"""A finished training run: the one owner of its folder, summary (``train.json``) and model.

Evaluation, generation and studies all reach a trained model through :class:`Run`, so what "finished" means,
where the model lives and how it loads (base + LoRA adapter, the full model, or the untrained model) is decided
in one place. The untrained model is a run too (:func:`base_run`, method ``base``): a study's anchor is then
evaluated, cached and reported exactly like a trained cell, with no special case in evaluation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError

TRAIN_FILE = "train.json"
CHECKPOINTS = "checkpoints"  # the Trainer's resumable checkpoints (RUN/checkpoints/checkpoint-N/)
BASE_METHOD = "base"  # ``config.method`` of the untrained model's run (the anchor of a study)


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

    def chat_format(self) -> Any:
        """The chat format the model was trained with (``train.formats.ChatFormat``), or, for the untrained model,
        the choice its settings name. A run trained before formats were recorded used the model's own template,
        else ChatML markers as plain text (``legacy``), and keeps it."""
        from divscope.train.formats import LEGACY, ChatFormat

        if self.config["method"] == BASE_METHOD:
            return self.config.get("chat_template", "auto")
        record = self.summary.get("chat_format")
        return ChatFormat.from_record(record) if record else LEGACY

    def load(self, device: str | None = None) -> tuple[Any, Any]:
        """(model, tokenizer): the base model with the LoRA adapter, or the fully fine-tuned model, with the chat
        format of :meth:`chat_format` (so generation and scoring render prompts as training did)."""
        from divscope.train.model import load_causal_lm

        chat = self.chat_format()
        if self.config["method"] == BASE_METHOD:
            return load_causal_lm(self.config["model"], device=device, chat=chat)
        if self.config["method"] == "lora":
            from peft import PeftModel

            base, tok = load_causal_lm(self.config["model"], device=device, chat=chat)
            return PeftModel.from_pretrained(base, str(self.model_dir)), tok
        return load_causal_lm(str(self.model_dir), device=device, chat=chat)

    def prune(self) -> int:
        """Delete what only resuming the training needed: the Trainer checkpoints (optimizer and scheduler state,
        RNG states, intermediate weights) and a launch's job data. The final model, train.json, eval/ and the
        launch log stay. A study calls it once the cell's evaluations are recorded; a finished run never needs a
        checkpoint again (train.json + model are reused). Returns the bytes freed."""
        freed = 0
        for path in (self.path / CHECKPOINTS, self.path / "launch" / "records.jsonl"):
            if path.exists():
                freed += disk_bytes(path)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        return freed

    def disk_bytes(self) -> int:
        return disk_bytes(self.path)


def disk_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (or of the file itself)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def base_run(path: str | Path, model: str, chat_template: str = "auto") -> Run:
    """The untrained ``model`` as a finished run in ``path`` (its ``train.json`` written once, then reused).

    It has no training data, so no evaluation item is held out of it, and no model folder of its own: ``load``
    returns the model as shipped or downloaded, with the chat format the study's cells train with
    (``chat_template``: stored only when not ``auto``, so the anchors of earlier studies keep their identity).
    """
    from divscope._version import __version__
    from divscope.store.cached import cached_result

    path = Path(path)
    config = {"model": model, "method": BASE_METHOD} | ({"chat_template": chat_template}
                                                         if chat_template != "auto" else {})
    params = {"config": config, "data_fingerprint": BASE_METHOD}
    summary = cached_result(path / TRAIN_FILE, params, lambda: {
        "divscope_version": __version__, "samples": 0, "train_ids": [], "eval_overlap": [], "global_step": 0})
    return Run(path, summary)
