"""``divscope featurize``: build (or reuse) the incidence of each requested level x side.

Register in ``divscope/cli.py`` with ``cli.add_command(featurize)``. Only click is imported at module level;
models and numerical libraries load when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from divscope.backend import engine_options


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
@click.option("--level", "-l", type=click.Choice(["macro", "meso", "micro", "all"]), default="all",
              show_default=True, help="Which featurizer(s) to run.")
@click.option("--side", "-s", type=click.Choice(["instruction", "response", "both"]), default="both",
              show_default=True, help="Which side of each sample to featurize.")
@click.option("--tokenizer", default=None,
              help="micro: smollm2 (default, the target model's) | llama2 | llama3 | gpt2 | HF id | folder | "
                   "file.gguf")
@click.option("--unit", type=click.Choice(["tokens", "words"]), default=None,
              help="micro: tokenizer types (default) or whitespace words (paper ablation).")
@click.option("--lowercase", is_flag=True, default=None, help="micro: lowercase text first.")
@click.option("--low", type=int, default=None,
              help="micro: drop types with fewer occurrences (default: 10 x n/117000, at least 2).")
@click.option("--high", type=int, default=None,
              help="micro: drop types with more occurrences (default: 500 x n/117000, at least 5 x low).")
@click.option("--embedder", default=None, help="macro: minilm (default) | sentence-transformers folder | HF id.")
@click.option("--min-cluster-size", type=int, default=None,
              help="macro: HDBSCAN min_cluster_size (default max(5, round(sqrt(n)/10))).")
@click.option("--min-samples", type=int, default=None, help="macro: HDBSCAN min_samples (default 1).")
@click.option("--noise", type=click.Choice(["nearest", "own"]), default=None,
              help="macro: noise points join the nearest cluster (default) or form a type 'noise'.")
@click.option("--reduce", type=click.Choice(["auto", "pca", "none", "umap"]), default=None,
              help="macro: dimension reduction before HDBSCAN (auto: PCA-50 above 5,000 samples).")
@click.option("--seed", type=int, default=None, help="macro: seed of the PCA (default 0).")
@click.option("--tagger", default=None, help="meso: offline | endpoint (passed to the meso featurizer).")
@click.option("--meso-option", "meso_options", multiple=True, metavar="KEY=VALUE",
              help="meso: any option of the meso featurizer (repeatable; VALUE parsed as JSON if it can be).")
@click.option("--rebuild", is_flag=True, help="Ignore cached features and build again.")
@engine_options()
def featurize(ws: Path, level: str, side: str, tokenizer: str | None, unit: str | None, lowercase: bool | None,
              low: int | None, high: int | None, embedder: str | None, min_cluster_size: int | None,
              min_samples: int | None, noise: str | None, reduce: str | None, seed: int | None,
              tagger: str | None, meso_options: tuple[str, ...], rebuild: bool, engine: str,
              ray_address: str | None, ray_cpus: int | None) -> None:
    """Compute the sample x type incidence of workspace WS for each LEVEL x SIDE (cached: a second run with
    the same options loads it without loading any model).

    \b
    macro  sentence embedding -> HDBSCAN cluster (one type per sample)
    meso   intent tags -> normalised tag clusters (several per sample)
    micro  mid-frequency token types of the target tokenizer (many per sample)
    """
    from divscope.backend import as_backend
    from divscope.features.featurize import featurize_result
    from divscope.io.workspace import Workspace
    from divscope.ui import console, table

    eng = as_backend(engine, ray_address, ray_cpus)
    workspace = Workspace(ws)
    workspace.require_pool()
    levels = ["macro", "meso", "micro"] if level == "all" else [level]
    sides = ["instruction", "response"] if side == "both" else [side]
    per_level: dict[str, dict[str, Any]] = {
        "micro": {"tokenizer": tokenizer, "unit": unit, "lowercase": lowercase, "low": low, "high": high},
        "macro": {"embedder": embedder, "min_cluster_size": min_cluster_size, "min_samples": min_samples,
                  "noise": noise, "reduce": reduce, "seed": seed},
        "meso": {**({"tagger": tagger} if tagger else {}), **_parse_kv(meso_options)},
    }
    rows = []
    for lv in levels:
        for sd in sides:
            opts = {k: v for k, v in per_level[lv].items() if v is not None}
            res = featurize_result(workspace, lv, sd, rebuild=rebuild, engine=eng, **opts)
            inc = res.incidence
            tps = inc.types_per_sample()
            times = ", ".join(f"{k} {v:.1f}s" for k, v in res.times.items() if v >= 0.05) or "-"
            status = res.status if res.status != "rebuilt" else "rebuilt (damaged cache)"
            rows.append((lv, sd, inc.n_types, float(tps.mean()) if len(tps) else 0.0,
                         int((tps == 0).sum()), f"{sum(res.times.values()):.1f}", status))
            console.print(f"{sd}-{lv}: {inc.n_types:,} types, {status} ({times}) -> {res.path}")
    console.print(table("features", ["level", "side", "types", "types/sample", "typeless", "time s", "cache"],
                        rows))
