"""``divscope compare``: the winner per measure, length flags against random, terminal tables that fit 100 columns,
the DataFrame against the metric cards, trained scores of a study, and the HTML page.

The first tests feed the table builder (``compare.frame``) rows in the shape of ``metrics.card.summary_row`` with
values chosen by hand, so the right answer is known; the slow ones run on the real nine-strategy grid of the
``compare_grid`` fixture (tests/conftest.py)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import divscope
from divscope.analysis.compare import (
    STRATEGY_SHORT,
    best_mask,
    compare,
    frame,
    records,
    render,
    render_html,
    winners,
)
from divscope.analysis.settings import CompareSettings
from divscope.cli import main
from divscope.errors import DivscopeError
from divscope.metrics.card import LEVELS, MAIN_METRICS, SIDES, manifest_path, metrics_path

pytestmark = pytest.mark.usefixtures("divscope_cache")
BASE = {"distinct_1": 0.3, "distinct_2": 0.7, "distinct_3": 0.9, "mean_cosine_distance": 0.9, "mean_tokens": 200.0,
        "compression_ratio": 0.35, "self_bleu": 20.0, "token_entropy_bits": 8.5, "vendi": 18.0}


def row(name: str, strategy: str, d: float | None = None, size: int = 24, seed: int = 0,
        **values: float) -> dict[str, Any]:
    """A row as ``compare`` builds it from a card; ``values``: ``<side>__<metric>`` overrides (``r_vendi``)."""
    r: dict[str, Any] = {"subset": name, "strategy": strategy, "diversity": d, "size": size, "seed": seed, "k": None,
                         "n": size}
    for side in SIDES:
        for m in MAIN_METRICS:
            r[f"{side}.{m}"] = BASE[m]
        for level in LEVELS:
            r[f"{side}.{level}_covered"] = 10
            r[f"{side}.{level}_coverage"] = 0.5
    for k, v in values.items():
        side, _, metric = k.partition("__")
        r[f"{ {'r': 'response', 'i': 'instruction'}[side]}.{metric}"] = v
    return r


def nine(seeds: int = 3) -> list[dict[str, Any]]:
    """A grid's rows: six strategies x three levels, and the baselines with ``seeds`` seeds each."""
    rows = [row(f"{s}/n24-d{d:.3f}-s0.jsonl", s, d, r__vendi=10 + 10 * d + i, i__self_bleu=30 - i - 10 * d)
            for i, s in enumerate(f"{side}-{lv}" for side in SIDES for lv in LEVELS) for d in (0.0, 0.5, 1.0)]
    rows += [row(f"{b}/n24-s{k}.jsonl", b, None, seed=k) for b in ("random", "k-center", "distance")
             for k in range(seeds)]
    return rows


# ----------------------------------------------------------------------------------------------- by hand

def test_winner_per_measure_is_the_best_subset_in_the_right_direction() -> None:
    rows = [row("a", "response-micro", 1.0, r__vendi=25.0, r__self_bleu=35.0, i__distinct_2=0.60),
            row("b", "response-macro", 1.0, r__vendi=19.0, r__self_bleu=9.0, i__distinct_2=0.95),
            row("c", "random", None, r__vendi=21.0, r__self_bleu=20.0, i__distinct_2=0.80)]
    df = frame(rows)
    w = winners(df).set_index("measure")
    assert w.loc["response.vendi", "winner"] == "a" and w.loc["response.vendi", "better"] == "high"
    assert w.loc["response.self_bleu", "winner"] == "b" and w.loc["response.self_bleu", "better"] == "low"
    assert w.loc["instruction.distinct_2", "winner"] == "b"
    assert w.loc["response.vendi", "random_mean"] == 21.0
    assert "response.mean_tokens" not in w.index  # length is compared with random, never ranked
    # all equal: the first in strategy order (response-macro before response-micro) wins, the others tie
    assert w.loc["response.distinct_1", "winner"] == "b" and w.loc["response.distinct_1", "tied"] == ["a", "c"]
    pos = {n: i for i, n in enumerate(df["subset"])}
    best = best_mask(df)
    assert best["response.vendi"] == {pos["a"]} and best["response.self_bleu"] == {pos["b"]}

    # the terminal table marks exactly those cells
    out = _render(df)
    lines: dict[str, list[str]] = {}
    for ln in out.splitlines():  # the measure rows (the winners table, further down, repeats the labels)
        if ln.startswith((" r.", " i.")) and not ln.startswith("  "):
            lines.setdefault(ln.split()[0], ln.split()[1:])
    header = next(ln for ln in out.splitlines() if "r.mac" in ln).split()
    assert header == ["r.mac", "r.mic", "rand"]  # strategy order: response-macro, response-micro, random
    assert lines["r.vendi"] == ["19", "25*", "21"]
    assert lines["r.sBLEU"] == ["9*", "35", "20"]
    assert lines["i.d2"] == ["0.95*", "0.6", "0.8"]


def test_winners_are_per_size() -> None:
    rows = [row("big", "random", None, size=48, r__vendi=30.0), row("small-a", "random", None, r__vendi=12.0),
            row("small-b", "response-micro", 0.5, r__vendi=14.0)]
    df = frame(rows)
    w = winners(df)
    vendi = w[w["measure"] == "response.vendi"].set_index("size")["winner"].to_dict()
    assert vendi == {24: "small-b", 48: "big"}
    pos = {n: i for i, n in enumerate(df["subset"])}
    assert best_mask(df)["response.vendi"] == {pos["small-b"], pos["big"]}  # a * in each size


def test_length_flag_is_raised_beyond_tolerance_and_random_spread() -> None:
    rand = [row(f"random/s{k}", "random", None, seed=k, r__mean_tokens=t) for k, t in enumerate((190.0, 200.0, 210.0))]
    rows = rand + [row("long", "response-micro", 1.0, r__mean_tokens=290.0),   # +45%, 9 sd: flagged
                   row("short", "response-micro", 0.0, r__mean_tokens=170.0),  # -15%, 3 sd: flagged
                   row("near", "response-micro", 0.5, r__mean_tokens=215.0),   # +7.5%: within tolerance
                   row("edge", "response-macro", 0.5, r__mean_tokens=218.0)]   # +9%, 1.8 sd: not flagged
    df = frame(rows).set_index("subset")
    assert df.loc["long", "response.length_flag"] and df.loc["short", "response.length_flag"]
    assert not df.loc["near", "response.length_flag"] and not df.loc["edge", "response.length_flag"]
    assert df.loc["long", "response.tokens_vs_random"] == pytest.approx(90.0)
    assert df.loc["long", "response.tokens_vs_random_pct"] == pytest.approx(0.45)
    assert not df.loc["long", "instruction.length_flag"]  # the instruction side is as long as random's
    # a tighter tolerance flags the 7.5% one too, but random's spread (2 sd = 20 tokens) still protects +15
    tight = frame(rows, CompareSettings(length_tolerance=0.05)).set_index("subset")
    assert not tight.loc["near", "response.length_flag"]
    assert frame(rows, CompareSettings(length_tolerance=0.05, length_sds=1.0)).set_index("subset").loc[
        "near", "response.length_flag"]

    # random seeds far apart: +40% is inside random's own spread, so not flagged
    wide = [row(f"random/s{k}", "random", None, seed=k, r__mean_tokens=t) for k, t in enumerate((150.0, 200.0, 250.0))]
    df = frame(wide + [row("long", "response-micro", 1.0, r__mean_tokens=280.0)]).set_index("subset")
    assert not df.loc["long", "response.length_flag"]
    # one random subset: the tolerance alone decides
    df = frame([wide[1], row("long", "response-micro", 1.0, r__mean_tokens=280.0)]).set_index("subset")
    assert df.loc["long", "response.length_flag"]

    out = _render(frame(rows))
    assert "290!" in out and "+90!" in out
    assert re.search(r"length flag: long: response 290\.0 tokens vs random 200\.0 ± 10\.0 sd .*\+90\.0 \(\+45%\)",
                     out)


def test_no_random_subset_no_length_comparison() -> None:
    df = frame([row("a", "response-micro", 1.0), row("b", "k-center", None)])
    assert df["response.length_flag"].isna().all()
    assert "lengths not compared: no random subset" in _render(df)


def test_nine_strategies_fit_100_columns_with_a_legend_for_every_abbreviation() -> None:
    df = frame(nine())
    assert len(df) == 27
    out = _render(df, 100)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 100, max(lines, key=len)
    assert sum(ln.startswith("compare: 27 subsets (") for ln in lines) >= 2  # stacked, not squeezed
    headers = {w for ln in lines if ln.startswith(" ") and ("rand" in ln or "i.mac" in ln) for w in ln.split()}
    legend = out[out.index("\nlegend"):]
    for short in {*STRATEGY_SHORT.values()} & headers:
        assert f"\n{short} " in legend, short
    for label in {ln.split()[0] for ln in lines if ln.startswith((" r.", " i.")) and not ln.startswith("  ")}:
        assert f"\n{label[2:]} " in legend, label  # r.vendi -> "vendi" in the legend, with "r. / i."
    assert "\nr. / i. " in legend and "\n* " in legend and "\n! " in legend
    # every subset appears once across the stacked tables: 27 header columns
    assert sum(len(ln.split()) - 1 for ln in lines if ln.startswith(" measure") and "better" not in ln) == 27
    # the winner of r.vendi (response-micro d=1: 10 + 10 + 5) is named
    assert re.search(r"r\.vendi\s+high\s+response-micro/n24-d1\.000-s0\.jsonl\s+25 ", out)


def _render(df: Any, width: int = 100) -> str:
    buf = io.StringIO()
    render(df, Console(file=buf, width=width, highlight=False, soft_wrap=True, color_system=None))
    return buf.getvalue()


def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "loose.jsonl").write_text("{}\n")
    for target, message in ((tmp_path / "missing", "no such file"), (tmp_path / "empty", "no subset here"),
                            (tmp_path / "loose.jsonl", "no manifest beside it")):
        with pytest.raises(DivscopeError, match=message):
            compare(target)
        assert main(["compare", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
    assert main(["compare", str(tmp_path / "empty"), "--length-tolerance", "-1"]) == 2
    assert "--length-tolerance" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- real grid

@pytest.mark.slow
def test_real_grid_table_matches_the_cards_and_fits(compare_grid: Path) -> None:
    df = divscope.compare(compare_grid)
    assert len(df) == 27 and df["strategy"].nunique() == 9
    for r in records(df):
        path = compare_grid / r["subset"]
        card = json.loads(metrics_path(path).read_text())
        for side in SIDES:
            for m in MAIN_METRICS:
                assert r[f"{side}.{m}"] == card[side][m], (r["subset"], side, m)
        manifest = json.loads(manifest_path(path).read_text())
        if r["diversity"] is not None:  # a diversity strategy: its own coverage is its manifest's count
            side, level = r["strategy"].split("-")
            assert r["own_axis"] == r["strategy"] and r["own_covered"] == manifest["types_covered"]
            entry = next(e for e in card[side]["types_covered"] if e["level"] == level and e["latest"])
            assert r["own_types"] == entry["types"] and r["own_coverage"] == pytest.approx(
                manifest["types_covered"] / entry["types"])
        else:
            assert r["own_axis"] is None
    # lengths: against the mean of the three random subsets
    rand = df[df["strategy"] == "random"]["response.mean_tokens"]
    far = df.loc[(df["response.mean_tokens"] - rand.mean()).abs().idxmax()]
    assert far["response.length_flag"]  # the grid's longest-or-shortest responses are beyond random's spread
    assert far["response.tokens_vs_random"] == pytest.approx(far["response.mean_tokens"] - rand.mean())

    out = _render(df, 100)
    assert max(map(len, out.splitlines())) <= 100
    best = df.loc[df["response.vendi"].idxmax(), "subset"]
    assert re.search(rf"r\.vendi\s+high\s+{re.escape(best)}", out)
    assert f"length flag: {far['subset']}: response" in out

    # the CLI prints the same and writes the page; cards are reused, not recomputed
    stamp = metrics_path(compare_grid / best).stat().st_mtime_ns
    html = compare_grid.parent / "compare.html"
    assert main(["compare", str(compare_grid), "--html", str(html)]) == 0
    assert metrics_path(compare_grid / best).stat().st_mtime_ns == stamp
    first = html.read_bytes()
    assert main(["compare", str(compare_grid), "--html", str(html)]) == 0
    assert html.read_bytes() == first  # deterministic page
    text = first.decode()
    assert text.count('<img src="data:image/png;base64,') == 2 and "<script" not in text
    for src in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        assert base64.b64decode(src)[:8] == b"\x89PNG\r\n\x1a\n"
    assert f'<span class="best">{df.loc[df["response.vendi"].idxmax(), "response.vendi"]:.4g}*</span>' in text


@pytest.mark.slow
def test_study_shows_trained_scores(compare_grid: Path, tmp_path: Path) -> None:
    """A study folder (results.jsonl beside subsets/): each subset's trained score beside its measures, the best
    one named, the untrained model's score printed."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(compare_grid, study / "subsets")
    subsets = sorted(p for p in (study / "subsets").rglob("*.jsonl") if manifest_path(p).is_file())
    lines = [json.dumps({"cell": "base", "strategy": "base", "size": 0, "diversity": None, "metric": "nll",
                         "score": -3.0})]
    for i, p in enumerate(subsets):
        m = json.loads(manifest_path(p).read_text())
        lines.append(json.dumps({"cell": f"{m['strategy']}/{p.stem}", "strategy": m["strategy"], "size": m["size"],
                                 "diversity": m["diversity"], "seed": m["seed"], "metric": "nll",
                                 "score": -2.0 + 0.01 * ((7 * i) % len(subsets))}))
    (study / "results.jsonl").write_text("\n".join(lines) + "\n")
    (study / "study.json").write_text(json.dumps({"name": "t", "spec": {"metrics": {"bleu_sample": 8}}}))
    top = subsets[max(range(len(subsets)), key=lambda i: (7 * i) % len(subsets))]
    df = compare(study)
    assert df["score.nll"].notna().all() and df.attrs["anchor"] == {"nll": -3.0}
    w = winners(df).set_index("measure")
    assert w.loc["score.nll", "winner"] == top.relative_to(study / "subsets").as_posix()
    out = _render(df)
    lines = out.splitlines()
    rule = next(i for i, ln in enumerate(lines) if "\u2500\u2500\u2500" in ln)
    assert lines[rule + 1].split()[0] == "score" and "untrained model (nll): -3" in out  # the score comes first
    assert re.search(rf"score\s+high\s+{re.escape(w.loc['score.nll', 'winner'])}", out)
    assert "trained score, nll" in render_html(df)

    # the cards follow the study's metric settings; without study.json, the settings the cards share are reused
    card = metrics_path(top)
    assert json.loads(card.read_text())["params"]["bleu_sample"] == 8 == df.attrs["settings"]["bleu_sample"]
    (study / "study.json").unlink()
    stamp = card.stat().st_mtime_ns
    again = compare(study)
    assert again.attrs["settings"]["bleu_sample"] == 8 and card.stat().st_mtime_ns == stamp
    assert again["response.self_bleu"].tolist() == df["response.self_bleu"].tolist()
