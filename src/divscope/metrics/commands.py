"""``divscope metrics FILE_OR_DIR``: the metric card of one subset, or the table of every subset of a grid."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import click

from divscope.errors import DivscopeError
from divscope.metrics.settings import MetricSettings
from divscope.settings import cli_options

SHORT = {"distinct_1": "d1", "distinct_2": "d2", "distinct_3": "d3", "mean_cosine_distance": "cos",
         "mean_tokens": "tok", "compression_ratio": "zlib", "self_bleu": "sBLEU", "token_entropy_bits": "H",
         "vendi": "vendi"}
SIDE_SHORT = {"instruction": "i", "response": "r"}
# printed per side in the directory table (metrics.csv / metrics.json have every main metric and coverage)
PRINTED = ("distinct_2", "mean_cosine_distance", "mean_tokens", "compression_ratio", "self_bleu",
           "token_entropy_bits", "vendi")


def _card_table(card: dict[str, Any], title: str) -> Any:
    from divscope.metrics.card import LEVELS, MAIN_METRICS, SIDES, latest_coverage
    from divscope.ui import table

    rows: list[list[Any]] = [[m, *(card[s].get(m) for s in SIDES)] for m in MAIN_METRICS]
    rows.append(["tokens / embeddings from", *(f"{card[s]['tokens_from']} / {card[s]['embeddings_from']}"
                                               for s in SIDES)])
    rows.append(["samples cos/vendi/bleu", *(f"{card[s]['cosine_sample']} / {card[s]['vendi_sample']} / "
                                                     f"{card[s]['bleu_sample']}" for s in SIDES)])
    cov = {s: latest_coverage(card[s]) for s in SIDES}
    for level in LEVELS:
        if any(level in cov[s] for s in SIDES):
            rows.append([f"{level} types covered", *(
                f"{cov[s][level]['covered']:,} / {cov[s][level]['types']:,} ({cov[s][level]['fraction']:.1%})"
                if level in cov[s] else "-" for s in SIDES)])
    return table(title, ["metric", *SIDES], rows)


def _none_blank(v: Any) -> Any:
    return "" if v is None else v


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    from divscope.store.atomic import atomic_open

    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_none_blank(r.get(c)) for c in columns])


def _directory(directory: Path, options: dict[str, Any], force: bool) -> None:
    from divscope.metrics.card import (
        SIDES,
        Resources,
        card_for_path,
        card_params,
        find_subsets,
        summary_columns,
        summary_row,
    )
    from divscope.store.atomic import write_json
    from divscope.ui import console, print_wide, table, track

    subsets = find_subsets(directory)
    if not subsets:
        raise DivscopeError(f"{directory}: no subset here (a subset is a file with FILE.manifest.json beside it)")
    params = card_params(**options)
    res = Resources()
    rows = []
    for path in track(subsets, "metrics"):
        card = card_for_path(path, force=force, resources=res, **options)
        rows.append(summary_row(card, path.relative_to(directory).as_posix()))
    columns = summary_columns(rows)
    _write_csv(directory / "metrics.csv", columns, rows)
    write_json(directory / "metrics.json", {"params": params, "columns": columns, "subsets": rows})
    print_wide(table(f"metrics: {directory}", ["subset", "strategy", "d", "N"] + [
        f"{SIDE_SHORT[s]}.{SHORT[m]}" for s in SIDES for m in PRINTED],
        (["-" if r.get(c) is None else r[c] for c in
          ["subset", "strategy", "diversity", "size"] + [f"{s}.{m}" for s in SIDES for m in PRINTED]]
         for r in rows)))
    plural = "s" if len(rows) != 1 else ""
    console.print(f"{len(rows)} subset{plural}; wrote {directory / 'metrics.csv'} and {directory / 'metrics.json'} "
                  f"(cards: FILE.metrics.json beside each subset)")


@click.command("metrics")
@click.argument("target", type=click.Path(path_type=Path))
@cli_options(MetricSettings)
@click.option("--force", is_flag=True, help="Recompute cards even when an up-to-date FILE.metrics.json exists.")
def metrics_cmd(target: Path, force: bool, **values: Any) -> None:
    """Metric card of the subset FILE (written to FILE.metrics.json), or of every subset under DIR (any depth;
    a subset is a file with FILE.manifest.json beside it), tabulated in DIR/metrics.csv and DIR/metrics.json.

    Per side (instruction, response): distinct-1/2/3, mean pairwise embedding cosine distance, mean length in
    target tokens, zlib compression ratio, Self-BLEU, token entropy, types covered at each cached level and
    the Vendi score. Sampled metrics use the given seed and sample sizes (see docs/metrics.md).
    """
    from divscope.metrics.card import card_for_path, metrics_path
    from divscope.ui import console

    options = MetricSettings.from_cli(values).model_dump()
    if not target.exists():
        raise DivscopeError(f"{target}: no such file or directory")
    from divscope.metrics.card import manifest_path

    if target.is_dir() and not manifest_path(target).is_file():  # an HF-format subset is a directory too
        _directory(target, options, force)
        return
    card = card_for_path(target, force=force, **options)
    sub = card.get("subset") or {}
    title = f"metrics: {target.name}  (n={card['n']:,}"
    if sub.get("strategy"):
        title += f", {sub['strategy']}, d={sub.get('diversity')}"
    console.print(_card_table(card, title + ")"))
    note = (card.get("source") or {}).get("note")
    if note:
        console.print(f"note: {note}")
    console.print(f"wrote {metrics_path(target)}")
