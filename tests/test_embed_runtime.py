"""Macro embedding runtimes: ONNX Runtime (fp32 / int8) next to torch, on the real MiniLM model and real texts.

The cache key holds the runtime (and does not for torch, so caches from before runtimes stay valid); the default,
auto, is resolved (onnx on a CPU, torch on CUDA or without onnxruntime) before it is keyed or stored; ONNX
embeddings match torch's, the local export is deterministic, and a missing onnxruntime is a one-line install hint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from divscope import models
from divscope.errors import DivscopeError
from divscope.experiment.spec import ExperimentSpec
from divscope.features import embed_runtime, macro
from divscope.features.featurize import featurize_result, resolve_config

pytestmark = pytest.mark.usefixtures("divscope_cache")  # tests/conftest.py: session-wide temp model cache
pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'divscope[onnx]')")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _auto_here() -> str:
    """What ``auto`` must resolve to on this machine (onnxruntime is installed: see the importorskip above)."""
    return "torch" if models.default_device() == "cuda" else "onnx"


def test_runtime_reaches_the_cache_key_and_torch_keeps_the_old_one(ws):
    default, _, key = resolve_config(ws, "macro", "instruction")
    torch_cfg, _, torch_key = resolve_config(ws, "macro", "instruction", runtime="torch")
    onnx_cfg, _, onnx_key = resolve_config(ws, "macro", "instruction", runtime="onnx")
    _, _, int8_key = resolve_config(ws, "macro", "instruction", runtime="onnx-int8")
    assert "runtime" not in torch_cfg, "the torch config is the one before runtimes"
    assert onnx_cfg["runtime"] == "onnx" and len({torch_key, onnx_key, int8_key}) == 3
    # the default (auto) is keyed as the runtime it resolves to, never as "auto"
    assert key == {"onnx": onnx_key, "torch": torch_key}[_auto_here()]
    assert default == {"onnx": onnx_cfg, "torch": torch_cfg}[_auto_here()]
    # the embeddings cache too (torch: the key computed before runtimes existed)
    keys = {rt: macro._emb_key(ws, "instruction", "minilm", rt) for rt in embed_runtime.RUNTIMES}
    assert len(set(keys.values())) == 3
    fp = ws.pool.fingerprint
    old = hashlib.sha256(json.dumps([macro.EMB_VERSION, fp, "instruction", models.embedder_identity("minilm"),
                                     macro.MAX_CHARS]).encode()).hexdigest()[:20]
    assert keys["torch"] == old
    # a spec's fingerprint: unchanged at the default (auto: a study fingerprints the spec it resolved, see
    # test_a_study_records_its_resolved_runtime) and at torch, another study with onnx
    base = ExperimentSpec().fingerprint()
    assert base == "420e026b037c086f", "the default study's fingerprint from before runtimes existed"
    for same in ({"features": {"macro": {"runtime": "torch"}}}, {"metrics": {"runtime": "torch"}},
                 {"features": {"macro": {"runtime": "torch"}}, "metrics": {"runtime": "torch"}}):
        assert ExperimentSpec.model_validate(same).fingerprint() == base, same
    for other in ({"features": {"macro": {"runtime": "onnx"}}}, {"metrics": {"runtime": "onnx-int8"}}):
        assert ExperimentSpec.model_validate(other).fingerprint() != base, other
    with pytest.raises(DivscopeError, match="unknown embedding runtime 'tf'"):
        resolve_config(ws, "macro", "instruction", runtime="tf")


def test_auto_is_onnx_on_a_cpu_and_torch_with_a_warning_without_onnxruntime(monkeypatch, capsys):
    assert embed_runtime.resolve() == embed_runtime.resolve("auto") == _auto_here()
    assert [embed_runtime.resolve(rt) for rt in embed_runtime.RUNTIMES] == list(embed_runtime.RUNTIMES)
    if _auto_here() == "torch":
        return  # a CUDA machine: torch, whatever is installed
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` does when it is absent
    monkeypatch.setattr(embed_runtime, "_WARNED", [])
    capsys.readouterr()
    assert embed_runtime.resolve() == "torch" and embed_runtime.resolve("auto") == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['warning: runtime auto: onnxruntime is not installed, so the embedder runs on torch (same model, '
                   'about half the speed on a CPU); pip install "divscope[onnx]"'], err  # one line, once


def test_auto_does_not_import_torch_where_no_gpu_can_be():
    """Resolving auto on a Linux machine without an NVIDIA device node leaves torch unimported (a cache hit of
    the default macro features then costs no torch import)."""
    if not sys.platform.startswith("linux") or any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/dxg")):
        pytest.skip("an NVIDIA device node exists: torch decides")
    code = "import sys; from divscope.features import embed_runtime; print(embed_runtime.resolve(), 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["onnx", "False"], proc.stdout + proc.stderr


def test_a_study_records_its_resolved_runtime(tmp_path):
    """A new study stores the runtime auto resolved to (onnx on a CPU) and continues on it; a study stored with
    torch (as the version before auto wrote every study) continues on torch under the same default spec; a spec
    that names another runtime than the stored one is refused with the way to continue."""
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import check_study

    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    spec = parse_spec({"name": "s"})
    ran = check_study(new, spec, "cmd")
    stored = json.loads((new / "study.json").read_text())
    here = _auto_here()
    assert stored["spec"]["features"]["macro"]["runtime"] == stored["spec"]["metrics"]["runtime"] == here
    assert (ran.features.macro.runtime, ran.metrics.runtime) == (here, here)
    assert stored["spec_fingerprint"] == ran.fingerprint()
    assert check_study(new, spec, "cmd").features.macro.runtime == here  # continues
    other = {"onnx": "torch", "torch": "onnx"}[here]
    with pytest.raises(DivscopeError, match=f"runtime {here}; to continue it, set `runtime: {here}`"):
        check_study(new, parse_spec({"name": "s", "features": {"macro": {"runtime": other}}}), "cmd")

    legacy = parse_spec({"name": "s", "features": {"macro": {"runtime": "torch"}}, "metrics": {"runtime": "torch"}})
    check_study(old, legacy, "cmd")  # the study.json the previous default (torch) wrote
    assert json.loads((old / "study.json").read_text())["spec_fingerprint"] == spec.fingerprint()
    again = check_study(old, spec, "cmd")
    assert (again.features.macro.runtime, again.metrics.runtime) == ("torch", "torch")
    if here == "onnx":
        assert ran.fingerprint() != again.fingerprint()  # a new CPU study is another study than a torch one


def test_onnx_embeddings_match_torch_on_real_texts(ws):
    texts = ws.pool.texts("instruction")[:48] + ws.pool.texts("response")[:48]
    ref = macro.embed_texts(texts, runtime="torch")
    fp32 = macro.embed_texts(texts, runtime="onnx")
    int8 = macro.embed_texts(texts, runtime="onnx-int8")
    assert fp32.shape == int8.shape == ref.shape == (96, 384)
    cos32, cos8 = (fp32 * ref).sum(1), (int8 * ref).sum(1)
    assert cos32.min() > 0.999, cos32.min()
    assert cos8.mean() > 0.98 and cos8.min() > 0.9, (cos8.mean(), cos8.min())
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_featurize_with_onnx_is_its_own_entry_and_deterministic(ws, tmp_path):
    torch_res = featurize_result(ws, "macro", "instruction", runtime="torch")
    onnx_res = featurize_result(ws, "macro", "instruction", runtime="onnx")
    assert onnx_res.status == "built" and onnx_res.path != torch_res.path
    assert onnx_res.incidence.config["provenance"]["embedding_key"] != \
        torch_res.incidence.config["provenance"]["embedding_key"]
    emb_torch = macro.load_embeddings(ws, "instruction", compute=False, runtime="torch")
    emb_onnx = macro.load_embeddings(ws, "instruction", compute=False, runtime="onnx")
    assert not np.array_equal(emb_torch, emb_onnx), "a separate embedding file, computed by ONNX Runtime"
    key = onnx_res.incidence.config["provenance"]["embedding_key"]
    meta = json.loads((macro.embeddings_dir(ws) / "instruction" / key / "meta.json").read_text())
    assert meta["runtime"] == "onnx"
    assert featurize_result(ws, "macro", "instruction", runtime="onnx").status == "hit"
    # same inputs, a fresh workspace and a fresh model cache (a new export): the same bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVSCOPE_CACHE", str(tmp_path / "cache2"))
        embed_runtime._MEMO.clear()
        other = tmp_path / "ws2"
        other.mkdir()
        (other / "pool.parquet").write_bytes((ws.path / "pool.parquet").read_bytes())
        again = featurize_result(other, "macro", "instruction", runtime="onnx")
        assert np.array_equal(macro.load_embeddings(other, "instruction", compute=False, runtime="onnx"),
                              emb_onnx)
        assert np.array_equal(again.incidence.matrix.indices, onnx_res.incidence.matrix.indices)
    embed_runtime._MEMO.clear()


def test_export_is_local_cached_and_byte_identical(tmp_path):
    paths = {}
    for run in ("a", "b"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DIVSCOPE_CACHE", str(tmp_path / run))
            mp.setenv("HF_HUB_OFFLINE", "1")
            paths[run] = (embed_runtime.export("minilm", "onnx"), embed_runtime.export("minilm", "onnx-int8"))
            assert str(paths[run][0]).startswith(str(tmp_path / run / "onnx"))
            assert not list((tmp_path / run / "onnx").rglob("*.tmp")), "no temporary left behind"
    for a, b in zip(paths["a"], paths["b"], strict=True):
        assert _sha(a) == _sha(b)
    assert paths["a"][1].stat().st_size < paths["a"][0].stat().st_size / 3, "int8 weights"


def test_missing_onnxruntime_is_a_one_line_install_hint(ws, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` does when it is absent
    with pytest.raises(DivscopeError, match=r'runtime \'onnx\' needs ONNX Runtime: pip install "divscope\[onnx\]"'):
        featurize_result(ws, "macro", "instruction", runtime="onnx")
    # through the CLI: one `error:` line, no traceback
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from divscope.cli import main; raise SystemExit(main())")
    proc = subprocess.run([sys.executable, "-c", code, "featurize", str(ws.path), "--level", "macro", "--side",
                           "instruction", "--runtime", "onnx-int8"], capture_output=True, text=True,
                          env={**os.environ, "DIVSCOPE_PROGRESS": "0"}, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines() if ln.strip()]
    assert lines == ['error: runtime \'onnx-int8\' needs ONNX Runtime: pip install "divscope[onnx]" '
                     "(onnxruntime, onnx)"], proc.stderr + proc.stdout


@pytest.mark.slow
def test_metric_cards_reuse_the_runtime_embeddings_and_keep_old_params(ws):
    from divscope.metrics import metric_card
    from divscope.metrics.card import card_params

    assert "embed_runtime" not in card_params(runtime="torch"), "cards computed before runtimes keep their parameters"
    assert card_params(runtime="onnx-int8")["embed_runtime"] == "onnx-int8"
    assert card_params().get("embed_runtime", "torch") == _auto_here()  # auto: recorded as what ran
    featurize_result(ws, "macro", "instruction", runtime="onnx")
    rows = list(range(0, 40, 2))
    small = {"pairs_sample": 12, "bleu_sample": 4, "vendi_sample": 12}
    card = metric_card(ws.pool.records(rows), ws=ws, rows=rows, runtime="onnx", **small)
    assert card["params"]["embed_runtime"] == "onnx"
    assert card["instruction"]["embeddings_from"] == "workspace"  # the onnx embeddings featurize stored
    assert card["response"]["embeddings_from"] == "computed"
    torch_card = metric_card(ws.pool.records(rows), ws=ws, rows=rows, runtime="torch", **small)
    assert torch_card["instruction"]["embeddings_from"] == "computed", "no torch embeddings in this workspace"
    for side in ("instruction", "response"):
        assert card[side]["mean_cosine_distance"] == pytest.approx(torch_card[side]["mean_cosine_distance"],
                                                                   abs=2e-3)


def test_selection_reads_the_embeddings_of_the_studys_runtime(ws):
    """k-center and the distance baselines read the embeddings the study's macro options made."""
    from divscope.select.strategies import Selector

    featurize_result(ws, "macro", "instruction", runtime="onnx-int8")
    rows = np.arange(0, 240, 3)
    sel = Selector(ws, rows, features={"macro": {"runtime": "onnx-int8"}})
    want = macro.load_embeddings(ws, "instruction", compute=False, runtime="onnx-int8")[rows]
    assert np.array_equal(sel.embeddings("instruction"), want.astype(np.float32))
    # without options: the embeddings of the latest macro features' runtime (not auto's, here onnx)
    assert np.array_equal(Selector(ws, rows).embeddings("instruction"), want.astype(np.float32))
