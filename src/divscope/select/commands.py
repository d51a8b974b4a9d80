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
    from divscope.select.subsets import manifest_path, select_one, write_subset

    s = SelectSettings.from_cli(values)
    _refuse_ignored(s.strategy, list(values))
    chosen = select_one(ws, s)
    m = write_subset(chosen.selector, chosen.subset, out, fmt, chosen.request)
    rows = [(k, m[k]) for k in ("strategy", "diversity", "size", "seed", "k", "k_min", "k_max", "pool_size",
                                "types_covered", "coverage_target", "eligible", "typed_samples", "typeless_samples")
            if k in m and m[k] is not None]
    if "balance" in m:  # value: selected of eligible
        rows.append((f"balance by {m['balance']['column']}", ", ".join(
            f"{v['value']}: {v['selected']} of {v['eligible']}" for v in m["balance"]["values"])))
    console.print(table("select", ["", "value"], rows))
    console.print(f"subset: {out}\nmanifest: {manifest_path(out)}")


def _refuse_ignored(strategy: str, names: list[str]) -> None:
    """Only the options typed on the command line count (a default never errors): ``subsets.refuse_ignored``."""
    from divscope.select.subsets import refuse_ignored

    ctx = click.get_current_context()
    refuse_ignored(strategy, [n for n in names if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE])


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
