"""The feature cache: hits load no model, damaged or half-written entries are rebuilt, latest lookup, CLI."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

import divscope
from divscope import models
from divscope.errors import DivscopeError
from divscope.features.commands import featurize as featurize_cmd
from divscope.features.featurize import (
    features_dir,
    featurize,
    featurize_result,
    load_extra,
    load_incidence,
)
from divscope.features.micro import default_bands
from divscope.io.workspace import Workspace
from helpers import POOL_N as N
from helpers import real_pairs

fz = importlib.import_module("divscope.features.featurize")  # the module (the package exports the function)
pytestmark = pytest.mark.usefixtures("divscope_cache")  # tests/conftest.py: session-wide temp model cache


def test_second_call_is_a_hit_without_loading_a_model(ws):
    first = {lv: featurize_result(ws, lv, "instruction") for lv in ("micro", "macro")}
    assert all(r.status == "built" for r in first.values())
    models.clear_memo()
    calls = dict(models.LOAD_CALLS)
    for lv in ("micro", "macro"):
        again = featurize_result(Workspace(ws.path), lv, "instruction")
        assert again.status == "hit" and again.cache_hit
        assert again.incidence.fingerprint == first[lv].incidence.fingerprint
        assert again.incidence.type_names == first[lv].incidence.type_names
        assert (again.incidence.matrix != first[lv].incidence.matrix).nnz == 0
    assert dict(models.LOAD_CALLS) == calls, "a cache hit must not load a tokenizer or an embedder"
    assert not models._MEMO, "nothing was loaded behind the counter either"
    assert "load tokenizer" not in again.times and "embed" not in again.times


def test_key_depends_on_options_and_latest_is_what_was_asked_last(ws):
    a = featurize_result(ws, "micro", "instruction", low=2, high=20)
    b = featurize_result(ws, "micro", "instruction", low=3, high=20)
    assert a.key != b.key and a.path != b.path
    assert load_incidence(ws, "instruction", "micro").fingerprint == b.incidence.fingerprint
    again = featurize_result(ws, "micro", "instruction", low=2, high=20)
    assert again.status == "hit"
    assert load_incidence(ws, "instruction", "micro").fingerprint == a.incidence.fingerprint
    assert load_incidence(ws, "instruction", "micro", key=b.key).fingerprint == b.incidence.fingerprint
    # explicit values equal to the scaled defaults are the same request
    low, high = default_bands(N)
    assert featurize_result(ws, "micro", "instruction").key == featurize_result(
        ws, "micro", "instruction", low=low, high=high).key
    lengths = load_extra(ws, "instruction", "micro", "lengths.npy")
    assert lengths.shape == (N,) and lengths.min() > 0


@pytest.mark.parametrize("damage", ["flip-matrix", "truncate-json", "drop-extra", "edit-extra"])
def test_damaged_entry_is_detected_and_rebuilt(ws, damage):
    good = featurize_result(ws, "micro", "response", low=2, high=20)
    path = good.path
    if damage == "flip-matrix":
        with np.load(path / "matrix.npz") as z:
            arrays = {k: z[k].copy() for k in z.files}
        arrays["indices"][: len(arrays["indices"]) // 2] = arrays["indices"][0]
        np.savez(path / "matrix.npz", **arrays)
    elif damage == "truncate-json":
        text = (path / "incidence.json").read_text()
        (path / "incidence.json").write_text(text[: len(text) // 2])
    elif damage == "drop-extra":
        (path / "lengths.npy").unlink()
    else:
        lengths = np.load(path / "lengths.npy")
        np.save(path / "lengths.npy", lengths + 1)
    with pytest.raises(DivscopeError, match="stale or damaged"):
        load_incidence(ws, "response", "micro")
    again = featurize_result(ws, "micro", "response", low=2, high=20)
    assert again.status == "rebuilt" and again.note
    assert again.incidence.fingerprint == good.incidence.fingerprint
    assert load_incidence(ws, "response", "micro").fingerprint == good.incidence.fingerprint
    assert featurize_result(ws, "micro", "response", low=2, high=20).status == "hit"


def test_a_crashed_build_leaves_no_entry(ws, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    # the crash happens after the matrix was written into the temporary entry, before the rename
    monkeypatch.setattr(fz, "write_json", boom)
    with pytest.raises(RuntimeError):
        featurize(ws, "micro", "instruction", unit="words")
    monkeypatch.undo()
    d = features_dir(ws, "instruction", "micro")
    assert not [p for p in d.iterdir() if p.is_dir()], "no entry and no temporary folder left behind"
    with pytest.raises(DivscopeError, match="no instruction-micro features"):
        load_incidence(ws, "instruction", "micro")
    assert featurize_result(ws, "micro", "instruction", unit="words").status == "built"


def test_reingested_pool_invalidates(ws, pool_dir):
    featurize(ws, "micro", "instruction", unit="words")
    divscope.ingest(real_pairs(N)[: N // 2], ws.path)
    fresh = Workspace(ws.path)
    with pytest.raises(DivscopeError, match="stale or damaged"):
        load_incidence(fresh, "instruction", "micro")
    res = featurize_result(fresh, "micro", "instruction", unit="words")
    assert res.status == "built" and res.incidence.n_samples == N // 2


def test_meso_goes_through_the_registry(ws):
    try:
        import divscope.features.meso  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(DivscopeError, match="meso"):
            featurize(ws, "meso", "instruction")
        return
    inc = featurize(ws, "meso", "instruction")  # the offline tagger by default
    assert inc.level == "meso" and inc.n_samples == N
    again = featurize_result(ws, "meso", "instruction")
    assert again.status == "hit" and again.incidence.fingerprint == inc.fingerprint


def test_unknown_level_or_side(ws):
    with pytest.raises(DivscopeError, match="level"):
        featurize(ws, "nano", "instruction")
    with pytest.raises(DivscopeError, match="side"):
        featurize(ws, "micro", "system")


def test_cli_builds_then_hits(ws):
    runner = CliRunner()
    args = [str(ws.path), "--level", "micro", "--side", "both", "--unit", "words", "--low", "2"]
    first = runner.invoke(featurize_cmd, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "built" in first.output and "response" in first.output
    second = runner.invoke(featurize_cmd, args, catch_exceptions=False)
    assert second.exit_code == 0 and "hit" in second.output and "built" not in second.output
    latest = json.loads((features_dir(ws, "response", "micro") / "latest.json").read_text())
    assert (features_dir(ws, "response", "micro") / latest["key"] / "entry.json").is_file()
