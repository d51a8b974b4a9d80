"""``divscope select`` and ``divscope grid``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.select.settings import GridSettings, SelectSettings
from divscope.settings import cli_options
from divscope.ui import console, table


@click.command("select")
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
@cli_options(SelectSettings)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Subset file; a manifest is written beside it as FILE.manifest.json.")
@click.option("--format", "-f", "fmt", default=None, help="alpaca | sharegpt | openai | parquet | hf [from extension]")
def select_cmd(ws: Path, out: Path, fmt: str | None, **values: Any) -> None:
    """Select exactly N samples of workspace WS at diversity level D with one strategy."""
    from divscope.io.workspace import Workspace
    from divscope.select.eligibility import eligibility, select_eligible
    from divscope.select.strategies import Selector
    from divscope.select.subsets import manifest_path, request_of, write_subset

    s = SelectSettings.from_cli(values)
    _refuse_ignored(s.strategy, list(values))
    options = s.strategy_options()
    workspace = Workspace(ws)
    workspace.require_pool()  # a missing pool is named before any filter reads it
    elig = eligibility(workspace, length_range=s.length_range, length_side=s.length_side,
                       length_tokenizer=s.length_tokenizer, where=s.where)
    selector = Selector(workspace, elig.mask)
    sub = select_eligible(selector, elig, s.strategy, s.size, s.diversity, s.seed, **options)
    req = request_of(s.strategy, s.size, s.diversity, s.seed, options) | elig.request
    m = write_subset(selector, sub, out, fmt, req)
    rows = [(k, m[k]) for k in ("strategy", "diversity", "size", "seed", "k", "k_min", "k_max", "pool_size",
                                "types_covered", "coverage_target", "eligible", "typed_samples", "typeless_samples")
            if k in m and m[k] is not None]
    console.print(table("select", ["", "value"], rows))
    console.print(f"subset: {out}\nmanifest: {manifest_path(out)}")


def _refuse_ignored(strategy: str, names: list[str]) -> None:
    """An option given on the command line that the strategy ignores is an error, not a silent no-op: the user
    asked for something (a level, a threshold) that the subset would not have, while its manifest records it."""
    from divscope.errors import DivscopeError
    from divscope.select.settings import ignored_options

    ctx = click.get_current_context()
    given = [n for n in names if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE]
    ignored = ignored_options(strategy, given)
    if ignored:
        opts = " ".join("--" + n.replace("_", "-") for n in ignored)
        raise DivscopeError(f"strategy {strategy} ignores {opts}: drop {'it' if len(ignored) == 1 else 'them'} "
                            "(docs/strategies.md lists the options each strategy uses)")


@click.command("grid")
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
@cli_options(GridSettings)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "-f", "fmt", default=None, help="Writer format [openai JSONL].")
def grid_cmd(ws: Path, out: Path, fmt: str | None, **values: Any) -> None:
    """Write every subset of strategies x sizes x levels (x seeds x replicates) into OUT, skipping finished ones."""
    from divscope.select.subsets import run_grid_settings

    g = GridSettings.from_cli(values)
    ext = {"alpaca": ".json", "sharegpt": ".json", "parquet": ".parquet", "hf": ""}.get(fmt or "", ".jsonl")
    manifests, built = run_grid_settings(ws, out, g, fmt=fmt, ext=ext)
    rep = g.has_replicates()  # a replicate column only where there are replicates
    rows = [(m["strategy"], m["size"], "-" if m["diversity"] is None else f"{m['diversity']:.3f}", m["seed"],
             *([m.get("replicate", 0)] if rep else []), m.get("k", "-"), m.get("types_covered", "-"))
            for m in manifests]
    console.print(table(f"grid: {len(manifests)} subsets ({built} new, {len(manifests) - built} already there)",
                        ["strategy", "size", "d", "seed", *(["replicate"] if rep else []), "k", "types covered"],
                        rows))
    console.print(f"grid: {out / 'grid.json'}")
