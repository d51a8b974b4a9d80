"""Behaviour kept through refactorings: the same pool gives the same feature bytes, cache keys and subsets as the
recorded build (tests/identity.py says what is recorded and why macro/meso entries are stored, not rebuilt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import identity

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("divscope_cache")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("identity") / "ws"
    identity.build_pool(ws)
    identity.install_stored(ws)
    return ws


@pytest.fixture(scope="module")
def rebuilt(workspace: Path) -> dict[str, str]:
    return identity.compute(workspace, workspace.parent / "grid")


def test_recorded_digests_cover_every_strategy() -> None:
    from divscope.select.strategies import ALL

    recorded = json.loads(identity.DIGESTS.read_text(encoding="utf-8"))
    for strategy in ALL:
        assert any(k.startswith(f"grid/plain/{strategy}/") for k in recorded), strategy


def test_features_and_subsets_are_byte_identical_to_the_recorded_build(rebuilt: dict[str, str]) -> None:
    recorded = json.loads(identity.DIGESTS.read_text(encoding="utf-8"))
    assert set(rebuilt) == set(recorded), sorted(set(rebuilt) ^ set(recorded))[:10]
    differ = sorted(k for k in recorded if rebuilt[k] != recorded[k])
    assert not differ, f"{len(differ)} of {len(recorded)} differ, e.g. {differ[:8]}"


def test_stored_entries_are_cache_hits(tmp_path: Path) -> None:
    """An older build's macro/meso entries stay valid: featurize finds them instead of rebuilding (macro: asked for
    the torch runtime they were embedded with; the default, auto, may resolve to onnx)."""
    from divscope.features.featurize import featurize_result

    ws = tmp_path / "ws"
    identity.build_pool(ws)
    identity.install_stored(ws)
    for side in identity.SIDES:
        for level in identity.STORED_LEVELS:
            assert featurize_result(ws, level, side, **identity.LEGACY_FEATURES[level]).status == "hit", (side, level)


def test_new_default_excludes_typeless_samples_and_changes_nothing_else(workspace: Path,
                                                                         rebuilt: dict[str, str]) -> None:
    """The default ``typeless: exclude`` (issue 16). Subsets of the six diversity strategies never hold a sample
    without a type on their axis, and the manifest counts those samples; where the pool of a strategy has none
    the subsets are byte-identical to the recorded ones, and so are the baselines'. Where it has some, subsets
    change (the recorded build chose typeless samples at the lowest level)."""
    from divscope.select.registry import STRATEGIES
    from divscope.select.strategies import Selector

    recorded = json.loads(identity.DIGESTS.read_text(encoding="utf-8"))
    now = identity.grid_digests(workspace, workspace.parent / "grid-default", options={})
    assert set(now) == {k for k in recorded if k.startswith("grid/")}
    selector = Selector(workspace)
    changed: dict[str, int] = {}
    for path in sorted((workspace.parent / "grid-default" / "plain").glob("*/*.manifest.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        key = f"grid/plain/{m['strategy']}/{m['file']}"
        if m["strategy"] not in STRATEGIES:
            assert now[key] == recorded[key] and now[key + ":manifest"] == recorded[key + ":manifest"], key
            continue
        side, _, level = m["strategy"].partition("-")
        typed = np.diff(selector.incidence(side, level).matrix.indptr) > 0
        assert m["typeless"] == "exclude" and typed[m["rows"]].all(), key
        assert (m["typeless_samples"], m["typed_samples"]) == (int((~typed).sum()), int(typed.sum()))
        if m["typeless_samples"] == 0:
            assert now[key] == recorded[key], key
        changed[m["strategy"]] = changed.get(m["strategy"], 0) + (now[key] != recorded[key])
    assert set(changed) == set(STRATEGIES)
    assert any(changed.values())  # the change is real on this pool
