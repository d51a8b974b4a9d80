"""The public Python API of the selector (issue 19, item 6): ``divscope.select(...) -> Subset``, run through the
README's own example (so it cannot rot) and checked against ``divscope select`` byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import divscope
from divscope.cli import main

pytestmark = pytest.mark.usefixtures("divscope_cache")

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_select_example() -> str:
    """The README's python block that calls ``divscope.select(`` (exactly one)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
              if "divscope.select(" in b]
    assert len(blocks) == 1, "README must hold one python example of divscope.select"
    return blocks[0]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The README example run as it stands in a fresh folder: its globals and the folder (its ``ws`` serves the
    other tests here)."""
    here = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(here)
        scope: dict = {"__name__": "readme_example"}
        exec(compile(readme_select_example(), str(README), "exec"), scope)  # noqa: S102 - the README's own code
    return {"dir": here, "scope": scope}


def test_readme_example_runs(example: dict) -> None:
    here, scope = example["dir"], example["scope"]
    sub = scope["sub"]
    assert len(scope["records"]) == 100 and (here / "best100.jsonl.manifest.json").is_file()
    records, rejects = divscope.read_records(here / "best100.jsonl")
    assert not rejects and [r.id for r in records] == sub.ids
    assert all(r.id in sub.ids for r in scope["records"])
    assert scope["card"]["n"] == 100 and scope["card"]["response"]["distinct_2"] > 0
    assert sub.manifest["request"]["where"]["expression"] == "turns == 1"


def test_write_is_byte_identical_to_the_cli(example: dict, tmp_path: Path) -> None:
    ws = example["dir"] / "ws"
    for fmt, name, extra in ((None, "s.jsonl", {}), ("alpaca", "s.json", {"where": "response_tokens <= 400"})):
        sub = divscope.select(ws, "response-micro", 40, d="1/3", seed=2, **extra)
        sub.write(tmp_path / "api" / name, fmt)
        args = ["select", str(ws), "-s", "response-micro", "-n", "40", "-d", "1/3", "--seed", "2",
                "-o", str(tmp_path / "cli" / name), *(["-f", fmt] if fmt else [])]
        assert main(args + (["--where", extra["where"]] if extra else [])) == 0
        for f in (name, name + ".manifest.json"):
            assert (tmp_path / "api" / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f
        written = json.loads((tmp_path / "cli" / (name + ".manifest.json")).read_text())
        assert sub.manifest == written and sub.ids == written["ids"]
        assert [r.id for r in sub.records()] == written["ids"]  # selection order, as the file holds them
        assert sub.rows == written["rows"]


def test_metrics_is_the_card_of_the_written_subset(example: dict, tmp_path: Path) -> None:
    from divscope.metrics.card import card_for_path

    sub = divscope.select(example["dir"] / "ws", "random", 30, seed=4)
    card = sub.metrics()
    on_disk = card_for_path(sub.write(tmp_path / "r.jsonl"))
    assert card == {k: v for k, v in on_disk.items() if k not in ("source", "input_sha256")}
    assert card["subset"]["strategy"] == "random" and card["n"] == 30


def test_select_is_callable_after_the_package_is_imported_and_refuses_ignored_options(example: dict) -> None:
    import divscope.select.strategies  # noqa: F401 - binds the package to ``divscope.select`` again

    ws = example["dir"] / "ws"
    a, b = divscope.select(ws, "random", 10, seed=1), divscope.select(ws, "random", 10, seed=1)
    assert a.ids == b.ids and a.ids != divscope.select(ws, "random", 10, seed=2).ids
    with pytest.raises(divscope.DivscopeError, match="^strategy random ignores d: drop it"):
        divscope.select(ws, "random", 10, d=0.5)
    with pytest.raises(divscope.DivscopeError, match="^select: threshold: "):
        divscope.select(ws, "distance", 10, threshold="far")
