"""``report(DIR)``: one static HTML file, ``DIR/report.html``, from the outputs of ``analyze``.

Self-contained: inline CSS, figures embedded as base64 PNG data URIs, no script, no external URL. The only
links are relative ones to the CSV/JSON tables beside it in ``DIR/analysis/``. All text from the study
(names, commands, strategy names, metric names) is HTML-escaped. No date unless ``study.json`` gives one, so
the same results give the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from divscope._version import __version__
from divscope.analysis.analyze import OUT, analyze, is_current
from divscope.analysis.plots import score_label
from divscope.analysis.regression import PAPER_SIZE
from divscope.analysis.results import ANCHOR, load_results, load_study, slug
from divscope.store.atomic import atomic_open

REPORT = "report.html"
MAIN_METRICS = ("m.response.mean_tokens", "m.instruction.mean_tokens", "m.response.distinct_2",
                "m.instruction.distinct_2", "m.response.vendi", "m.instruction.vendi",
                "m.response.mean_cosine_distance", "m.response.self_bleu", "m.response.token_entropy_bits",
                "m.response.entropy", "m.response.types_micro", "m.instruction.types_micro")
MAX_MAIN = 8

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1300px;
       padding: 0 16px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 3px; margin-top: 32px; }
code, pre { background: #f4f4f4; border-radius: 3px; padding: 1px 4px; font-size: 0.9em; }
pre { padding: 8px; overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 4px 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f3f7; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.pos { color: #1a7f37; } .neg { color: #b42318; } .muted { color: #888; }
.scroll { max-height: 640px; overflow: auto; border: 1px solid #eee; display: inline-block; max-width: 100%; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.files a { margin-right: 10px; } .meta { color: #555; margin: 2px 0; }
nav a { margin-right: 12px; }
"""


def e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def num(v: Any, fmt: str | None = None) -> str:
    """A cell's text: ints with thousands separators, floats to 4 significant digits unless ``fmt``."""
    if v is None or v == "":
        return "\u2014"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return "\u2014"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if fmt is not None:
        return format(v, fmt)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return format(v, "#.4g").rstrip(".")


def html_table(columns: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1, scroll: bool = False) -> str:
    """``columns`` are escaped here; cells must already be HTML (escaped by the caller)."""
    head = "".join(f'<th class="l">{e(c)}</th>' if i < left else f"<th>{e(c)}</th>" for i, c in enumerate(columns))
    body = "\n".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                      for i, c in enumerate(r)) + "</tr>" for r in rows)
    t = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    return f'<div class="scroll">{t}</div>' if scroll else t


def _signed(v: Any, fmt: str = "+.2f") -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return e(num(v))
    cls = "pos" if v > 0 else "neg" if v < 0 else ""
    return f'<span class="{cls}">{e(format(v, fmt))}</span>'


def _files(*names: str) -> str:
    links = " ".join(f'<a href="{e(OUT)}/{e(n)}">{e(n)}</a>' for n in names)
    return f'<p class="files">Tables beside this report: {links}</p>'


def _img(path: Path, alt: str, caption: str) -> str:
    return img_png(path.read_bytes(), alt, caption)


def img_png(png: bytes, alt: str, caption: str) -> str:
    """A figure with ``png`` embedded as a base64 data URI (alt text and caption escaped)."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(alt)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def _load(out: Path, name: str) -> Any:
    return json.loads((out / name).read_text(encoding="utf-8"))


def _header(study: Path, info: Mapping[str, Any], summary: Mapping[str, Any], ablations: bool = False) -> str:
    name = info.get("name") or study.resolve().name
    parts = [f"<h1>divscope report: {e(name)}</h1>"]
    if info.get("command"):
        parts.append(f'<p class="meta">made by: <code>{e(info["command"])}</code></p>')
    if info.get("date"):
        parts.append(f'<p class="meta">date: {e(info["date"])}</p>')
    parts.append(f'<p class="meta">{summary["n_results"]:,} evaluated subsets; sizes: '
                 f'{e(", ".join(f"{s:,}" for s in summary["sizes"]))}; score metric(s): '
                 f'{e(", ".join(summary["metrics"]))}; strategies: {e(", ".join(summary["strategies"]))}</p>')
    if info.get("spec") is not None:
        spec = json.dumps(info["spec"], indent=2, sort_keys=True, ensure_ascii=False)
        parts.append(f"<details><summary>study spec</summary><pre>{e(spec)}</pre></details>")
    parts.append('<nav><a href="#slopes">slopes</a><a href="#figures">figures</a>'
                 '<a href="#correlations">correlations</a>'
                 + ('<a href="#ablations">ablations</a>' if ablations else "")
                 + '<a href="#best">best subsets</a>'
                 '<a href="#results">all subsets</a><a href="#notes">notes</a></nav>')
    return "\n".join(parts)


def _interval(lo: Any, hi: Any, fmt: str = "+.2f") -> str:
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return e("\u2014")
    return e(f"[{lo:{fmt}}, {hi:{fmt}}]")


def _anchor_line(baselines: Sequence[Mapping[str, Any]], metric: str) -> str:
    a = next((b for b in baselines if b["metric"] == metric and b["strategy"] == ANCHOR), None)
    if a is None:
        return ""
    return (f'<p class="meta">untrained model (base row): score <b>{e(num(a["mean"]))}</b>; every trained '
            "subset's score is read against it.</p>")


def _slopes(slopes: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
            baselines: Sequence[Mapping[str, Any]] = ()) -> str:
    parts = ['<h2 id="slopes">Performance against diversity level: slopes</h2>',
             "<p>Per strategy and size, the slope of score on the diversity level d (d = 0 least diverse, d = 1 "
             "most), in score units per unit of d, shown \u00d7100 (i.e. in units of 10<sup>\u22122</sup>, as "
             "the paper reports). One replicate per level (<i>ols</i>): the reference-prior posterior, a Student-t "
             "on n \u2212 2 degrees of freedom around the least-squares slope; several replicates "
             "(<i>mixedlm</i>): a random intercept and slope per replicate, t on replicates \u2212 1 df "
             "(<i>two-stage</i>: the labelled fallback, see the note). <b>sd</b> = the t's scale (the standard "
             "error); <b>90% interval</b> = central credible interval, which is also a 90% confidence interval; "
             "<b>P(slope&gt;0)</b> is calibrated: under no true slope it falls outside [0.025, 0.975] in 5% of "
             "studies. <b>high\u2212low</b> = score at the highest level minus the lowest, per replicate, mean "
             "and 90% interval (\u00d710<sup>\u22122</sup>).</p>"]
    has_paper = any(s["size"] == PAPER_SIZE for s in slopes)
    if has_paper:
        parts.append("<p>The paper's column is its Table's 10K slopes (\u00d710<sup>\u22122</sup>), measured "
                     "with its own model, judge and score scale: compare signs and ordering, not magnitudes.</p>")
    for metric in summary["metrics"]:
        block = [s for s in slopes if s["metric"] == metric]
        if not block:
            continue
        cols = ["strategy", "size", "model", "n", "levels", "reps", "slope \u00d710\u207b\u00b2",
                "sd \u00d710\u207b\u00b2", "90% interval", "P(slope>0)", "high\u2212low", "90% interval"]
        if has_paper:
            cols.append("paper 10K \u00d710\u207b\u00b2")
        cols.append("note")
        rows = []
        for s in block:
            r = [e(s["strategy"]), e(num(s["size"])), e(s["model"]), e(num(s["n"])), e(num(s["n_levels"])),
                 e(num(s["replicates"])), _signed(s["slope_x100"]), e(num(s["sd_x100"], ".2f")),
                 _interval(s["ci_low_x100"], s["ci_high_x100"]), e(num(s["p_positive"], ".3f")),
                 _signed(s["hilo_x100"]), _interval(s["hilo_low_x100"], s["hilo_high_x100"])]
            if has_paper:
                r.append(_signed(s["paper_x100"]) if s["paper_x100"] is not None else "")
            r.append(f'<span class="muted">{e(s["note"])}</span>')
            rows.append(r)
        parts.append(f"<h3>metric: {e(metric)} \u2014 {e(score_label(metric))}</h3>")
        parts.append(_anchor_line(baselines, metric))
        parts.append(html_table(cols, rows, left=1))
    parts.append(_files("slopes.csv", "slopes.json"))
    return "\n".join(parts)


def _figures(out: Path, summary: Mapping[str, Any]) -> str:
    parts = ['<h2 id="figures">Figures</h2>',
             "<p>Each panel: the evaluated subsets (dots), the fitted line and its 90% credible band (red), "
             "the random baseline of the same size, mean \u00b1 sd over seeds (grey band, dashed mean), and the "
             "untrained model's score (purple dotted line) when the study scored it. The second figure of a size "
             "puts the same scores against the types each subset actually covers on its strategy's axis (the "
             "measured diversity), so a level that bought no more types shows as a vertical stack; the third "
             "against each subset's Vendi score on the strategy's side (when metric cards were computed).</p>"]
    what_of = {"diversity_": "diversity level", "measured_": "types covered", "vendi_": "Vendi score"}
    for name in summary["figures"]:
        prefix = next((p for p in what_of if name.startswith(p)), None)
        if prefix is not None:
            what = what_of[prefix]
            parts.append(_img(out / "figures" / name, f"score against {what} ({name})", f"figures/{name}"))
    return "\n".join(parts)


def _paired(out: Path, summary: Mapping[str, Any]) -> str:
    """Arms at their most diverse level, ranked, and the paired differences (``divscope.analysis.paired``)."""
    if not (out / "paired_arms.json").is_file():
        return ""
    arms, contrasts = _load(out, "paired_arms.json"), _load(out, "paired_contrasts.json")
    if not arms and not contrasts:
        return ""
    parts = ['<h2 id="paired">Paired comparisons</h2>',
             "<p>Replicate r of every cell selects with seed s + 1000 r and trains with train.seed + 1000 r, and "
             "every cell is scored on the same prompts, so cells of one replicate are compared directly: a "
             "<b>contrast</b> is the mean of the per-replicate differences a − b, with its 90% interval (t on "
             "pairs − 1 df), the two-sided p of no difference and the <b>minimum detectable</b> difference "
             "(80% power, two-sided 5%, at the observed spread). <b>high−low</b>: a strategy's highest level "
             "minus its lowest (distinguishable: p &lt; 0.10). <b>arms</b>: every strategy at its highest level "
             "and every baseline, each pair once; with many pairs a pair is <b>distinguishable</b> only when its "
             "Holm-adjusted p is below 0.10. <b>vs base</b>: the arm's mean minus the untrained model's score, "
             "with the interval of the arm's replicates.</p>"]
    for metric in summary["metrics"]:
        for size in summary["sizes"]:
            a_rows = [a for a in arms if a["metric"] == metric and a["size"] == size]
            c_rows = [c for c in contrasts if c["metric"] == metric and c["size"] == size]
            if not a_rows and not c_rows:
                continue
            parts.append(f"<h3>metric: {e(metric)}, size {e(num(size))}</h3>")
            parts.append(html_table(
                ["rank", "arm", "d", "replicates", "mean score", "90% interval", "vs base", "90% interval"],
                [[e(num(a["rank"])), e(a["arm"]), e(num(a["diversity"], ".3f")), e(num(a["n"])),
                  e(num(a["mean"], ".4f")), _interval(a["ci_low"], a["ci_high"], "+.4f"), _signed(a["vs_anchor"], "+.4f"),
                  _interval(a["vs_anchor_low"], a["vs_anchor_high"], "+.4f")] for a in a_rows], left=2))
            parts.append(html_table(
                ["kind", "a − b", "pairs", "difference", "90% interval", "p", "Holm p", "distinguishable",
                 "min detectable"],
                [[e(c["kind"]), e(f"{c['a']} − {c['b']}"), e(num(c["n"])), _signed(c["diff"], "+.4f"),
                  _interval(c["ci_low"], c["ci_high"], "+.4f"), e(num(c["p"], ".3f")), e(num(c["p_holm"], ".3f")),
                  "yes" if c["distinguishable"] else "no", e(num(c["min_detectable"], ".4f"))] for c in c_rows],
                left=2))
            fig = f"paired_{slug(metric)}_{size}.png"
            if fig in summary["figures"]:
                parts.append(_img(out / "figures" / fig, f"paired differences ({metric}, size {size})",
                                  f"figures/{fig}"))
    parts.append(_files("paired_arms.csv", "paired_arms.json", "paired_contrasts.csv", "paired_contrasts.json"))
    return "\n".join(parts)


def _corr_row(c: Mapping[str, Any]) -> list[str]:
    return [e(c["column"]), e(num(c["n"])), _signed(c["pearson_r"], "+.3f"), e(num(c["pearson_p"], ".2g")),
            e(num(c["pearson_q"], ".2g")), _signed(c["spearman_rho"], "+.3f"), e(num(c["spearman_q"], ".2g")),
            _signed(c["partial_r"], "+.3f"), e(num(c["partial_q"], ".2g")), _signed(c["within_r"], "+.3f"),
            e(num(c["within_q"], ".2g")), f'<span class="muted">{e(c["note"])}</span>']


def _correlations(out: Path, corrs: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    parts = ['<h2 id="correlations">Post-hoc metrics against performance</h2>',
             "<p>Over all subsets of a score metric (baselines included, the untrained model not): Pearson r "
             "(two-sided p) and Spearman \u03c1, each with its Benjamini-Hochberg q over the metric columns "
             "tested (read q, not p: with ~26 columns a p &lt; 0.05 or two comes by chance); the <b>partial</b> r "
             "controlling for mean response length (a metric that only tracks length loses it); and the "
             "<b>within</b>-strategy r (score and metric centred in each strategy and size, so differences "
             "between strategies do not make it). Sorted by |r|. Micro type counts in different units (tokenizers, "
             "words) are never pooled: such a column is split by unit, <code>[unit]</code>.</p>"]
    for metric in summary["metrics"]:
        block = [c for c in corrs if c["metric"] == metric]
        if not block:
            continue
        parts.append(f"<h3>metric: {e(metric)}</h3>")
        parts.append(html_table(["metric column", "n", "Pearson r", "p", "q", "Spearman \u03c1", "q",
                             "partial r (length)", "q", "within r", "q", "note"], [_corr_row(c) for c in block]))
        fig = f"correlations_{slug(metric)}.png"
        if fig in summary["figures"]:
            parts.append(_img(out / "figures" / fig, f"correlations ({metric})", f"figures/{fig}"))
    parts.append(_files("correlations.csv", "correlations.json"))
    return "\n".join(parts)


def _best(best: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]]) -> str:
    parts = ['<h2 id="best">Best subsets</h2>',
             "<p>The highest-scoring subset overall and per strategy, next to the random baseline of the same "
             "size (\u0394 = score \u2212 random mean; z = \u0394 / random sd).</p>"]
    for metric, m in best.items():
        rows = []
        for ent in [m["overall"], *m["per_strategy"]]:
            rows.append([e(ent["scope"]), e(ent["strategy"]), e(num(ent["size"])), e(num(ent["diversity"], ".3f")),
                         e(num(ent["seed"])), e(num(ent["score"])), e(num(ent["random_mean"])),
                         e(num(ent["random_std"], ".3g")), _signed(ent["vs_random"], "+.4g"),
                         _signed(ent["z_vs_random"], "+.2f"), f"<code>{e(ent['cell'])}</code>"])
        parts.append(f"<h3>metric: {e(metric)}</h3>")
        parts.append(html_table(["scope", "strategy", "size", "d", "seed", "score", "random mean", "random sd",
                             "\u0394 vs random", "z", "cell"], rows, left=2))
    if baselines:
        rows = [[e(b["strategy"]), e(b["metric"]), e(num(b["size"])), e(num(b["n"])), e(num(b["mean"])),
                 e(num(b["std"], ".3g")), e(num(b["min"])), e(num(b["max"]))] for b in baselines]
        parts.append("<h3>baselines (no diversity level) and the untrained model (base)</h3>")
        parts.append(html_table(["baseline", "metric", "size", "runs", "mean", "sd", "min", "max"], rows, left=2))
    parts.append(_files("best.csv", "best.json", "baselines.csv", "baselines.json"))
    return "\n".join(parts)


def _results(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    main = [c for c in MAIN_METRICS if c in columns]
    main += [c for c in columns if c not in main][: max(0, MAX_MAIN - len(main))]
    main = main[:MAX_MAIN]
    parts = ['<h2 id="results">All evaluated subsets</h2>',
             "<p>One row per evaluated subset (and the untrained model, <i>base</i>). Mean response length (target tokens) sits next to the score so a "
             "reader sees whether length or diversity moved with the level. All metric columns are in "
             "results.csv.</p>"]
    cols = ["strategy", "size", "d", "replicate", "types covered", "metric", "score",
            *[c.removeprefix("m.") for c in main]]
    body = [[e(r["strategy"]), e(num(r["size"])), e(num(r["diversity"], ".3f")), e(num(r.get("replicate"))),
             e(num(r.get("types_covered"))), e(r["metric"]), e(num(r["score"])),
             *[e(num(r.get(c))) for c in main]] for r in rows]
    parts.append(html_table(cols, body, left=1, scroll=True))
    parts.append(_files("results.csv"))
    return "\n".join(parts)


def _x100(v: Any) -> str:
    return _signed(v) if isinstance(v, int | float) and not isinstance(v, bool) else e(num(v))


def _ablations(ab: Mapping[str, Any]) -> str:
    """The "Ablations and controls" section (divscope.analysis.ablations)."""
    parts = ['<h2 id="ablations">Ablations and controls</h2>',
             "<p>The base study and each variant (same training and evaluation; only the features or the selection "
             "differ, as listed). Score slopes are ×10<sup>−2</sup> per unit of d, the calibrated fit of the slopes "
             "table (sd = the t's scale, the 90% interval and P(slope&gt;0) on its df); "
             "<b>Δ length</b> is the fitted change of mean length (target tokens) from d = 0 to d = 1 "
             "over the same subsets: under length control it should be near 0, so a slope that survives it is not "
             "a length effect.</p>"]
    studies = ab.get("studies", [])
    if studies:
        parts.append(html_table(["study", "changes from the base", "description", "evaluated subsets"], [
            [e(s["name"]), f'<code>{e(s["changes"] or "-")}</code>', e(s["description"]), e(num(s["results"]))]
            for s in studies], left=3))
    if ab.get("slopes"):
        rows = [[e(s["study"]), e(s["strategy"]), e(num(s["size"])), e(s["metric"]), e(s.get("model") or ""),
                 e(num(s["n"])), e(num(s.get("replicates"))), _x100(s["slope_x100"]), e(num(s["sd_x100"], ".2f")),
                 _interval(s.get("ci_low_x100"), s.get("ci_high_x100")), e(num(s["p_positive"], ".3f")),
                 _signed(s["length_slope_response"], "+.1f"), _signed(s["length_slope_instruction"], "+.1f"),
                 e(num(s["mean_response_tokens"], ".1f")), e(s["unit"] or ""), e(s["tokenizer"] or ""),
                 e(num(s["low"])), e(num(s["high"])), e(num(s["types_mid"])), e(s["length_range"] or "-")]
                for s in ab["slopes"]]
        parts.append("<h3>Slopes per study</h3>")
        parts.append(html_table(["study", "strategy", "size", "metric", "model", "n", "reps", "slope ×10⁻²",
                             "sd ×10⁻²", "90% interval", "P(slope>0)", "Δ response tokens", "Δ instruction tokens",
                             "mean response tokens", "unit", "tokenizer", "low", "high", "types in band",
                             "length control"], rows, left=2, scroll=True))
    if ab.get("bands"):
        rows = [[e(b["study"]), e(b["strategy"]), e(b["unit"] or ""), e(b["tokenizer"] or ""),
                 e(num(b["vocab_size"])), e(num(b["low"])), e(num(b["high"])), e(num(b["types_below"])),
                 e(num(b["types_mid"])), e(num(b["types_above"])), e(num(b["samples_without_type"])),
                 e(num(b["mean_types_per_sample"], ".1f")), e(b["length_range"] or "-"), e(num(b["eligible"]))]
                for b in ab["bands"]]
        parts.append("<h3>Micro types per frequency band</h3>"
                     "<p>Token (or word) types of the pool side counted below <i>low</i>, inside [low, high] (the "
                     "types the engine selects on) and above <i>high</i> occurrences, per tokenizer / unit and band."
                     "</p>")
        parts.append(html_table(["study", "strategy", "unit", "tokenizer", "vocabulary", "low", "high", "below",
                             "in band", "above", "samples without type", "types per sample", "length control",
                             "eligible rows"], rows, left=2, scroll=True))
    if ab.get("predictors"):
        rows = [[e(c["metric"]), e(c["column"]), e(num(c["n"])), _signed(c["spearman_rho"], "+.3f"),
                 e(num(c["spearman_p"], ".2g")), _signed(c["pearson_r"], "+.3f"), e(num(c["pearson_p"], ".2g")),
                 e(f'{c["studies_same_sign"]}/{c["studies"]}'), f'<span class="muted">{e(c["note"])}</span>']
                for c in ab["predictors"]]
        parts.append('<h3 id="predictors">Cheap predictors: metrics known before training vs the score</h3>'
                     "<p>Every metric of the metric card is computed from the subset alone, before any training. "
                     "Over the subsets of all studies pooled (a subset shared by studies counts once): Spearman "
                     "ρ (how well the metric ranks subsets by the score training later measured) and Pearson "
                     "r, with two-sided p, and in how many studies the within-study ρ has the pooled sign. "
                     "Sorted by |ρ|: a metric near the top with a small p and a consistent sign is the one "
                     "to trust before paying for training.</p>")
        parts.append(html_table(["metric", "pre-training metric", "n", "Spearman ρ", "p", "Pearson r", "p",
                             "same sign in studies", "note"], rows, left=2, scroll=True))
    if ab.get("lengths"):
        rows = [[e(r["study"]), e(r["strategy"]), e(num(r["size"])), e(num(r["diversity"], ".3f")),
                 e(num(r["seed"])), e(r["metric"]), e(num(r["score"])), e(num(r["mean_response_tokens"], ".1f")),
                 e(num(r["mean_instruction_tokens"], ".1f")), e(num(r["types_covered"]))] for r in ab["lengths"]]
        parts.append("<h3>Mean length beside performance, every subset</h3>")
        parts.append(html_table(["study", "strategy", "size", "d", "seed", "metric", "score", "mean response tokens",
                             "mean instruction tokens", "types covered"], rows, left=2, scroll=True))
    for note in ab.get("notes", []):
        parts.append(f'<p class="muted">{e(note)}</p>')
    links = " ".join(f'<a href="ablations/{n}">{n}</a>' for n in ("ablations.json", "slopes.csv", "bands.csv",
                                                                   "predictors.csv", "lengths.csv"))
    parts.append(f'<p class="files">Tables beside this report: {links}</p>')
    return "\n".join(parts)


def render(study: str | Path, ablations: Mapping[str, Any] | None = None) -> str:
    """The report's HTML from ``study/analysis`` (which must exist) and ``study/study.json``.

    ``ablations``: the tables of ``divscope.analysis.ablations.build`` (computed here when the study has
    variants or length control and none are given)."""
    study = Path(study)
    if ablations is None:
        from divscope.analysis import ablations as ab_mod

        ablations = ab_mod.build(study) if ab_mod.has_ablations(study) else None
    out = study / OUT
    summary = _load(out, "summary.json")
    rows, _ = load_results(study)
    info = load_study(study)
    name = info.get("name") or study.resolve().name
    notes = summary.get("notes") or []
    note_html = ("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>") if notes else "<p>none</p>"
    baselines = _load(out, "baselines.json")
    body = [
        _header(study, info, summary, bool(ablations)),
        _slopes(_load(out, "slopes.json"), summary, baselines),
        _figures(out, summary),
        _paired(out, summary),
        _correlations(out, _load(out, "correlations.json"), summary),
        _ablations(ablations) if ablations else "",
        _best(_load(out, "best.json"), baselines),
        _results(rows, summary.get("metric_columns", [])),
        '<h2 id="notes">Notes</h2>', note_html,
        '<p class="meta">slopes: reference prior p(b0, b1, \u03c3\u00b2) \u221d 1/\u03c3\u00b2 (one replicate), '
        "statsmodels MixedLM with a random intercept and slope per replicate (replicates); intervals "
        f'{e(num(summary.get("interval_level", 0.9), ".0%"))}. Input fingerprint '
        f'<code>{e(summary["fingerprint"][:16])}</code>.</p>',
        f'<footer class="meta">divscope {e(__version__)} \u2014 static report, no script, no external resource.'
        "</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>divscope report: {e(name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def report(study: str | Path, force: bool = False) -> Path:
    """Write ``study/report.html`` (running ``analyze`` first when its outputs are missing or stale)."""
    study = Path(study)
    if force or not is_current(study):
        analyze(study)
    from divscope.analysis import ablations as ab_mod

    text = render(study, ab_mod.write(study) if ab_mod.has_ablations(study) else None)
    path = study / REPORT
    with atomic_open(path) as fh:
        fh.write(text)
    return path
