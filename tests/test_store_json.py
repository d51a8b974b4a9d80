"""``store.dumps_json`` writes what ``json.dumps(indent=2, sort_keys=True, ensure_ascii=False)`` writes."""

import json
import random

import pytest

from divscope.store.atomic import dumps_json, write_json


def reference(obj):
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


def nested(rnd: random.Random, depth: int = 0):
    t = rnd.random()
    if depth > 3 or t < 0.4:
        return rnd.choice([1, -2, 0.1, 1e20, float("nan"), "s", "é\u2028\n\"", None, True, False, [], {}, (), (1,)])
    if t < 0.7:
        return [nested(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice("abcdef"): nested(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


def test_same_bytes_as_json_dumps():
    manifest = {"ids": [f"rec-{i}" for i in range(50)], "rows": list(range(50)), "info": {"k": 3, "b": [0.5]},
                "int_keys": {2: "b", 1: {"x": [1, {"y": []}]}}, "empty": [[], {}], "nested": [[1, [2, [3]]]]}
    assert dumps_json(manifest) == reference(manifest)
    rnd = random.Random(0)
    for _ in range(3000):
        obj = nested(rnd)
        assert dumps_json(obj) == reference(obj)


def test_same_errors_as_json_dumps():
    for bad in ({"a": object()}, {"a": {1: 2, "b": 3}}):
        with pytest.raises(TypeError):
            reference(bad)
        with pytest.raises(TypeError):
            dumps_json(bad)


def test_write_json_file(tmp_path):
    obj = {"b": [1, 2], "a": {"z": "ü", "y": [{"x": None}]}}
    write_json(tmp_path / "m.json", obj)
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == reference(obj) + "\n"
