"""``compare(SUBSET... | GRID | STUDY)``: the metric cards of several subsets side by side, to choose one.

One row per subset (a pandas DataFrame): its strategy, level, size and seed from the manifest, every main
metric of its card per side (``divscope.metrics``: computed and cached in ``FILE.metrics.json`` exactly as
``divscope metrics`` does), the types covered at each cached level, the strategy's own coverage (the types
covered on the (side, level) it optimises, from its manifest: ``own_covered`` of ``own_types``), and the mean
length per side against the random subsets of the same size: ``<side>.tokens_vs_random`` (difference in target
tokens), ``_pct`` and ``<side>.length_flag``, raised when the difference exceeds ``length_tolerance`` of random's
mean and, where random has two seeds or more, ``length_sds`` of their standard deviations. A study folder (its
``results.jsonl`` beside ``subsets/``) adds the trained score of each subset as ``score.<metric>``.

``winners(df)`` names the best subset per measure (per size), ``render(df)`` prints terminal tables that fit the
console width (subsets as columns, measures as rows, stacked), ``render_html(df)`` writes a static page with
plots (the report's style and helpers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divscope.analysis.plots import LEVELS, SIDES
from divscope.analysis.results import RESULTS, load_results, load_study, strategy_rank
from divscope.analysis.settings import CompareSettings
from divscope.errors import DivscopeError
from divscope.features.settings import LEGACY_RUNTIME
from divscope.settings import parse

if TYPE_CHECKING:
    from divscope.metrics.card import Resources
    from divscope.metrics.settings import MetricSettings
# divscope.metrics (numpy, the workspace, the models, sacrebleu) is imported where cards are read, so that
# ``import divscope.analysis`` stays light

SIDE_SHORT = {"instruction": "i", "response": "r"}
LEVEL_SHORT = {"macro": "mac", "meso": "mes", "micro": "mic"}
STRATEGY_SHORT = {**{f"{s}-{lv}": f"{SIDE_SHORT[s]}.{LEVEL_SHORT[lv]}" for s in SIDES for lv in LEVELS},
                  "random": "rand", "k-center": "kc", "distance": "dist"}
# per-side card metrics: (name, short, meaning, better)
CARD_MEASURES = (
    ("distinct_1", "d1", "distinct-1: unique / total words (lowercased, within texts)", "high"),
    ("distinct_2", "d2", "distinct-2: unique / total word bigrams", "high"),
    ("distinct_3", "d3", "distinct-3: unique / total word trigrams", "high"),
    ("mean_cosine_distance", "cos", "mean pairwise cosine distance of sentence embeddings", "high"),
    ("mean_tokens", "tok", "mean length in target tokens (not a diversity measure: compared with random)", None),
    ("compression_ratio", "zlib", "zlib compressed / raw bytes (higher: less repetition)", "high"),
    ("self_bleu", "sBLEU", "Self-BLEU, 0-100 (lower: less overlap between texts)", "low"),
    ("token_entropy_bits", "H", "entropy of the token distribution, bits", "high"),
    ("vendi", "vendi", "Vendi score of the embeddings (effective number of distinct texts)", "high"),
)
TERMINAL = ("distinct_2", "mean_cosine_distance", "mean_tokens", "compression_ratio", "self_bleu",
            "token_entropy_bits", "vendi")  # the card metrics the terminal shows (the DataFrame has all)
BEST, FLAG = "*", "!"


@dataclass(frozen=True)
class Measure:
    """A column of the comparison: its DataFrame key, terminal label, legend text and which way is better."""

    key: str
    short: str
    meaning: str
    better: str | None  # "high", "low" or None (not ranked)
    kind: str = "num"  # num | pct (a fraction shown as %) | delta (signed tokens) | pct_delta
    terminal: bool = True


# ----------------------------------------------------------------------------------------------- inputs

def _subsets(target: Path) -> tuple[list[tuple[Path, str]], Path | None]:
    """(subset path, display name) of one argument, and the study folder it belongs to (or None)."""
    from divscope.metrics.card import find_subsets, manifest_path

    if not target.exists():
        raise DivscopeError(f"{target}: no such file or directory")
    if manifest_path(target).is_file():  # a subset file (or an HF-format subset directory)
        study = target.parent.parent.parent if (target.parent.parent.parent / RESULTS).is_file() else None
        return [(target, f"{target.parent.name}/{target.name}")], study
    if not target.is_dir():
        raise DivscopeError(f"{target}: no manifest beside it ({manifest_path(target).name}): compare reads the "
                            "strategy and rows of a subset from it; pass subsets written by divscope select / grid")
    study, base = None, target
    if (target / RESULTS).is_file() and (target / "subsets").is_dir():
        study, base = target, target / "subsets"
    elif target.name == "subsets" and (target.parent / RESULTS).is_file():
        study = target.parent
    found = find_subsets(base)
    if not found:
        raise DivscopeError(f"{target}: no subset here (a subset is a file with FILE.manifest.json beside it)")
    return [(p, p.relative_to(base).as_posix()) for p in found], study


def metric_settings(paths: Sequence[Path], given: dict[str, Any], study: Path | None) -> MetricSettings:
    """The card settings: those given; else the study's ``metrics:`` section; else the parameters the existing
    cards all share (so they are reused, not recomputed, and missing ones match them); else the defaults."""
    from divscope.metrics.card import metrics_path
    from divscope.metrics.settings import MetricSettings

    if given:
        return parse(MetricSettings, given)
    if study is not None:
        spec = load_study(study).get("spec") or {}
        if isinstance(spec, dict) and isinstance(spec.get("metrics"), dict):
            # a study.json written before runtimes existed ran its cards on torch
            return parse(MetricSettings, {"runtime": LEGACY_RUNTIME, **spec["metrics"]},
                         origin=f"{study}/study.json: metrics")
    import json

    seen = set()
    for p in paths:
        mp = metrics_path(p)
        if not mp.is_file():
            continue
        try:
            params = json.loads(mp.read_text(encoding="utf-8")).get("params") or {}
        except ValueError:
            return MetricSettings()
        shared = {k: params[k] for k in MetricSettings.model_fields if k in params}
        if params:  # a card records the runtime only when it is not torch (what ran before runtimes existed)
            shared["runtime"] = params.get("embed_runtime", LEGACY_RUNTIME)
        seen.add(tuple(sorted(shared.items())))
    if len(seen) == 1:
        try:
            return MetricSettings(**dict(next(iter(seen))))
        except ValueError:
            pass
    return MetricSettings()


def _own(manifest: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
    """The strategy's own axis and the types it covers there (manifest), of how many (the card's entry of that
    side and level that holds the same count, the latest first)."""
    from divscope.select.registry import get_strategy

    out: dict[str, Any] = {"own_axis": None, "own_covered": None, "own_types": None, "own_coverage": None}
    try:
        incidence = get_strategy(str(manifest.get("strategy"))).needs(**({"side": manifest["side"]} if "side" in
                                                                         manifest else {})).incidence
    except (DivscopeError, KeyError, TypeError):
        incidence = None
    if not incidence:
        return out
    side, level = incidence
    covered = manifest.get("types_covered")
    out["own_axis"] = f"{side}-{level}"
    if not isinstance(covered, int):
        return out
    out["own_covered"] = covered
    entries = [e for e in (card.get(side) or {}).get("types_covered") or [] if e.get("level") == level]
    entries.sort(key=lambda e: not e.get("latest"))
    match = next((e for e in entries if e.get("covered") == covered), None)
    if match is not None and match.get("types"):
        out["own_types"] = match["types"]
        out["own_coverage"] = covered / match["types"]
    return out


def _scores(study: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """cell -> {metric: score} of a study, and the untrained model's score per metric."""
    from divscope.analysis.results import ANCHOR

    rows, _ = load_results(study)
    by_cell: dict[str, dict[str, float]] = {}
    anchor: dict[str, float] = {}
    for r in rows:
        if r["strategy"] == ANCHOR:
            anchor[r["metric"]] = r["score"]
        else:
            by_cell.setdefault(r["cell"], {})[r["metric"]] = r["score"]
    return by_cell, anchor


# ----------------------------------------------------------------------------------------------- the table

def compare(targets: str | Path | Iterable[str | Path], *, force: bool = False,
            resources: Resources | None = None, length_tolerance: float | None = None,
            length_sds: float | None = None, **metric_settings_: Any) -> Any:
    """A pandas DataFrame with one row per subset of ``targets`` (subset files, grid folders or a study folder),
    in strategy order (see the module docstring for the columns). ``metric_settings_``: ``MetricSettings``
    fields for the cards (default: see :func:`metric_settings`). ``df.attrs`` holds ``random`` (per size and side:
    mean, sd and n of the random subsets' mean tokens), ``anchor`` (the untrained model's scores), ``settings``."""
    from divscope.metrics.card import Resources, card_for_path, read_manifest, summary_row

    given = {k: v for k, v in metric_settings_.items() if v is not None}
    cs = parse(CompareSettings, {k: v for k, v in {"length_tolerance": length_tolerance,
                                                   "length_sds": length_sds}.items() if v is not None})
    items: list[tuple[Path, str]] = []
    studies: list[Path] = []
    for t in [targets] if isinstance(targets, str | Path) else list(targets):
        found, study = _subsets(Path(t))
        items += found
        if study is not None and study.resolve() not in [s.resolve() for s in studies]:
            studies.append(study)
    if not items:
        raise DivscopeError("nothing to compare: give subset files, a grid folder or a study folder")
    unique: dict[Path, tuple[Path, str]] = {}
    for p, n in items:  # a subset given twice counts once
        unique.setdefault(p.resolve(), (p, n))
    items = list(unique.values())
    names = [n for _, n in items]
    if len(set(names)) != len(names):  # the same relative name from two folders: show full paths
        items = [(p, str(p)) for p, _ in items]
    ms = metric_settings([p for p, _ in items], given, studies[0] if len(studies) == 1 else None)
    scores: dict[str, dict[str, float]] = {}
    anchor: dict[str, float] = {}
    for study in studies:
        s, a = _scores(study)
        scores |= s
        anchor |= a
    from divscope.ui import track

    res = resources or Resources()
    rows = []
    for path, name in track(items, "compare"):
        card = card_for_path(path, force=force, resources=res, **ms.model_dump())
        manifest = read_manifest(path) or {}
        row = summary_row(card, name)
        row["replicate"] = manifest.get("replicate")
        row |= _own(manifest, card)
        cell = f"{manifest.get('strategy')}/{Path(str(manifest.get('file') or path.name)).stem}"
        for metric, score in sorted(scores.get(cell, {}).items()):
            row[f"score.{metric}"] = score
        row["path"] = str(path)
        rows.append(row)
    return frame(rows, cs, anchor=anchor, settings=ms.model_dump(), studies=[str(s) for s in studies])


def frame(rows: list[dict[str, Any]], cs: CompareSettings | None = None, *, anchor: dict[str, float] | None = None,
          settings: dict[str, Any] | None = None, studies: Sequence[str] = ()) -> Any:
    """The DataFrame of :func:`compare` from its rows (``metrics.card.summary_row`` of each card plus
    ``replicate``, the own-coverage columns and ``score.<metric>``): sorted in strategy order, lengths compared
    with random (``cs``: ``CompareSettings``, default its defaults)."""
    import pandas as pd

    cs = cs or CompareSettings()
    rows = sorted((dict(r) for r in rows), key=lambda r: (
        strategy_rank(str(r["strategy"])), r["size"] or 0, -1.0 if r["diversity"] is None else r["diversity"],
        r.get("seed") or 0, r.get("replicate") or 0, r["subset"]))
    for r in rows:
        for k in ("seed", "replicate", "k", "own_axis", "own_covered", "own_types", "own_coverage"):
            r.setdefault(k, None)
    random = _length_flags(rows, cs)
    df = pd.DataFrame(rows)
    first = ["subset", "strategy", "diversity", "size", "seed", "replicate", "k", "n", "own_axis", "own_covered",
             "own_types", "own_coverage"]
    df = df[first + sorted(c for c in df.columns if c.startswith("score."))
            + [c for c in df.columns if c not in first and not c.startswith("score.")]]
    df.attrs.update(random=random, anchor=dict(anchor or {}), settings={**(settings or {}), **cs.model_dump()},
                    studies=list(studies))
    return df


def _length_flags(rows: list[dict[str, Any]], cs: CompareSettings) -> dict[str, dict[str, dict[str, Any]]]:
    """Adds ``<side>.random_tokens``, ``.tokens_vs_random``, ``.tokens_vs_random_pct`` and ``.length_flag`` to
    every row; returns the random reference per size and side."""
    random: dict[str, dict[str, dict[str, Any]]] = {}
    for size in sorted({r["size"] for r in rows}):
        for side in SIDES:
            vals = [r[f"{side}.mean_tokens"] for r in rows if r["strategy"] == "random" and r["size"] == size
                    and _finite(r.get(f"{side}.mean_tokens"))]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
            random.setdefault(str(size), {})[side] = {"mean": mean, "sd": sd, "n": len(vals)}
    for r in rows:
        for side in SIDES:
            ref = random.get(str(r["size"]), {}).get(side)
            tok = r.get(f"{side}.mean_tokens")
            if ref is None or not _finite(tok) or not ref["mean"]:
                r.update({f"{side}.random_tokens": None, f"{side}.tokens_vs_random": None,
                          f"{side}.tokens_vs_random_pct": None, f"{side}.length_flag": None})
                continue
            delta = tok - ref["mean"]
            flag = abs(delta) > cs.length_tolerance * ref["mean"]
            if ref["sd"] is not None:
                flag = flag and abs(delta) > cs.length_sds * ref["sd"]
            r.update({f"{side}.random_tokens": ref["mean"], f"{side}.tokens_vs_random": delta,
                      f"{side}.tokens_vs_random_pct": delta / ref["mean"], f"{side}.length_flag": bool(flag)})
    return random


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def records(df: Any) -> list[dict[str, Any]]:
    """The rows of ``df`` as dicts of Python values, missing ones (pandas' NaN) as None."""
    return [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in df.to_dict("records")]


def measures(df: Any) -> list[Measure]:
    """The measures of ``df`` in display order: scores, own coverage, each side's card metrics with its length
    against random, then types covered per side and level."""
    cols = set(df.columns)
    out = []
    scores = sorted(c for c in cols if c.startswith("score."))
    for i, c in enumerate(scores):
        short = "score" if len(scores) == 1 else f"score{i + 1}"
        out.append(Measure(c, short, f"trained score, {c.removeprefix('score.')} (higher is better)", "high"))
    if df["own_axis"].notna().any():
        out.append(Measure("own_coverage", "own cov", "types covered on the strategy's own (side, level), of the "
                           "types there (not ranked: levels differ)", None, "pct"))
    for side in ("response", "instruction"):
        s = SIDE_SHORT[side]
        for name, short, meaning, better in CARD_MEASURES:
            key = f"{side}.{name}"
            if key not in cols:
                continue
            out.append(Measure(key, f"{s}.{short}", f"{side}: {meaning}", better, terminal=name in TERMINAL))
            if name == "mean_tokens" and df[f"{side}.tokens_vs_random"].notna().any():
                out.append(Measure(f"{side}.tokens_vs_random", f"{s}.\u0394tok", f"{side}: mean tokens minus the "
                                   "random subsets' mean of the same size", None, "delta"))
    for side in ("response", "instruction"):
        for level in LEVELS:
            key = f"{side}.{level}_coverage"
            if key in cols and df[key].notna().any():
                out.append(Measure(key, f"{SIDE_SHORT[side]}.cov.{LEVEL_SHORT[level]}", f"{side}: share of the "
                                   f"{level} types (latest cached features) the subset covers", "high", "pct"))
    return out


def _best_rows(values: list[Any], better: str) -> list[int]:
    ok = [(i, float(v)) for i, v in enumerate(values) if _finite(v)]
    if not ok:
        return []
    best = max(v for _, v in ok) if better == "high" else min(v for _, v in ok)
    return [i for i, v in ok if v == best]


def best_mask(df: Any) -> dict[str, set[int]]:
    """measure key -> positions (rows of ``df``) holding the best value of that measure among subsets of the
    same size (ties: all of them)."""
    out: dict[str, set[int]] = {}
    sizes = df["size"].tolist()
    for m in measures(df):
        if m.better is None:
            continue
        vals = df[m.key].tolist()
        marked: set[int] = set()
        for size in sorted(set(sizes)):
            idx = [i for i, s in enumerate(sizes) if s == size]
            marked |= {idx[j] for j in _best_rows([vals[i] for i in idx], m.better)}
        out[m.key] = marked
    return out


def winners(df: Any) -> Any:
    """One row per ranked measure (and size): the best subset(s), the value, and the random subsets' mean."""
    import pandas as pd

    rows = []
    for m in measures(df):
        if m.better is None:
            continue
        for size in sorted(set(df["size"].tolist())):
            sub = df[df["size"] == size]
            vals = sub[m.key].tolist()
            best = _best_rows(vals, m.better)
            if not best:
                continue
            rand = [float(v) for v, s in zip(vals, sub["strategy"].tolist(), strict=True)
                    if s == "random" and _finite(v)]
            names = [sub["subset"].iloc[i] for i in best]
            rows.append({"measure": m.key, "short": m.short, "size": size, "better": m.better,
                         "winner": names[0], "tied": names[1:], "strategy": sub["strategy"].iloc[best[0]],
                         "value": float(vals[best[0]]),
                         "random_mean": sum(rand) / len(rand) if rand else None})
    return pd.DataFrame(rows, columns=["measure", "short", "size", "better", "winner", "tied", "strategy",
                                       "value", "random_mean"])


# ----------------------------------------------------------------------------------------------- terminal

def fmt_value(v: Any, kind: str = "num") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "\u2014"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "delta":
        return f"{v:+.0f}" if abs(v) >= 10 else f"{v:+.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    v = float(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return format(v, ".4g")


def _label_lines(df: Any) -> list[str]:
    """A compact header per subset: strategy abbreviation, level, then seed / size / replicate where they vary."""
    vary = {k: df[k].nunique(dropna=False) > 1 for k in ("seed", "size", "replicate")}
    out = []
    for r in df.itertuples(index=False):
        lines = [STRATEGY_SHORT.get(r.strategy, str(r.strategy)),
                 "\u2014" if r.diversity is None or r.diversity != r.diversity else f"d{r.diversity:.2f}".replace(
                     "d0.", "d.").replace("d1.00", "d1")]
        if vary["seed"]:
            lines.append(f"s{r.seed}")
        if vary["size"]:
            lines.append(f"n{r.size}")
        if vary["replicate"] and r.replicate == r.replicate and r.replicate is not None:
            lines.append(f"r{int(r.replicate)}")
        out.append("\n".join(lines))
    return out


def _cells(df: Any) -> tuple[list[Measure], list[list[tuple[str, str]]]]:
    """Terminal measures and, per measure, per subset: (text, style)."""
    best = best_mask(df)
    shown = [m for m in measures(df) if m.terminal]
    grid = []
    for m in shown:
        vals = df[m.key].tolist()
        flags = df[m.key.replace(".tokens_vs_random", ".length_flag").replace(".mean_tokens", ".length_flag")]\
            .tolist() if m.key.endswith((".mean_tokens", ".tokens_vs_random")) else [None] * len(vals)
        row = []
        for i, v in enumerate(vals):
            text, style = fmt_value(v, m.kind), ""
            if i in best.get(m.key, ()):
                text, style = text + BEST, "bold green"
            if flags[i] is True:
                text, style = text + FLAG, "bold red"
            row.append((text, style))
        grid.append(row)
    return shown, grid


def legend(df: Any, terminal: bool = True) -> list[tuple[str, str]]:
    """(abbreviation, meaning) for every abbreviation the tables use (the terminal's, or all of them)."""
    cs = df.attrs.get("settings") or {}
    ms = [m for m in measures(df) if m.terminal or not terminal]
    out: dict[str, str] = {}
    if any(m.short[:2] in ("r.", "i.") for m in ms):
        out["r. / i."] = "response / instruction side (a measure of that side of every record)"
    for m in ms:
        side_prefixed = m.short[:2] in ("r.", "i.")
        key = m.short[2:] if side_prefixed else m.short
        text = m.meaning.partition(": ")[2] if side_prefixed else m.meaning
        out.setdefault(key, text + {"high": " [higher is better]", "low": " [lower is better]"}.get(m.better or "",
                                                                                                 ""))
    used = sorted(set(df["strategy"].tolist()), key=strategy_rank)
    out |= {STRATEGY_SHORT[s]: s for s in used if s in STRATEGY_SHORT}
    out |= {"d.50, d1, \u2014": "diversity level d of the subset (\u2014: a baseline, no level)",
            "s<seed> n<size> r<rep>": "selection seed, size and replicate (shown where they vary)",
            BEST: "best value of the row among subsets of the same size (the winner; ties all marked)",
            FLAG: f"length flag: mean tokens differ from the random subsets' mean by more than "
                  f"{cs.get('length_tolerance', 0.1):.0%} of it and, with 2+ random seeds, by more than "
                  f"{cs.get('length_sds', 2.0):g} sd of them",
            "\u2014 (value)": "not available (no random subset, no cached features, or not evaluated)"}
    return list(out.items())


def render(df: Any, console: Any = None) -> None:
    """Print the comparison on ``console`` (default: divscope's): stacked tables of at most the console's width
    (measures as rows, subsets as columns), the winner per measure, the length flags and a legend."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    if console is None:
        from divscope.ui import console
    width = console.width
    labels = _label_lines(df)
    shown, grid = _cells(df)

    def block(cols: list[int], title: str | None) -> Table:
        t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, collapse_padding=True)
        t.add_column("measure", justify="left", no_wrap=True, style="bold")
        for j in cols:
            t.add_column(labels[j], justify="right", no_wrap=True)
        for m, row in zip(shown, grid, strict=True):
            t.add_row(m.short, *(Text(row[j][0], style=row[j][1]) for j in cols))
        return t

    def fits(cols: list[int]) -> bool:
        t = block(cols, None)
        return Measurement.get(console, console.options.update(width=100_000), t).maximum <= width

    chunks: list[list[int]] = []
    cur: list[int] = []
    for j in range(len(df)):
        if cur and not fits(cur + [j]):
            chunks.append(cur)
            cur = []
        cur.append(j)
    if cur:
        chunks.append(cur)
    n = len(df)
    for k, cols in enumerate(chunks):
        title = (f"compare: {n} subsets" + (f" ({k + 1}/{len(chunks)}: subsets {cols[0] + 1}-{cols[-1] + 1})"
                                            if len(chunks) > 1 else ""))
        console.print(block(cols, title))
    w = winners(df)
    w = w[w["measure"].isin([m.key for m in shown])]
    if len(w):
        multi = w["size"].nunique() > 1
        t = Table(box=box.SIMPLE_HEAD, title="winner per measure (* in the tables)", title_justify="left",
                  pad_edge=False)
        for c in ["measure", *(["size"] if multi else []), "better", "winner", "value", "random"]:
            t.add_column(c, justify="left" if c in ("measure", "winner", "better") else "right",
                         no_wrap=c != "winner", overflow="fold")
        kinds = {m.key: m.kind for m in measures(df)}
        for r in w.itertuples(index=False):
            name = r.winner + (f" (+{len(r.tied)} tied)" if r.tied else "")
            t.add_row(r.short, *([str(r.size)] if multi else []), r.better, name, fmt_value(r.value, kinds[r.measure]),
                      fmt_value(r.random_mean, kinds[r.measure]))
        console.print(t)
    for line in length_notes(df):
        console.print(Text(line), soft_wrap=False)
    anchor = df.attrs.get("anchor") or {}
    for metric, v in sorted(anchor.items()):
        console.print(Text(f"untrained model ({metric}): {fmt_value(v)}"), soft_wrap=False)
    t = Table.grid(padding=(0, 2))
    t.add_column(no_wrap=True, style="bold")
    t.add_column(overflow="fold")
    for a, b in legend(df):
        t.add_row(a, b)
    console.print(Text("legend", style="bold"))
    console.print(t)


def length_notes(df: Any) -> list[str]:
    """One line per flagged (subset, side), or one line saying none is flagged (or why lengths are unchecked)."""
    random = df.attrs.get("random") or {}
    if not random:
        return ["lengths not compared: no random subset among the inputs (add the grid's random/ subsets)"]
    out = []
    for r in records(df):
        for side in SIDES:
            if r.get(f"{side}.length_flag") is True:
                ref = random[str(r["size"])][side]
                spread = f" \u00b1 {ref['sd']:.1f} sd" if ref["sd"] is not None else ""
                out.append(f"length flag: {r['subset']}: {side} {r[f'{side}.mean_tokens']:.1f} tokens vs random "
                           f"{ref['mean']:.1f}{spread} ({ref['n']} subset{'s' if ref['n'] != 1 else ''}): "
                           f"{r[f'{side}.tokens_vs_random']:+.1f} ({r[f'{side}.tokens_vs_random_pct']:+.0%})")
    return out or ["length flags: none (every subset's mean tokens are within the tolerance of random's)"]


# ----------------------------------------------------------------------------------------------- html

PLOTTED = ("response.vendi", "instruction.vendi", "response.distinct_2", "instruction.distinct_2",
           "response.mean_cosine_distance", "response.self_bleu", "response.mean_tokens", "instruction.mean_tokens",
           "own_coverage")


def render_html(df: Any, title: str = "divscope compare") -> str:
    """The comparison as one static page: legend, the table (subsets as rows; best cells green with *, flagged
    lengths red with !), winners, length flags and two figures (measures against d; lengths against random)."""
    from divscope._version import __version__
    from divscope.analysis import plots
    from divscope.analysis.report import CSS, e, html_table, img_png

    ms = measures(df)
    best = best_mask(df)
    cols = ["subset", "strategy", "d", "size", "seed", *[m.short for m in ms]]
    body = []
    for i, r in enumerate(records(df)):
        cells = [e(r["subset"]), e(r["strategy"]), e(fmt_value(r["diversity"])), e(fmt_value(r["size"])),
                 e(fmt_value(r["seed"]))]
        for m in ms:
            text = e(fmt_value(r.get(m.key), m.kind))
            flag_key = m.key.replace(".tokens_vs_random", ".length_flag").replace(".mean_tokens", ".length_flag")
            if i in best.get(m.key, ()):
                text = f'<span class="best">{text}{BEST}</span>'
            if flag_key != m.key and r.get(flag_key) is True:
                text = f'<span class="flag">{text}{FLAG}</span>'
            cells.append(text)
        body.append(cells)
    w = winners(df)
    kinds = {m.key: m.kind for m in ms}
    wrows = [[e(r.short), e(r.winner) + (e(f" (+{len(r.tied)} tied)") if r.tied else ""), e(fmt_value(r.size)),
              e(r.better), e(fmt_value(r.value, kinds[r.measure])), e(fmt_value(r.random_mean, kinds[r.measure]))]
             for r in w.itertuples(index=False)]
    leg = [[f"<b>{e(a)}</b>", e(b)] for a, b in legend(df, terminal=False)]
    rows = records(df)
    plotted = [(k, next(m.short for m in ms if m.key == k)) for k in PLOTTED if k in {m.key for m in ms}]
    plotted = [(m.key, m.short) for m in ms if m.key.startswith("score.")] + plotted
    fig1 = plots.compare_figure(rows, plotted, "measures against diversity level (random: grey band)")
    random = df.attrs.get("random") or {}
    ref = random.get(str(rows[0]["size"])) if rows else None
    panels = [(side, [r.get(f"{side}.mean_tokens") for r in rows], [r.get(f"{side}.length_flag") is True
                                                                     for r in rows], (ref or {}).get(side))
              for side in ("response", "instruction")]
    fig2 = plots.lengths_figure([r["subset"] for r in rows], panels, "mean length per subset (grey: random mean "
                                "\u00b1 sd)")
    notes = "".join(f"<li>{e(n)}</li>" for n in length_notes(df))
    anchor = df.attrs.get("anchor") or {}
    cs = df.attrs.get("settings") or {}
    parts = [
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{len(df)} subsets; sizes: {e(", ".join(str(s) for s in sorted(set(df["size"]))))}'
        + (f'; trained scores from {e(", ".join(df.attrs.get("studies") or []))}' if df.attrs.get("studies")
           else "") + "</p>",
        '<nav><a href="#table">table</a><a href="#winners">winners</a><a href="#lengths">lengths</a>'
        '<a href="#figures">figures</a><a href="#legend">legend</a></nav>',
        '<h2 id="table">Subsets</h2>',
        "<p>One row per subset. <span class=\"best\">green *</span>: best of its column among subsets of the same "
        "size; <span class=\"flag\">red !</span>: length flagged against random (see the legend).</p>",
        html_table(cols, body, left=2, scroll=True),
        '<h2 id="winners">Winner per measure</h2>',
        html_table(["measure", "winner", "size", "better", "value", "random mean"], wrows, left=2),
        '<h2 id="lengths">Lengths against random</h2>', f"<ul>{notes}</ul>",
        *(f'<p class="meta">untrained model ({e(k)}): {e(fmt_value(v))}</p>' for k, v in sorted(anchor.items())),
        '<h2 id="figures">Figures</h2>',
        img_png(fig1, "measures against diversity level", "each strategy's subsets against d; random's mean \u00b1 "
                "sd as a grey band; other baselines as horizontal lines"),
        img_png(fig2, "mean length per subset", "mean target tokens per subset and side; red: flagged"),
        '<h2 id="legend">Legend</h2>', html_table(["abbreviation", "meaning"], leg, left=2),
        f'<p class="meta">card settings: <code>{e(", ".join(f"{k}={v}" for k, v in sorted(cs.items())))}</code></p>',
        f'<footer class="meta">divscope {e(__version__)} \u2014 static page, no script, no external resource.'
        "</footer>",
    ]
    css = CSS + ".best { color: #1a7f37; font-weight: bold; } .flag { color: #b42318; font-weight: bold; }\n"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{e(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n" + "\n".join(parts)
            + "\n</body>\n</html>\n")


def write_html(df: Any, path: str | Path, title: str = "divscope compare") -> Path:
    from divscope.store.atomic import atomic_open

    path = Path(path)
    with atomic_open(path) as fh:
        fh.write(render_html(df, title))
    return path
