"""Behaviour kept through refactorings: the same pool gives the same feature bytes, cache keys and subsets as the
recorded build (tests/identity.py says what is recorded and why macro/meso entries are stored, not rebuilt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import identity

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("divscope_cache")]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("identity")
    ws = work / "ws"
    identity.build_pool(ws)
    identity.install_stored(ws)
    return identity.compute(ws, work / "grid")


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
    """An older build's macro/meso entries stay valid: featurize finds them instead of rebuilding."""
    from divscope.features.featurize import featurize_result

    ws = tmp_path / "ws"
    identity.build_pool(ws)
    identity.install_stored(ws)
    for side in identity.SIDES:
        for level in identity.STORED_LEVELS:
            assert featurize_result(ws, level, side).status == "hit", (side, level)
