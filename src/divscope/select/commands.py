"""``divscope select`` and ``divscope grid``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.ui import console, table

STRATEGY_HELP = ("instruction-macro | instruction-meso | instruction-micro | response-macro | response-meso | "
                 "response-micro | random | k-center | distance")


def _baseline_options(f: Any) -> Any:
    f = click.option("--side", default="instruction", show_default=True,
                     type=click.Choice(["instruction", "response"]),
                     help="k-center / distance: which side's embeddings.")(f)
    f = click.option("--score-column", default=None,
                     help="distance: numeric metadata column to walk by (high first) [response length].")(f)
    f = click.option("--threshold", default=0.1, show_default=True, type=float,
                     help="distance: keep a sample if its cosine distance to every kept one exceeds this.")(f)
    f = click.option("--length-range", default=None, metavar="MIN:MAX",
                     help="Length control: select only samples whose --length-side has MIN..MAX target tokens "
                          "(inclusive; MIN: or :MAX for one end).")(f)
    f = click.option("--length-side", default="response", show_default=True,
                     type=click.Choice(["instruction", "response"]), help="Side whose length --length-range bounds.")(f)
    f = click.option("--length-tokenizer", default="smollm2", show_default=True,
                     help="Tokenizer that measures lengths (the target model's): smollm2 | llama2 | llama3 | HF id.")(f)
    return f


def _length_eligible(ws: Path, length_range: str | None, length_side: str, length_tokenizer: str) -> tuple[Any, Any]:
    """(eligible mask or None, request entry or None) for ``select``."""
    if length_range is None:
        return None, None
    from divscope.select.lengths import length_mask, length_request

    mask, _ = length_mask(ws, length_range, length_side, length_tokenizer)
    return mask, length_request(length_range, length_side, length_tokenizer)


def _parse_ints(value: str, what: str) -> list[int]:
    from divscope.errors import DivscopeError

    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise DivscopeError(f"{what} must be comma-separated integers, got {value!r}") from None
    if not out:
        raise DivscopeError(f"{what} is empty")
    return out


@click.command("select")
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
@click.option("--strategy", "-s", required=True, help=STRATEGY_HELP)
@click.option("--diversity", "-d", type=float, default=None, help="Level in [0, 1] (the six strategies).")
@click.option("--size", "-n", required=True, type=int, help="Exact number of samples N.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Subset file; a manifest is written beside it as FILE.manifest.json.")
@click.option("--format", "-f", "fmt", default=None, help="alpaca | sharegpt | openai | parquet | hf [from extension]")
@_baseline_options
def select_cmd(ws: Path, strategy: str, diversity: float | None, size: int, seed: int, out: Path, fmt: str | None,
               side: str, score_column: str | None, threshold: float, length_range: str | None, length_side: str,
               length_tokenizer: str) -> None:
    """Select exactly N samples of workspace WS at diversity level D with one strategy."""
    from divscope.select.strategies import Selector
    from divscope.select.subsets import manifest_path, request_of, write_subset

    options = {"side": side, "score_column": score_column, "threshold": threshold}
    eligible, length = _length_eligible(ws, length_range, length_side, length_tokenizer)
    selector = Selector(ws, eligible)
    sub = selector.select(strategy, size, diversity, seed, **options)
    req = request_of(strategy, size, diversity, seed, options)
    if length is not None:
        req["length"] = length
    m = write_subset(selector, sub, out, fmt, req)
    rows = [(k, m[k]) for k in ("strategy", "diversity", "size", "seed", "k", "k_min", "k_max", "pool_size",
                                "types_covered", "eligible") if k in m and m[k] is not None]
    console.print(table("select", ["", "value"], rows))
    console.print(f"subset: {out}\nmanifest: {manifest_path(out)}")


@click.command("grid")
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sizes", required=True, help="Comma-separated subset sizes, e.g. 1000,2000.")
@click.option("--levels", default=7, show_default=True, type=int, help="Number of levels d = 0 .. 1.")
@click.option("--strategies", default="all", show_default=True,
              help="all (the six), baselines, or a comma list: " + STRATEGY_HELP)
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds (baselines: one subset each).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "-f", "fmt", default=None, help="Writer format [openai JSONL].")
@_baseline_options
def grid_cmd(ws: Path, sizes: str, levels: int, strategies: str, seeds: str, out: Path, fmt: str | None,
             side: str, score_column: str | None, threshold: float, length_range: str | None, length_side: str,
             length_tokenizer: str) -> None:
    """Write every subset of strategies x sizes x levels (x seeds) into OUT, skipping finished ones."""
    from divscope.select.strategies import parse_strategies
    from divscope.select.subsets import levels_of, run_grid

    ext = {"alpaca": ".json", "sharegpt": ".json", "parquet": ".parquet", "hf": ""}.get(fmt or "", ".jsonl")
    manifests, built = run_grid(ws, out, parse_strategies(strategies), _parse_ints(sizes, "--sizes"),
                                levels_of(levels), _parse_ints(seeds, "--seeds"), fmt=fmt, ext=ext, side=side,
                                score_column=score_column, threshold=threshold, length_range=length_range,
                                length_side=length_side, length_tokenizer=length_tokenizer)
    rows = [(m["strategy"], m["size"], "-" if m["diversity"] is None else f"{m['diversity']:.3f}", m["seed"],
             m.get("k", "-"), m.get("types_covered", "-")) for m in manifests]
    console.print(table(f"grid: {len(manifests)} subsets ({built} new, {len(manifests) - built} already there)",
                        ["strategy", "size", "d", "seed", "k", "types covered"], rows))
    console.print(f"grid: {out / 'grid.json'}")
