"""``divscope featurize``: build (or reuse) the incidence of each requested level x side.

Register in ``divscope/cli.py`` with ``cli.add_command(featurize)``. Only click and the settings models are
imported at module level; models and numerical libraries load when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from divscope.backend import engine_options
from divscope.features.settings import MacroSettings, MesoSettings, MicroSettings
from divscope.settings import choice, cli_options


def _parse_kv(items: tuple[str, ...]) -> dict[str, Any]:
    from divscope.errors import DivscopeError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DivscopeError(f"--meso-option {item!r}: write KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@click.command("featurize")
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
@click.option("--level", "-l", type=choice(["macro", "meso", "micro", "all"]), default="all",
              show_default=True, help="Which featurizer(s) to run.")
@click.option("--side", "-s", type=choice(["instruction", "response", "both"]), default="both",
              show_default=True, help="Which side of each sample to featurize.")
@cli_options(MicroSettings)
@cli_options(MacroSettings)
@cli_options(MesoSettings)
@click.option("--meso-option", "meso_options", multiple=True, metavar="KEY=VALUE",
              help="meso: an option of the tagger (repeatable; VALUE parsed as JSON if it can be).")
@click.option("--rebuild", is_flag=True, help="Ignore cached features and build again.")
@engine_options()
def featurize(ws: Path, level: str, side: str, meso_options: tuple[str, ...], rebuild: bool, engine: str,
              ray_address: str | None, ray_cpus: int | None, **settings: Any) -> None:
    """Compute the sample x type incidence of workspace WS for each LEVEL x SIDE (cached: a second run with
    the same options loads it without loading any model).

    \b
    macro  sentence embedding -> HDBSCAN cluster (one type per sample)
    meso   intent tags -> normalised tag clusters (several per sample)
    micro  mid-frequency token types of the target tokenizer (many per sample)
    """
    from divscope.backend import as_backend
    from divscope.features.featurize import featurize_result
    from divscope.features.settings import level_options
    from divscope.io.workspace import Workspace
    from divscope.ui import console, table

    eng = as_backend(engine, ray_address, ray_cpus)
    workspace = Workspace(ws)
    workspace.require_pool()
    levels = ["macro", "meso", "micro"] if level == "all" else [level]
    sides = ["instruction", "response"] if side == "both" else [side]
    chosen = {"micro": MicroSettings.from_cli(settings), "macro": MacroSettings.from_cli(settings),
              "meso": MesoSettings.from_cli({**settings, "options": _parse_kv(meso_options)})}
    rows = []
    for lv in levels:
        for sd in sides:
            res = featurize_result(workspace, lv, sd, rebuild=rebuild, engine=eng,
                                   **level_options(lv, chosen[lv]))
            inc = res.incidence
            tps = inc.types_per_sample()
            times = ", ".join(f"{k} {v:.1f}s" for k, v in res.times.items() if v >= 0.05) or "-"
            status = res.status if res.status != "rebuilt" else "rebuilt (damaged cache)"
            rows.append((lv, sd, inc.n_types, float(tps.mean()) if len(tps) else 0.0,
                         int((tps == 0).sum()), f"{sum(res.times.values()):.1f}", status))
            console.print(f"{sd}-{lv}: {inc.n_types:,} types, {status} ({times}) -> {res.path}")
    console.print(table("features", ["level", "side", "types", "types/sample", "typeless", "time s", "cache"],
                        rows))


@click.command("features")
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
def features_cmd(ws: Path) -> None:
    """List every feature build of workspace WS: level, side, cache key, the options that identify it, size, when
    it was built, and which is the latest. Where a level and side has several, `select` / `grid` need
    `--features KEY` (a unique prefix) or `--features OPTION=VALUE` to name the one they use."""
    from divscope.features.builds import feature_builds, features_rows
    from divscope.io.workspace import Workspace
    from divscope.ui import console, print_wide, table

    workspace = Workspace(ws)
    workspace.require_pool()
    builds = feature_builds(workspace)
    if not builds:
        console.print(f"no feature builds in {ws}: run `divscope featurize` first")
        return
    columns, rows = features_rows(builds)
    if console.is_terminal:
        print_wide(table(f"features: {len(builds)} builds in {ws}", columns, rows))
    else:  # one plain, tab-separated line per build (for grep and scripts)
        print("\t".join(columns))
        for row in rows:
            print("\t".join(str(v) for v in row))
