"""``--where``: the eligibility expression grammar (no eval), its one-line errors, the one eligibility mask every
strategy honours (with the length band), select / grid / spec, the too-few error and determinism."""

from __future__ import annotations

import json
import operator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from divscope.cli import main
from divscope.errors import DivscopeError
from divscope.experiment.spec import parse_spec
from divscope.features.micro import token_lengths
from divscope.io.workspace import Workspace
from divscope.select.checks import battery_pool
from divscope.select.eligibility import eligibility, select_eligible
from divscope.select.settings import GridSettings, SelectSettings
from divscope.select.strategies import ALL, Selector
from divscope.select.subsets import run_grid_settings
from divscope.select.where import parse_where, where_mask
from helpers import assert_one_line_errors, real_pairs

LANGS = ("en", "de", "fr")


def _records() -> list[dict[str, Any]]:
    """160 real pairs (10 of them joined into two-exchange conversations) with metadata: ``score`` (missing on
    every 9th), ``lang``, ``flag`` (a bool, missing on every 5th) and ``note`` (null or a list on some)."""
    pairs = real_pairs(170)
    out = []
    for i in range(160):
        msgs = pairs[i]["messages"] + (pairs[160 + i]["messages"] if i < 10 else [])
        rec: dict[str, Any] = {"id": f"r{i:03d}", "messages": msgs, "lang": LANGS[i % 3]}
        if i % 9:
            rec["score"] = (i * 7) % 11 / 2 if i % 4 else (i * 7) % 11
        if i % 5:
            rec["flag"] = i % 2 == 0
        if i % 13 == 0:
            rec["note"] = None if i % 26 else [1, 2]
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    return battery_pool(tmp_path_factory.mktemp("where"), _records(), strategies=ALL)


@pytest.fixture(scope="module")
def values(pool) -> list[dict[str, Any]]:
    """Each row's columns, read independently of divscope.select.where (the property's reference)."""
    ws = Workspace(pool.workspace)
    resp, instr = token_lengths(ws, "response"), token_lengths(ws, "instruction")
    out = []
    for i, r in enumerate(ws.pool.records()):
        row = dict(r.metadata)
        row |= {"turns": sum(t.role == "user" for t in r.conversation), "source": r.source,
                "response_tokens": int(resp[i]), "instruction_tokens": int(instr[i])}
        out.append(row)
    return out


def cli(*args: Any) -> int:
    return main([str(a) for a in args])


# ------------------------------------------------------------------------------------------------- parser

@pytest.mark.parametrize(("expr", "canonical"), [
    ("score >= 4 and turns == 1", "score >= 4 and turns == 1"),
    ("score>=4  AND turns==1", "score >= 4 and turns == 1"),
    ("(a == 1 or b == 2) and c == 3", "(a == 1 or b == 2) and c == 3"),
    ("a == 1 or (b == 2 and c == 3)", "a == 1 or b == 2 and c == 3"),
    ("not (a == 1 or b == 'x')", 'not (a == 1 or b == "x")'),
    ("not a == 1", "not a == 1"),
    ("lang in ['en', \"de\"]", 'lang in ["en", "de"]'),
    ("x not in [-1, 2.5, 1e3]", "x not in [-1, 2.5, 1000.0]"),
    ("4 <= score", "4 <= score"),
    ("`my col` == true and metadata.turns != false", "`my col` == true and metadata.turns != false"),
    ("s == 'it\\'s'", 's == "it\'s"'),
    ("response_tokens > instruction_tokens", "response_tokens > instruction_tokens"),
])
def test_parses_good_expressions_to_one_canonical_form(expr, canonical):
    w = parse_where(expr)
    assert w.text == canonical
    assert parse_where(w.text).text == canonical  # the canonical form parses to itself


@pytest.mark.parametrize(("expr", "message"), [
    ("score = 4", "unexpected '=' (compare with ==) at position 7"),
    ("score >= 4 && turns == 1", "unexpected '&' (write and) at position 12"),
    ("score >=", "got the end at position 9"),
    ("score >= 4 and", "got the end at position 15"),
    ("(score >= 4", "expected ')', got the end at position 12"),
    ("score >= 4)", "got ')' at position 11"),
    ("score", "expected a comparison (== != < <= > >=) or in [...], got the end at position 6"),
    ("score 4", "got 4 at position 7"),
    ("1 == 2", "a comparison needs a column on one side at position 1"),
    ("flag < true", "true / false compare with == or != only"),
    ("lang in 'en'", "expected '[', got 'en' at position 9"),
    ("lang == 'en", "unterminated string ' at position 9"),
    ("", "empty expression"),
    ("__import__('os').system('x') == 1", "unexpected '.' at position 17"),
])
def test_bad_expressions_name_the_token_and_its_position(expr, message):
    with pytest.raises(DivscopeError) as e:
        parse_where(expr)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_rejects_bad_expressions_and_unknown_columns_in_one_line(pool, tmp_path, capsys):
    ws = pool.workspace
    cases = [
        (["select", ws, "-s", "random", "-n", 5, "--where", "score = 4", "-o", tmp_path / "a.jsonl"],
         'error: --where: unexpected \'=\' (compare with ==) at position 7 of "score = 4"'),
        (["grid", ws, "--strategies", "random", "--sizes", 5, "--where", "score >= 4 and", "-o", tmp_path / "g"],
         "error: --where: expected a column"),
        (["select", ws, "-s", "random", "-n", 5, "--where", "scroe >= 4", "-o", tmp_path / "a.jsonl"],
         "error: where: unknown column 'scroe'; the pool's columns: instruction_tokens, response_tokens, turns, "
         "source, flag, lang, note, score"),
        (["select", ws, "-s", "random", "-n", 5, "--where", "lang >= 4", "-o", tmp_path / "a.jsonl"],
         "error: where: column 'lang' holds no number values (e.g. 'en'); compare it with a quoted string"),
        (["select", ws, "-s", "random", "-n", 5, "--where", "score == 'high'", "-o", tmp_path / "a.jsonl"],
         "error: where: column 'score' holds no string values"),
    ]
    assert_one_line_errors(cases, capsys, tmp_path / "a.jsonl", tmp_path / "g")


def test_missing_values_and_other_kinds_fail_every_comparison(pool, values):
    ws = Workspace(pool.workspace)
    has_score = np.array(["score" in v for v in values])
    assert 0 < has_score.sum() < len(values)
    both = where_mask(ws, "score >= 0") | where_mask(ws, "score < 0")
    assert np.array_equal(both, has_score)  # rows without a score satisfy neither
    assert np.array_equal(where_mask(ws, "score != 1"), has_score & ~where_mask(ws, "score == 1"))
    assert np.array_equal(where_mask(ws, "not score == 1"), ~where_mask(ws, "score == 1"))
    assert not where_mask(ws, "note == 1").any() and not where_mask(ws, "note != 'x'").any()  # null, a list
    has_flag = np.array(["flag" in v for v in values])
    assert np.array_equal(where_mask(ws, "flag != true"), has_flag & ~where_mask(ws, "flag == true"))
    assert where_mask(ws, "turns == 2").sum() == 10 and where_mask(ws, "turns == 1").sum() == 150


# ---------------------------------------------------------------------------------- the property, nine strategies

_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}


def _kind(v: Any) -> str | None:
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else \
        "string" if isinstance(v, str) else None


def _holds(tree: tuple, row: dict[str, Any]) -> bool:
    """The reference semantics on one row: a comparison holds only between values of one kind."""
    op = tree[0]
    if op == "and":
        return _holds(tree[1], row) and _holds(tree[2], row)
    if op == "or":
        return _holds(tree[1], row) or _holds(tree[2], row)
    if op == "not":
        return not _holds(tree[1], row)
    if op in ("in", "not in"):
        v = row.get(tree[1])
        hit = any(_kind(v) == _kind(o) and v == o for o in tree[2])
        return hit if op == "in" else _kind(v) in {_kind(o) for o in tree[2]} and not hit
    a = row.get(tree[1][1]) if tree[1][0] == "col" else tree[1][1]
    b = row.get(tree[2][1]) if tree[2][0] == "col" else tree[2][1]
    return _kind(a) is not None and _kind(a) == _kind(b) and _OPS[op](a, b)


def _lit(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v) if isinstance(v, str) else repr(v)


def _text(tree: tuple) -> str:
    op = tree[0]
    if op in ("and", "or"):
        return f"({_text(tree[1])}) {op.upper() if len(_text(tree[1])) % 2 else op} ({_text(tree[2])})"
    if op == "not":
        return f"not ({_text(tree[1])})"
    if op in ("in", "not in"):
        return f"{tree[1]} {op} [{', '.join(_lit(v) for v in tree[2])}]"
    side = [(t[1] if t[0] == "col" else _lit(t[1])) for t in tree[1:]]
    return f"{side[0]} {op} {side[1]}"


_NUMERIC = {"score": st.sampled_from([0, 1, 2.5, 3, 4, 4.5, 5]), "turns": st.integers(0, 3),
            "response_tokens": st.integers(0, 900), "instruction_tokens": st.integers(0, 300)}
_STRINGS = {"lang": st.sampled_from([*LANGS, "es"]), "source": st.sampled_from(["x", "records"])}


def _leaf() -> st.SearchStrategy[tuple]:
    numeric = st.sampled_from(sorted(_NUMERIC)).flatmap(
        lambda c: st.tuples(st.sampled_from(sorted(_OPS)), _NUMERIC[c], st.booleans()).map(
            lambda t: (t[0], ("col", c), ("lit", t[1])) if t[2] else ({"<": ">", ">": "<", "<=": ">=",
                                                                       ">=": "<="}.get(t[0], t[0]), ("lit", t[1]),
                                                                      ("col", c))))
    strings = st.sampled_from(sorted(_STRINGS)).flatmap(
        lambda c: st.tuples(st.sampled_from(sorted(_OPS)), _STRINGS[c]).map(lambda t: (t[0], ("col", c), ("lit", t[1]))))
    flags = st.tuples(st.sampled_from(["==", "!="]), st.booleans()).map(lambda t: (t[0], ("col", "flag"), ("lit", t[1])))
    members = st.tuples(st.sampled_from(["in", "not in"]), st.sampled_from(["lang", "score"])).flatmap(
        lambda t: st.lists(_STRINGS["lang"] if t[1] == "lang" else _NUMERIC["score"], min_size=1, max_size=3).map(
            lambda vs: (t[0], t[1], tuple(vs))))
    columns = st.sampled_from(sorted(_OPS)).map(lambda o: (o, ("col", "response_tokens"), ("col", "instruction_tokens")))
    return st.one_of(numeric, strings, flags, members, columns)


TREES = st.recursive(_leaf(), lambda sub: st.one_of(
    st.tuples(st.sampled_from(["and", "or"]), sub, sub), st.tuples(st.just("not"), sub)), max_leaves=5)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES)
def test_every_selected_sample_satisfies_the_expression_for_all_nine_strategies(pool, values, tree):
    ws, expr = Workspace(pool.workspace), _text(tree)
    truth = np.array([_holds(tree, v) for v in values])
    assert np.array_equal(where_mask(ws, expr), truth), expr
    elig = eligibility(ws, length_range="20:", where=expr)
    band = np.array([v["response_tokens"] >= 20 for v in values])
    assert np.array_equal(elig.mask, truth & band)
    selector = Selector(ws, elig.mask)
    n = min(6, int(elig.mask.sum()))
    for strategy in ALL:
        opts = {"typeless": "include", "threshold": 0.0}
        if n == 0:
            with pytest.raises(DivscopeError, match=r"^cannot select 1 samples: the eligibility filters leave 0 "
                                                    r"\(pool 160 -> length band 20: response tokens: \d+ -> where "):
                select_eligible(selector, elig, strategy, 1, 0.5, 0, **opts)
            continue
        sub = select_eligible(selector, elig, strategy, n, 0.5, 0, **opts)
        assert len(sub.rows) == n and all(truth[r] and band[r] for r in sub.rows), (strategy, expr)
        assert sub.info["eligible"] == int(elig.mask.sum()) and sub.info["where"] == parse_where(expr).text


# ----------------------------------------------------------------------------------- select, grid, spec, errors

def test_select_records_the_expression_and_counts_and_is_deterministic(pool, values, tmp_path):
    ws = pool.workspace
    base = ["select", ws, "-s", "response-micro", "-d", 0.5, "-n", 8, "--length-range", "30:"]
    assert cli(*base, "--where", "score >= 4 and turns == 1", "-o", tmp_path / "a.jsonl") == 0
    assert cli(*base, "--where", "score>=4 AND turns==1", "-o", tmp_path / "b" / "a.jsonl") == 0
    for suffix in ("", ".manifest.json"):  # equivalent spellings: byte-identical outputs
        a, b = tmp_path / f"a.jsonl{suffix}", tmp_path / "b" / f"a.jsonl{suffix}"
        assert a.read_bytes() == b.read_bytes()
    m = json.loads((tmp_path / "a.jsonl.manifest.json").read_text())
    truth = [v.get("score", -1) >= 4 and v["turns"] == 1 and v["response_tokens"] >= 30 for v in values]
    assert m["request"]["where"] == {"expression": "score >= 4 and turns == 1"}
    assert m["request"]["length"]["range"] == [30, None]
    assert m["where"] == "score >= 4 and turns == 1" and m["eligible"] == sum(truth)
    assert [f["eligible"] for f in m["filters"]] == [160, sum(v["response_tokens"] >= 30 for v in values), sum(truth)]
    assert all(truth[r] for r in m["rows"])
    # a token column records the tokenizer that measured it
    assert cli("select", ws, "-s", "random", "-n", 3, "--where", "response_tokens < 200", "-o", tmp_path / "c.jsonl") == 0
    req = json.loads((tmp_path / "c.jsonl.manifest.json").read_text())["request"]["where"]
    assert req["tokenizer"] == "smollm2" and req["identity"].startswith("tokenizer:smollm2")


def test_without_where_the_manifest_is_what_it_was(pool, tmp_path):
    assert cli("select", pool.workspace, "-s", "random", "-n", 5, "--length-range", "30:", "-o",
               tmp_path / "a.jsonl") == 0
    m = json.loads((tmp_path / "a.jsonl.manifest.json").read_text())
    assert "where" not in m["request"] and "where" not in m and "filters" not in m
    assert set(m["request"]) == {"strategy", "size", "diversity", "seed", "options", "length"}


def test_grid_honours_where_in_every_cell_and_resumes(pool, values, tmp_path):
    ws, out = pool.workspace, tmp_path / "g"
    args = ["grid", ws, "--strategies", "all,baselines", "--sizes", 5, "--levels", 2, "--typeless", "include",
            "--where", "lang in ['en', 'de'] and flag == true", "-o", out]
    assert cli(*args) == 0
    truth = [v["lang"] in ("en", "de") and v.get("flag") is True for v in values]
    manifests = sorted(out.glob("*/*.manifest.json"))
    assert len(manifests) == 6 * 2 + 3
    for p in manifests:
        m = json.loads(p.read_text())
        assert m["request"]["where"]["expression"] == 'lang in ["en", "de"] and flag == true'
        assert m["eligible"] == sum(truth) and all(truth[r] for r in m["rows"]), p
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli(*args) == 0  # resumes: nothing new, nothing rewritten
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_spec_selection_takes_where_and_keeps_old_fingerprints():
    spec = parse_spec({"selection": {"where": "score>=4 and turns==1"}})
    assert spec.selection.where == "score >= 4 and turns == 1"
    assert spec.fingerprint() != parse_spec({}).fingerprint()
    assert parse_spec({"selection": {"where": None}}).fingerprint() == parse_spec({}).fingerprint()
    assert parse_spec({"selection": {"where": "score >= 4"}}).fingerprint() == \
        parse_spec({"selection": {"where": "score>=4"}}).fingerprint()
    with pytest.raises(DivscopeError, match=r"^spec: selection\.where: unexpected '=' \(compare with ==\) at position 7"):
        parse_spec({"selection": {"where": "score = 4"}})
    assert SelectSettings.from_cli({"strategy": "random", "size": 3, "where": "a==1"}).where == "a == 1"


def test_a_study_grid_runs_where_on_top_of_its_eligible_rows(pool, values, tmp_path):
    """The path a study takes (run_grid_settings with the eval-overlap mask), selection from the spec."""
    sel = parse_spec({"selection": {"strategies": ["response-micro", "random"], "sizes": [4], "levels": 1,
                                    "where": "score > 3", "typeless": "include"}}).selection
    assert isinstance(sel, GridSettings)
    given_rows = np.arange(160) % 4 != 0
    manifests, built = run_grid_settings(pool.workspace, tmp_path / "s", sel, eligible=given_rows,
                                         eligible_label="no evaluation overlap")
    truth = [given_rows[i] and v.get("score", 0) > 3 for i, v in enumerate(values)]
    assert built == 2 and all(all(truth[r] for r in m["rows"]) and m["eligible"] == sum(truth) for m in manifests)
    assert [f["filter"] for f in manifests[0]["filters"]] == ["pool", "no evaluation overlap", "where score > 3"]


def test_too_few_eligible_names_each_filter_and_its_count(pool, values, tmp_path, capsys):
    ws = pool.workspace
    n_band = sum(v["response_tokens"] >= 30 for v in values)
    n_where = sum(v["response_tokens"] >= 30 and v.get("score", -1) >= 4 for v in values)
    assert cli("select", ws, "-s", "random", "-n", n_where + 1, "--length-range", "30:", "--where", "score >= 4",
               "-o", tmp_path / "a.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: cannot select {n_where + 1} samples: the eligibility filters leave {n_where} (pool 160 "
                   f"-> length band 30: response tokens: {n_band} -> where score >= 4: {n_where}); choose a smaller "
                   "--size or loosen --length-range / --where")
    # the typeless samples of a diversity strategy's axis are the last filter
    elig = eligibility(ws, where="score >= 0")
    selector = Selector(ws, elig.mask)
    engine = selector.engine("response", "meso", 0)
    typed = engine.n_samples - engine.n_typeless
    assert 0 < typed < engine.n_samples  # the offline tagger leaves some responses without a tag
    with pytest.raises(DivscopeError) as e:
        select_eligible(selector, elig, "response-meso", typed + 1, 0.5, 0)
    assert str(e.value) == (f"cannot select {typed + 1} samples: the eligibility filters leave {typed} (pool 160 -> "
                            f"where score >= 0: {engine.n_samples} -> typeless on response-meso excluded: {typed}); "
                            "choose a smaller --size, --typeless include or loosen --length-range / --where")
    assert select_eligible(selector, elig, "response-meso", typed, 0.5, 0).size == typed
