"""The experiment spec: defaults, clear errors naming the bad key, safe YAML only."""

from __future__ import annotations

from pathlib import Path

import pytest

from divscope import DivscopeError
from divscope.experiment.commands import demo_spec_path
from divscope.experiment.spec import load_spec, parse_spec


def test_defaults_and_demo_spec() -> None:
    spec = parse_spec({})
    assert spec.selection.level_values() == [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1]
    assert len(spec.selection.strategies) == 7  # the six + random
    demo = load_spec(demo_spec_path())
    assert demo.name == "demo" and demo.primary_eval().method == "nll"
    assert parse_spec({"pool": {"source": "a.jsonl"}}).pool.source == ["a.jsonl"]


@pytest.mark.parametrize(("data", "message"), [
    ({"selection": {"sizez": [10]}}, "selection.sizez: unknown key"),
    ({"selection": {"sizes": [0]}}, "selection.sizes: sizes must be >= 1"),
    ({"selection": {"strategies": ["response-nano"]}}, "selection.strategies: unknown strategy 'response-nano'"),
    ({"selection": {"levels": [0.5, 2]}}, "selection.levels"),
    ({"train": {"method": "qlora"}}, "train.method"),
    ({"evaluate": [{"method": "bleu"}]}, "evaluate.0.method"),
    ({"primary": "nope.nll"}, "primary 'nope.nll' is not one of the evaluations"),
    ([1, 2], "top level must be a mapping"),
])
def test_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(DivscopeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_spec(data, "s.yaml")


def test_yaml_is_safe_and_errors_have_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nselection: [unclosed\n")
    with pytest.raises(DivscopeError, match=r"bad.yaml:\d+: not valid YAML"):
        load_spec(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(DivscopeError, match="not valid YAML"):
        load_spec(evil)
    with pytest.raises(DivscopeError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["reproduce-cpu.yaml", "paper.yaml"])
def test_example_specs_validate(name: str) -> None:
    spec = load_spec(Path(__file__).parent.parent / "examples" / name)
    assert len(spec.selection.level_values()) == 7
    assert set(spec.selection.strategies) >= {"instruction-macro", "response-micro", "random"}
