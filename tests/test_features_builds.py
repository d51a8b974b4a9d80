"""Explicit features (issue 19, item 1): ``divscope features WS`` lists the feature builds, and a selection from a
(level, side) with several builds must name the one it uses (``--features KEY`` or ``OPTION=VALUE``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import divscope
from divscope.cli import main
from divscope.features.builds import feature_builds
from divscope.features.featurize import featurize_result

pytestmark = pytest.mark.usefixtures("divscope_cache")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """300 pairs; response-micro built twice (tokens, then words), instruction-micro once, response-macro twice
    with the same embeddings (two cluster sizes)."""
    path = tmp_path_factory.mktemp("builds") / "ws"
    divscope.ingest("builtin:sharegpt-pairs?n=300&seed=2", path)
    keys = {"tokens": featurize_result(path, "micro", "response").key,
            "words": featurize_result(path, "micro", "response", unit="words").key,
            "instruction": featurize_result(path, "micro", "instruction").key,
            "macro5": featurize_result(path, "macro", "response", min_cluster_size=5).key,
            "macro8": featurize_result(path, "macro", "response", min_cluster_size=8).key}
    return {"path": path, "keys": keys}


def _select(ws: dict, out: Path, *extra: str, strategy: str = "response-micro") -> int:
    args = ["select", str(ws["path"]), "-s", strategy, "-n", "40", "-o", str(out), *extra]
    return main([*args, "-d", "0.5"] if strategy != "random" and "-macro" not in strategy
                and strategy != "k-center" else args)


def test_several_builds_and_no_pin_is_a_one_line_error(ws: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    keys = ws["keys"]
    assert _select(ws, tmp_path / "a.jsonl") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: 2 response-micro feature builds in ")
    assert re.search(rf"{keys['tokens'][:10]} \([^)]*unit=tokens", err)
    assert re.search(rf"{keys['words'][:10]} \([^)]*unit=words", err)
    assert "latest" in err and "pick one with --features KEY" in err
    assert not (tmp_path / "a.jsonl").exists()
    # a grid says so before it writes any subset
    assert main(["grid", str(ws["path"]), "--strategies", "random,response-micro", "--levels", "2", "--sizes",
                 "20", "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "response-micro feature builds" in err and not (tmp_path / "g").exists()
    # a pin that names nothing, or an option no build has, is a one-line error too
    for pin, message in (("0000", "names no feature build"), ("unt=words", "did you mean 'unit'"),
                         ("unit=chars", "no response-micro feature build in")):
        assert _select(ws, tmp_path / "b.jsonl", "--features", pin) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (pin, err)


def test_features_pick_the_named_build(ws: dict, tmp_path: Path) -> None:
    keys = ws["keys"]
    assert _select(ws, tmp_path / "t.jsonl", "--features", keys["tokens"][:6]) == 0
    assert _select(ws, tmp_path / "w.jsonl", "--features", keys["words"]) == 0
    assert _select(ws, tmp_path / "w2.jsonl", "--features", "unit=words") == 0
    t, w, w2 = (json.loads((tmp_path / f"{n}.jsonl.manifest.json").read_text()) for n in ("t", "w", "w2"))
    assert t["ids"] != w["ids"] and w["ids"] == w2["ids"]
    assert t["features_config"]["unit"] == "tokens" and w["features_config"]["unit"] == "words"
    assert t["request"]["features"] == [keys["tokens"]] and w2["request"]["features"] == ["unit=words"]
    assert (tmp_path / "w.jsonl").read_bytes() == (tmp_path / "w2.jsonl").read_bytes()
    # the grid and the spec's selection take the same setting
    assert main(["grid", str(ws["path"]), "--strategies", "response-micro", "--levels", "0.5", "--sizes", "40",
                 "-o", str(tmp_path / "g"), "--features", keys["words"][:8]]) == 0
    g = json.loads((tmp_path / "g" / "response-micro" / "n40-d0.500-s0.jsonl.manifest.json").read_text())
    assert g["ids"] == w["ids"]
    from divscope.select.settings import GridSettings
    from divscope.select.subsets import run_grid_settings

    spec_grid = GridSettings.model_validate({"strategies": ["response-micro"], "levels": [0.5], "sizes": [40],
                                             "features": [keys["tokens"]]})
    manifests, _ = run_grid_settings(ws["path"], tmp_path / "spec", spec_grid)
    assert manifests[0]["ids"] == t["ids"]


def test_one_build_is_used_unpinned_and_shared_embeddings_need_no_pin(ws: dict, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _select(ws, tmp_path / "i.jsonl", strategy="instruction-micro") == 0
    m = json.loads((tmp_path / "i.jsonl.manifest.json").read_text())
    assert "features" not in m["request"]  # no pin: the request is what it was before pins existed
    # two response-macro builds over the same embeddings: k-center reads those embeddings without a pin, while
    # response-macro (the clusters differ) needs one
    assert _select(ws, tmp_path / "k.jsonl", "--side", "response", strategy="k-center") == 0
    assert main(["select", str(ws["path"]), "-s", "response-macro", "-d", "1", "-n", "20",
                 "-o", str(tmp_path / "m.jsonl")]) == 2
    assert "2 response-macro feature builds" in capsys.readouterr().err
    assert main(["select", str(ws["path"]), "-s", "response-macro", "-d", "1", "-n", "20",
                 "-o", str(tmp_path / "m.jsonl"), "--features", "min_cluster_size=8"]) == 0


def test_features_lists_every_build(ws: dict, capsys: pytest.CaptureFixture[str]) -> None:
    keys = ws["keys"]
    builds = feature_builds(ws["path"])
    assert [(b.side, b.level, b.key) for b in builds] == [
        ("instruction", "micro", keys["instruction"]), ("response", "macro", keys["macro5"]),
        ("response", "macro", keys["macro8"]), ("response", "micro", keys["tokens"]),
        ("response", "micro", keys["words"])]
    assert [b.key for b in builds if b.latest] == [keys["instruction"], keys["macro8"], keys["words"]]
    assert all(b.current and b.size > 0 and b.built_at for b in builds)
    assert main(["features", str(ws["path"])]) == 0
    lines = capsys.readouterr().out.splitlines()  # not a terminal: one plain tab-separated line per build
    assert lines[0].split("\t") == ["level", "side", "key", "options", "size", "built", "note"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[2] for r in rows] == [b.key for b in builds]
    words = next(r for r in rows if r[2] == keys["words"])
    assert words[:2] == ["micro", "response"] and "unit=words" in words[3] and words[6] == "latest"
    assert "min_cluster_size=5" in next(r for r in rows if r[2] == keys["macro5"])[3]
    assert "tokenizer=smollm2" in next(r for r in rows if r[2] == keys["instruction"])[3]  # one build: all options


def test_a_macro_build_without_a_runtime_reads_as_torch(tmp_path: Path) -> None:
    """Macro entries built before runtimes existed (and torch ones since) leave ``runtime`` out of their config:
    they ran on torch, whatever the default (``auto``) now resolves to, so ``--features runtime=torch`` finds them."""
    from divscope.features.builds import FeatureBuild

    def build(level: str, config: dict) -> FeatureBuild:
        return FeatureBuild(level, "response", "k" * 16, config, "", 0, None, True, True, tmp_path)

    assert build("macro", {"min_cluster_size": 8}).value("runtime") == "torch"
    assert build("macro", {"runtime": "onnx"}).value("runtime") == "onnx"
    assert build("micro", {}).value("unit") == "tokens"  # other absent options read as their default
