"""``divscope evaluate``: score a training run on an evaluation set."""

from __future__ import annotations

from pathlib import Path

import click

from divscope.ui import console, err_console, table


@click.command("evaluate")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--eval-set", default="alpaca_eval", show_default=True,
              help="alpaca_eval | vicuna | arena_hard | mt_bench | ifeval | pool:WS (held-out pool samples) | FILE")
@click.option("--method", default="nll", show_default=True, type=click.Choice(["nll", "judge", "ifeval"]),
              help="nll: offline mean NLL per token of reference answers (score = -NLL). judge: generate answers, "
                   "pairwise LLM judge against the references in both orders (score = win rate in [0, 1], ties "
                   "half). ifeval: generate answers, verifiable-instruction checks (score = prompt-level strict "
                   "accuracy in [0, 1]).")
@click.option("--limit", default=200, show_default=True, type=int, help="Seeded sample of N items (0 = all).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-len", default=512, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--device", default=None)
@click.option("--max-new-tokens", default=512, show_default=True, type=int,
              help="judge/ifeval: answer length limit (greedy decoding; --max-len limits the prompt).")
@click.option("--endpoint", default=None, help="judge: OpenAI-compatible server, e.g. http://host:8000/v1.")
@click.option("--judge-model", default=None, help="judge: model name the server serves.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="judge: environment variable holding the API key (read at request time, never written).")
@click.option("--concurrency", default=8, show_default=True, type=int, help="judge: requests in flight at most.")
def evaluate_cmd(run: Path, eval_set: str, method: str, limit: int, seed: int, max_len: int, batch_size: int,
                 device: str | None, max_new_tokens: int, endpoint: str | None, judge_model: str | None,
                 api_key_env: str, concurrency: int) -> None:
    """Evaluate the fine-tuned model in RUN; items overlapping its training data are skipped."""
    from divscope.evaluate.runs import evaluate_run, result_path

    options: dict = {}
    if method in ("judge", "ifeval"):
        options["max_new_tokens"] = max_new_tokens
    if method == "judge":
        options.update(endpoint=endpoint, judge_model=judge_model, api_key_env=api_key_env or None,
                       concurrency=concurrency)
    res = evaluate_run(run, eval_set, method, limit=limit or None, seed=seed, max_len=max_len,
                       batch_size=batch_size, device=device, **options)
    keys = ("metric", "score", "ci", "items", "unjudged", "skipped_no_reference", "prompt_level_strict_acc",
            "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc", "excluded_overlapping",
            "seconds_per_item")
    rows = [(k, res[k]) for k in keys if k in res]
    console.print(table(f"evaluate {eval_set}", ["", "value"], rows))
    if res.get("complete") is False:
        err_console.print(f"[yellow]{res.get('failed_requests')} judge requests failed: run the same command "
                          "again to retry them (answers already given are cached)[/yellow]")
    console.print(f"result: {result_path(run, eval_set, method)}")
