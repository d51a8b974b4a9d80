"""Every user mistake at the command line is one line ``error: ...`` on stderr and exit code 2, click's own usage
errors included; the messages suggest the closest name, name every filter that shrank the pool, and quote paths
in the commands they suggest. ``-d`` / ``--levels`` take exact fractions. Run through the real entry point."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from divscope.cli import main
from divscope.features.featurize import featurize
from divscope.io.workspace import Workspace
from divscope.select.strategies import Selector


@pytest.fixture(scope="module")
def ws(pool_dir: Path, tmp_path_factory: pytest.TempPathFactory, divscope_cache: None) -> Path:
    """The shared 240-pair pool with response-micro features, in a folder whose name has a space."""
    path = tmp_path_factory.mktemp("errors") / "my ws"
    path.mkdir()
    shutil.copy(pool_dir / "pool.parquet", path / "pool.parquet")
    featurize(path, "micro", "response")
    return path


def one_error(capfd: pytest.CaptureFixture[str], *args: object) -> str:
    """Run the CLI expecting a user mistake: exit 2 and exactly one stderr line, ``error: ...``; its message."""
    rc = main([str(a) for a in args])
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


# ---------------------------------------------------------------------------------------- click usage errors

@pytest.mark.parametrize(("args", "expected"), [
    (["featurize", "WS", "--levle", "micro"], ["divscope featurize: No such option '--levle'", "'--level'",
                                                "see divscope featurize --help"]),
    (["featurize", "WS", "--level", "mirco"], ["'mirco' is not one of", "(did you mean 'micro'?)"]),
    (["select", "WS", "-s", "random", "-n", "ten", "-o", "x.jsonl"], ["Invalid value for '--size' / '-n'"]),
    (["select", "-s", "random"], ["divscope select: Missing argument 'WS'"]),
    (["selec", "WS"], ["No such command 'selec'", "'select'"]),
    (["grid", "WS", "--typeless", "exlude"], ["(did you mean 'exclude'?)"]),
])
def test_click_usage_errors_are_one_line(args, expected, ws, tmp_path, capfd) -> None:
    msg = one_error(capfd, *(str(ws) if a == "WS" else a for a in args))
    assert all(e in msg for e in expected), msg
    assert "Usage:" not in msg and "Try " not in msg


def test_help_is_unchanged(capsys) -> None:
    assert main(["select", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: divscope select [OPTIONS] WS") and "-d, --diversity D" in out


# ---------------------------------------------------------------------------------------- did you mean

@pytest.mark.parametrize(("args", "expected"), [
    (["select", "WS", "-s", "respnse-micro", "-d", "0.5", "-n", 5, "-o", "OUT"], "(did you mean 'response-micro'?)"),
    (["grid", "WS", "--strategies", "radnom", "-o", "OUT"], "(did you mean 'random'?)"),
    (["ingest", "WS", "-f", "sharegtp", "-o", "OUT"], "(did you mean 'sharegpt'?)"),
    (["export", "WS", "--to", "OUT", "-f", "parqet"], "(did you mean 'parquet'?)"),
])
def test_unknown_names_suggest_the_closest(args, expected, ws, tmp_path, capfd) -> None:
    sub = {"WS": str(ws), "OUT": str(tmp_path / "out")}
    msg = one_error(capfd, *(sub.get(a, a) if isinstance(a, str) else a for a in args))
    assert msg.endswith(expected), msg


# ---------------------------------------------------------------------------------------- filters

def test_empty_length_band_names_the_band(ws, tmp_path, capfd) -> None:
    """Issue 19: an empty band once ended in ``sample_keys must be integers or strings, got dtype float64``."""
    msg = one_error(capfd, "select", ws, "-s", "response-micro", "-d", "0.5", "-n", 10, "--length-range",
                    "100000:", "-o", tmp_path / "a.jsonl")
    assert "the eligibility filters leave 0 (pool 240 -> length band 100000: response tokens: 0)" in msg, msg


def test_an_empty_eligible_pool_still_builds_an_engine(ws) -> None:
    engine = Selector(Workspace(ws), [False] * 240).engine("response", "micro", 0)  # float64 keys before
    assert engine.n_samples == 0


def test_a_small_band_and_where_are_named_not_ingest_a_larger_pool(ws, tmp_path, capfd) -> None:
    msg = one_error(capfd, "select", ws, "-s", "random", "-n", 100, "--length-range", "30:200",
                    "--where", "turns == 1", "-o", tmp_path / "a.jsonl")
    assert "length band 30:200 response tokens" in msg and "where turns == 1" in msg, msg
    assert "ingest a larger pool" not in msg


# ---------------------------------------------------------------------------------------- levels as fractions

def test_diversity_takes_an_exact_fraction(ws, tmp_path, capsys) -> None:
    base = ["select", str(ws), "-s", "response-micro", "-n", "20"]
    assert main([*base, "-d", "1/6", "-o", str(tmp_path / "f.jsonl")]) == 0
    assert main([*base, "-d", repr(1 / 6), "-o", str(tmp_path / "x.jsonl")]) == 0
    m = json.loads((tmp_path / "f.jsonl.manifest.json").read_text())
    assert m["diversity"] == 1 / 6
    assert (tmp_path / "f.jsonl").read_bytes() == (tmp_path / "x.jsonl").read_bytes()
    assert main(["grid", str(ws), "--strategies", "response-micro", "--sizes", "20", "--levels", "0,1/6,1",
                 "-o", str(tmp_path / "g")]) == 0
    grid = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert sorted(c["diversity"] for c in grid["subsets"]) == [0.0, 1 / 6, 1.0]


@pytest.mark.parametrize("value", ["1/0", "__import__('os')", "1/6/2"])
def test_a_level_that_is_not_a_number_is_one_line(value, ws, tmp_path, capfd) -> None:
    msg = one_error(capfd, "select", ws, "-s", "response-micro", "-n", 5, "-d", value, "-o", tmp_path / "a.jsonl")
    assert msg == f"--diversity: level {value!r} is not a number: give a decimal or a fraction in [0, 1] (0.5, 1/6)"


# ---------------------------------------------------------------------------------------- ignored options

@pytest.mark.parametrize(("args", "expected"), [
    (["-s", "random", "-d", "1/6"], "strategy random ignores --diversity: drop it"),
    (["-s", "k-center", "--threshold", "0.3", "--spacing", "k"], "strategy k-center ignores --threshold --spacing"),
    (["-s", "response-micro", "-d", "0.5", "--side", "response"], "strategy response-micro ignores --side"),
])
def test_options_the_strategy_ignores_are_refused(args, expected, ws, tmp_path, capfd) -> None:
    msg = one_error(capfd, "select", ws, "-n", 5, *args, "-o", tmp_path / "a.jsonl")
    assert msg.startswith(expected), msg
    assert not (tmp_path / "a.jsonl").exists()


# ---------------------------------------------------------------------------------------- suggested commands

def test_suggested_commands_quote_paths_with_spaces(ws, tmp_path, capfd) -> None:
    msg = one_error(capfd, "select", ws, "-s", "instruction-micro", "-d", "0.5", "-n", 5, "-o", tmp_path / "a.jsonl")
    command = msg.split("`")[1]
    assert shlex.split(command)[:3] == ["divscope", "featurize", str(ws)], msg
    empty = tmp_path / "no pool here"
    msg = one_error(capfd, "select", empty, "-s", "random", "-n", 5, "-o", tmp_path / "a.jsonl")
    assert shlex.split(msg.split("`")[1])[-1] == str(empty), msg


def test_too_few_after_the_evaluation_overlap_names_it(ws) -> None:
    """A study's evaluation-overlap exclusion (given rows) is named like the other filters (a study is too slow to
    run here; ``run_grid_settings`` passes the same ``eligible_label``)."""
    from divscope.errors import DivscopeError
    from divscope.select.eligibility import eligibility, select_eligible

    elig = eligibility(ws, list(range(200)), base_label="no evaluation overlap")
    with pytest.raises(DivscopeError) as e:
        select_eligible(Selector(Workspace(ws), elig.mask), elig, "random", 220, None, 0)
    assert str(e.value) == ("cannot select 220 samples: the eligibility filters leave 200 (pool 240 -> no evaluation "
                            "overlap: 200); choose a smaller --size or a larger pool")


def test_a_spec_takes_fractions_as_levels() -> None:
    from divscope.experiment.spec import parse_spec

    assert parse_spec({"selection": {"levels": [0, "1/6", 0.5]}}).selection.levels == [0.0, 1 / 6, 0.5]
