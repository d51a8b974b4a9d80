"""store.cached: a stored result is reused exactly when its parameters match, and only then."""

from __future__ import annotations

import json
from pathlib import Path

from divscope.store.cached import cached_result, params_digest, stored_result


def test_reused_only_for_the_same_parameters(tmp_path: Path) -> None:
    path, calls = tmp_path / "r.json", []

    def compute() -> dict:
        calls.append(1)
        return {"value": len(calls)}

    first = cached_result(path, {"params": {"a": 1, "b": [1, 2]}}, compute)
    assert first == {"value": 1, "params": {"a": 1, "b": [1, 2]}}
    assert json.loads(path.read_text()) == first
    # same parameters, other key order: reused, not recomputed
    assert cached_result(path, {"params": {"b": [1, 2], "a": 1}}, compute)["value"] == 1 and len(calls) == 1
    # other parameters: recomputed and stored with them
    assert cached_result(path, {"params": {"a": 2, "b": [1, 2]}}, compute)["value"] == 2
    assert json.loads(path.read_text())["params"]["a"] == 2
    # a further condition and force
    assert cached_result(path, {"params": {"a": 2, "b": [1, 2]}}, compute, valid=lambda r: False)["value"] == 3
    assert cached_result(path, {"params": {"a": 2, "b": [1, 2]}}, compute, force=True)["value"] == 4


def test_damaged_or_foreign_files_are_not_results(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"params": {"a": 1}')  # cut short
    assert stored_result(path, {"params": {"a": 1}}) is None
    path.write_text("[1, 2]")
    assert stored_result(path, {"params": {"a": 1}}) is None
    path.write_text('{"other": 1}')
    assert stored_result(path, {"params": {"a": 1}}) is None
    assert stored_result(tmp_path / "missing.json", {}) is None


def test_digest_is_canonical_and_sensitive() -> None:
    assert params_digest({"a": 1, "b": (1, 2)}) == params_digest({"b": [1, 2], "a": 1})
    assert params_digest({"a": 1}) != params_digest({"a": 1.5}) != params_digest({"a": "1"})


def test_cached_arrays_reused_recomputed_when_damaged_and_replaced_for_other_params(tmp_path: Path) -> None:
    import numpy as np

    from divscope.store.cached import cached_arrays

    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"a": np.arange(5) * len(calls), "b": np.ones(2, bool)}

    first = cached_arrays(tmp_path / "c", {"v": 1}, compute)
    again = cached_arrays(tmp_path / "c", {"v": 1}, compute)
    assert len(calls) == 1 and again["a"].tolist() == first["a"].tolist() and again["b"].dtype == np.bool_
    (entry,) = (tmp_path / "c").iterdir()
    (entry / "a.npy").write_bytes(b"\x93NUMPY cut short")
    assert cached_arrays(tmp_path / "c", {"v": 1}, compute)["a"].tolist() == [0, 2, 4, 6, 8] and len(calls) == 2
    cached_arrays(tmp_path / "c", {"v": 2}, compute)
    assert len(calls) == 3 and [p.name for p in (tmp_path / "c").iterdir()] != [entry.name]
    assert len(list((tmp_path / "c").iterdir())) == 1  # the other params' arrays replaced
