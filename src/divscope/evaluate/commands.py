"""``divscope evaluate``: score a training run on an evaluation set."""

from __future__ import annotations

from pathlib import Path

import click

from divscope.ui import console, table


@click.command("evaluate")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--eval-set", default="alpaca_eval", show_default=True,
              help="alpaca_eval | vicuna | arena_hard | mt_bench | ifeval | pool:WS (held-out pool samples) | FILE")
@click.option("--method", default="nll", show_default=True, type=click.Choice(["nll", "judge", "ifeval"]),
              help="nll: offline mean NLL per token of reference answers (score = -NLL).")
@click.option("--limit", default=200, show_default=True, type=int, help="Seeded sample of N items (0 = all).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-len", default=512, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--device", default=None)
def evaluate_cmd(run: Path, eval_set: str, method: str, limit: int, seed: int, max_len: int, batch_size: int,
                 device: str | None) -> None:
    """Evaluate the fine-tuned model in RUN; items overlapping its training data are skipped."""
    from divscope.evaluate.runs import evaluate_run, result_path

    res = evaluate_run(run, eval_set, method, limit=limit or None, seed=seed, max_len=max_len,
                       batch_size=batch_size, device=device)
    rows = [(k, res[k]) for k in ("metric", "score", "items", "excluded_overlapping", "seconds_per_item")
            if k in res]
    console.print(table(f"evaluate {eval_set}", ["", "value"], rows))
    console.print(f"result: {result_path(run, eval_set, method)}")
