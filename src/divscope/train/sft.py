"""Supervised fine-tuning of a subset: transformers + TRL ``SFTTrainer`` + PEFT LoRA (or full fine-tuning).

The run directory is the unit of work and of resumption:

    RUN/checkpoints/checkpoint-N/   Trainer checkpoints (model, optimizer, scheduler, RNG states)
    RUN/model/                      the final adapter (LoRA) or model (full), written atomically
    RUN/train.json                  config, data fingerprint, losses, timings; written last = the done marker
                                    (``store.cached``: reused only for the same config and data)

A killed run resumes from its latest checkpoint when started again with the same arguments. Loss is on
assistant tokens only (``divscope.train.chat``); the labels are checked in the tests. Conversations are rendered
in the run's chat format (``divscope.train.formats``: the model's template or one of its family), whose end-of-turn
token closes every assistant turn's labels; the model is loaded in fp32 and mixed precision autocasts
(``divscope.train.precision``). ``train.json`` records the format and what every setting resolved to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from divscope._version import __version__
from divscope.errors import DivscopeError
from divscope.io.contamination import find_overlap
from divscope.io.evalsets import EVAL_SETS, load_eval_set
from divscope.io.record import Record
from divscope.store.cached import cached_result, stored_result
from divscope.train import launch
from divscope.train.formats import CHOICES
from divscope.train.precision import check_optimizer, resolve_precision, trainer_flags, training_device
from divscope.train.run import CHECKPOINTS, TRAIN_FILE, Run
from divscope.train.settings import TrainSettings


def train_threads() -> int:
    """Torch threads for training: ``DIVSCOPE_TRAIN_THREADS``, else ``OMP_NUM_THREADS``, else every core.

    Honouring the environment lets two jobs share a machine without oversubscribing it (torch's CPU kernels
    slow down several-fold when threads outnumber free cores) and lets Ray's per-task CPU grant hold.
    """
    for var in ("DIVSCOPE_TRAIN_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                raise DivscopeError(f"{var}={value!r} is not a whole number of threads") from None
            if n >= 1:
                return n
    return max(1, os.cpu_count() or 1)


def data_fingerprint(records: list[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.id}\x00{r.content_hash}\n".encode())
    return h.hexdigest()[:16]


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    # A checkpoint is complete only once trainer_state.json is in it (the Trainer writes it last).
    if last and not (Path(last) / "trainer_state.json").is_file():
        shutil.rmtree(last, ignore_errors=True)
        return _last_checkpoint(ckpt_dir)
    return last


def build_dataset(records: list[Record], tokenizer: Any, max_len: int) -> tuple[Any, int]:
    """Tokenised dataset with assistant masks; returns it and how many samples had no loss token left."""
    import datasets

    from divscope.train.chat import encode_chat

    rows, dropped = [], 0
    for r in records:
        enc = encode_chat(tokenizer, r.messages(), max_len)
        if enc is None:
            dropped += 1
            continue
        rows.append(enc)
    if not rows:
        raise DivscopeError(f"no sample keeps an assistant token within --max-len {max_len}; raise --max-len")
    return datasets.Dataset.from_list(rows), dropped


def train(records: list[Record], run_dir: str | os.PathLike[str], config: TrainSettings | None = None,
          source: str = "", on_step: Callable[[int, int], None] | None = None) -> Run:
    """Fine-tune on ``records`` into ``run_dir``; returns at once if the run is already complete. ``on_step(step,
    max_steps)`` follows the optimizer steps (a study's cell status), besides the progress bar."""
    cfg = config or TrainSettings()
    run = Path(run_dir)
    params = {"config": cfg.identity(), "data_fingerprint": data_fingerprint(records)}
    template = Path(cfg.chat_template).expanduser()
    if cfg.chat_template not in CHOICES and template.is_file():  # a template file's content matters, not its name
        params["chat_template_sha256"] = hashlib.sha256(template.read_bytes()).hexdigest()
    if Run.is_finished(run) and stored_result(run / TRAIN_FILE, params) is None:
        raise DivscopeError(f"{run} holds a finished run with other data or settings; choose another --out")
    if not records:
        raise DivscopeError("the training subset is empty")
    if launch.in_worker():  # one of the processes of a launch: train here; rank 0's summary goes back to it
        return Run(run, _fit(records, run, cfg, source, on_step))
    if cfg.launcher != "none":  # the processes run this same function (divscope.train.worker)
        return Run(run, cached_result(run / TRAIN_FILE, params, lambda: launch.launch(
            records, run, cfg, source, threads=train_threads())))
    return Run(run, cached_result(run / TRAIN_FILE, params, lambda: _fit(records, run, cfg, source, on_step)))


def _fit(records: list[Record], run: Path, cfg: TrainSettings, source: str,
         on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train (resuming from the last checkpoint), save the model; the summary that becomes ``train.json``."""
    import torch
    from transformers import set_seed

    from divscope.train.chat import turns_without
    from divscope.train.formats import stop_token
    from divscope.train.model import load_with_format

    device = training_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    check_optimizer(cfg.optimizer)  # fail before loading the model
    set_seed(cfg.seed)
    torch.set_num_threads(train_threads())
    t_load = time.perf_counter()
    # fp32 whatever the precision: mixed precision autocasts, the master weights stay fp32
    model, tokenizer, fmt, new_ids = load_with_format(cfg.model, device, torch.float32, cfg.chat_template)
    load_s = time.perf_counter() - t_load
    stop = stop_token(tokenizer)
    if stop is None:
        raise DivscopeError(f"the chat template of {cfg.model} ({fmt.name}) ends no assistant turn with a special "
                            "token, so generation could not stop; use --chat-template chatml (or llama-2)")
    dataset, dropped = build_dataset(records, tokenizer, cfg.max_len)
    stop_id = tokenizer.convert_tokens_to_ids(stop)
    cut = sum(turns_without(row, stop_id) for row in dataset)
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        # Tokens the format added have new embedding rows, which LoRA alone would leave at their initial value:
        # the embeddings are trained and saved with the adapter too. (PEFT's trainable_token_indices would train
        # just those rows, but TRL's fused LM head reads the output weight directly and never sees them.)
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM",
                                 modules_to_save=embedding_modules(model) if new_ids else None,
                                 ensure_weight_tying=bool(new_ids) and tied_embeddings(model))
    ckpt_dir = run / CHECKPOINTS
    trainer = build_trainer(model, tokenizer, dataset, cfg, ckpt_dir, peft_config, precision=precision)
    batch = launch.check_batch(trainer.args, cfg, str(model.device))  # the global batch as stated, whatever the processes
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # losses go to train.json, not to stdout line by line
    from divscope.train.progress import step_progress

    trainer.add_callback(step_progress(f"train {run.name}: steps", on_step))
    resume = _last_checkpoint(ckpt_dir)
    t0 = time.perf_counter()
    if _finished_checkpoint(resume, cfg.max_steps):
        # Killed after its last checkpoint (e.g. while saving the model): the Trainer, resumed at max_steps,
        # would still run one more step (it checks for the end after a step), so load that checkpoint instead.
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)
        trainer.state = TrainerState.load_from_json(str(Path(str(resume)) / "trainer_state.json"))
        logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        train_loss = sum(logged) / len(logged) if logged else float("nan")
    else:
        train_loss = trainer.train(resume_from_checkpoint=resume).training_loss
    train_s = time.perf_counter() - t0
    with launch.main_process_path(run / "model", trainer.args.should_save) as tmp:  # rank 0 writes
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _stable_adapter_config(tmp / "adapter_config.json")
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    steps_run = state.global_step - (int(Path(resume).name.split("-")[-1]) if resume else 0)
    summary = {
        "divscope_version": __version__, "source": source, "samples": len(records), "samples_without_loss_tokens": dropped,
        "train_ids": [r.id for r in records], "global_step": state.global_step, "resumed_from": resume,
        "losses": losses, "train_loss": train_loss, "load_seconds": round(load_s, 2),
        "train_seconds": round(train_s, 2),
        "seconds_per_step": round(train_s / steps_run, 3) if steps_run > 0 else None,
        "device": str(model.device), "model_dir": "model",
        # recorded because runs trained before it (transformers' warmup) had their first step at lr 0
        "lr_schedule": {"type": "cosine", "warmup_steps": warmup_steps(cfg.warmup_ratio, state.max_steps),
                        "warmup": "(step + 1) / (warmup + 1)"},
        # what the settings resolved to here; evaluation loads the model with this chat format (Run.load)
        "chat_format": {**fmt.record(), "stop_token": stop, "stop_token_id": stop_id,
                        "added_token_ids": new_ids},
        "resolved": {"precision": precision, "optimizer": trainer.args.optim.value,
                     "master_weights": str(next(model.parameters()).dtype).removeprefix("torch."),
                     "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
                     "learning_rate": cfg.learning_rate(), "chat_template": fmt.name, "stop_token": stop,
                     "assistant_turns_cut_before_stop_token": cut},
    }
    summary["batch"], summary["keep_checkpoints"] = batch, cfg.keep_checkpoints
    summary["eval_overlap"] = eval_overlap(records)
    return summary


def warmup_steps(ratio: float, total: int) -> int:
    """floor(ratio * total): a short run gets no warmup at all rather than a whole step spent at a tiny lr."""
    return max(0, math.floor(ratio * total + 1e-9))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor of optimizer step ``step`` (0-based): linear warmup, then cosine decay to 0.

    The warmup gives (step + 1) / (warmup + 1), so the first step already learns; transformers' own warmup gives
    step / warmup, i.e. lr 0 for step 0, which on an 8-step run wasted one step in eight. The cosine is
    evaluated before it reaches 0, so no step of the run has lr 0.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def embedding_modules(model: Any) -> list[str]:
    """Names of the input and output embedding modules (PEFT's ``modules_to_save``)."""
    names = {id(m): n for n, m in model.named_modules()}
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    return [names[id(m)] for m in layers if m is not None and id(m) in names]


def tied_embeddings(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def build_trainer(model: Any, tokenizer: Any, dataset: Any, cfg: TrainSettings, ckpt_dir: Path,
                  peft_config: Any = None, precision: str | None = None) -> Any:
    """The TRL ``SFTTrainer`` of a run, with divscope's learning-rate schedule (:func:`lr_factor`); ``precision``:
    fp32 | bf16-mixed | fp16-mixed, resolved from the settings for the model's device when not given."""
    import torch
    from trl import SFTConfig, SFTTrainer

    precision = precision or resolve_precision(cfg.precision, str(model.device))

    class Trainer(SFTTrainer):  # type: ignore[misc]
        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                warm = warmup_steps(cfg.warmup_ratio, num_training_steps)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer,
                    functools.partial(lr_factor, warmup=warm, total=num_training_steps))
                self._created_lr_scheduler = True
            return self.lr_scheduler

    layout = cfg.layout(str(model.device))
    args = SFTConfig(
        output_dir=str(ckpt_dir), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=layout["per_device_batch"], gradient_accumulation_steps=layout["grad_accum"],
        learning_rate=cfg.learning_rate(), warmup_steps=0, weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine", logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.keep_checkpoints, seed=cfg.seed, data_seed=cfg.seed,
        report_to=[],
        max_length=cfg.max_len, disable_tqdm=True, dataloader_num_workers=0,
        gradient_checkpointing=cfg.gradient_checkpointing, optim=check_optimizer(cfg.optimizer),
        use_cpu=not str(model.device).startswith("cuda"), **trainer_flags(precision), **cfg.extra,
    )
    return Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                   peft_config=peft_config)


def _finished_checkpoint(resume: str | None, max_steps: int) -> bool:
    """Whether checkpoint ``resume`` already holds every step: ``max_steps``, or for an epoch-bounded run the
    total the Trainer computed and stored in the checkpoint."""
    if not resume:
        return False
    state = json.loads((Path(resume) / "trainer_state.json").read_text(encoding="utf-8"))
    target = max_steps if max_steps > 0 else int(state.get("max_steps") or 0)
    return 0 < target <= int(state.get("global_step") or 0)


def _stable_adapter_config(path: Path) -> None:
    """PEFT keeps ``target_modules`` as a set and writes it in hash order, which changes from one process to the
    next; sorted, the same training gives the same bytes (a resumed run matches an uninterrupted one)."""
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")


def eval_overlap(records: list[Record]) -> list[str]:
    """Ids of shipped eval items whose prompts overlap this training data: evaluation skips them."""
    texts = [r.instruction for r in records]
    ids: set[str] = set()
    for name in EVAL_SETS:
        ov = find_overlap(texts, load_eval_set(name))
        ids.update(i for row in ov.rows for i in ov.matches[row])
    return sorted(ids)
