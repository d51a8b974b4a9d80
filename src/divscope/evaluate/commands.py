"""``divscope evaluate``: score a training run on an evaluation set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.evaluate.settings import EvalSettings
from divscope.settings import cli_options
from divscope.ui import console, err_console, table


@click.command("evaluate")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@cli_options(EvalSettings)
def evaluate_cmd(run: Path, **values: Any) -> None:
    """Evaluate the fine-tuned model in RUN; items overlapping its training data are skipped."""
    from divscope.evaluate.runs import evaluate_run, result_path

    e = EvalSettings.from_cli(values)
    res = evaluate_run(run, e.eval_set, e.method, limit=e.limit or None, seed=e.seed, max_len=e.max_len,
                       batch_size=e.batch_size, device=e.device, **e.method_options())
    keys = ("metric", "score", "ci", "length_controlled_win_rate", "benchmark_win_rate", "items", "unjudged",
            "skipped_no_reference", "prompt_level_strict_acc",
            "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc", "nll_weighting",
            "end_of_turn", "mean_nll_token", "mean_nll_item", "mean_nll_token_no_eot", "mean_nll_item_no_eot",
            "excluded_overlapping", "seconds_per_item")
    rows = [(k, res[k]) for k in keys if k in res]
    if "truncated_references" in res:  # references cut at --max-len: their end (and end-of-turn) is not scored
        trained = res.get("train_max_len")
        rows.append(("truncated at max_len", f"{res['truncated_references']} of {res['items']} (max_len "
                     f"{res['params']['max_len']}{f', trained at {trained}' if trained else ''})"))
    console.print(table(f"evaluate {e.eval_set}", ["", "value"], rows))
    if res.get("complete") is False:
        err_console.print(f"[yellow]{res.get('failed_requests')} judge requests failed: run the same command "
                          "again to retry them (answers already given are cached)[/yellow]")
    console.print(f"result: {result_path(run, e.eval_set, e.method)}")
