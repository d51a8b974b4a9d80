"""``divscope train``: fine-tune the target model on one subset file."""

from __future__ import annotations

from pathlib import Path

import click

from divscope.ui import console, table


@click.command("train")
@click.argument("subset", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (checkpoints, final model, train.json). Rerun to resume after a kill.")
@click.option("--model", default="smollm2", show_default=True,
              help="smollm2 (SmolLM2-135M-Instruct, shipped) or any HF model id / local folder.")
@click.option("--lora/--full", "lora", default=True, show_default=True, help="LoRA adapter or full fine-tune.")
@click.option("--epochs", default=1.0, show_default=True, type=float)
@click.option("--max-steps", default=-1, show_default=True, type=int, help="If > 0, overrides --epochs.")
@click.option("--lr", default=None, type=float, help="Learning rate [2e-4 LoRA, 2e-5 full].")
@click.option("--max-len", default=512, show_default=True, type=int, help="Tokens per sample (truncated).")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--grad-accum", default=1, show_default=True, type=int)
@click.option("--lora-r", default=8, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--save-steps", default=50, show_default=True, type=int, help="Checkpoint every N steps.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=False, show_default=True,
              help="Trade compute for memory (large models on small GPUs).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda if available]")
def train_cmd(subset: Path, out: Path, model: str, lora: bool, epochs: float, max_steps: int, lr: float | None,
              max_len: int, batch_size: int, grad_accum: int, lora_r: int, seed: int, save_steps: int,
              gradient_checkpointing: bool, device: str | None) -> None:
    """Fine-tune MODEL on SUBSET (any supported format) with TRL + PEFT; loss on assistant tokens only."""
    from divscope.errors import DivscopeError
    from divscope.io import read_records
    from divscope.train.sft import TrainConfig, train

    records, rejects = read_records(subset)
    if rejects:
        raise DivscopeError(f"{subset}: {len(rejects)} invalid record(s), first at {rejects[0].where}: "
                            f"{rejects[0].problem[1] if rejects[0].problem else ''}; fix or re-export the subset")
    cfg = TrainConfig(model=model, method="lora" if lora else "full", epochs=epochs, max_steps=max_steps, lr=lr,
                      max_len=max_len, batch_size=batch_size, grad_accum=grad_accum, lora_r=lora_r, seed=seed,
                      save_steps=save_steps, gradient_checkpointing=gradient_checkpointing, device=device)
    res = train(records, out, cfg, source=str(subset))
    s = res.summary
    console.print(table("train", ["", "value"], [
        ("samples", s["samples"]), ("steps", s["global_step"]), ("resumed from", s["resumed_from"] or "-"),
        ("first / last loss", f"{s['losses'][0]:.3f} / {s['losses'][-1]:.3f}" if s["losses"] else "-"),
        ("seconds per step", s["seconds_per_step"] or "-"), ("device", s["device"]),
        ("model", str(res.model_dir))]))
