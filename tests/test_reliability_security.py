"""Security: safe YAML only, no unpickling of files, keys only from the environment and never written.

Static checks read the source of ``src/divscope`` (AST, not grep, so comments and strings do not count); the
planted-key tests run real stages (CLI subprocesses against the real HTTP test server) and grep every file
they wrote and every line they printed. ``divscope run`` gets the same grep in tests/test_reliability_kill.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

import divscope
from helpers import real_pairs
from killpoints import cli_argv, env
from openai_server import Fault, OpenAIServer

pytestmark = pytest.mark.reliability

SRC = Path(divscope.__file__).parent
KEY = "sk-divscope-planted-0b7d41c9e2aa"
# pickle.loads is allowed only where divscope unpickles what its own worker process pickled moments before.
PICKLE_ALLOWED = {"backend.py"}


def _calls() -> list[tuple[str, ast.Call]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                out.append((rel, node))
    return out


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


CALLS = _calls()


def test_yaml_is_only_loaded_safely() -> None:
    import yaml

    from divscope.experiment.spec import _unique_key_loader

    bad = []
    for rel, call in CALLS:
        name = _name(call.func)
        if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
            bad.append(f"{rel}:{call.lineno} {name}")
        if name in ("yaml.load", "yaml.load_all"):
            loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            text = ast.unparse(loader) if loader is not None else "<none>"
            if loader is None or any(u in text for u in ("FullLoader", "UnsafeLoader", "yaml.Loader")):
                bad.append(f"{rel}:{call.lineno} {name}(Loader={text})")
    assert bad == []
    assert issubclass(_unique_key_loader(), yaml.SafeLoader)


def test_no_unpickling_of_files() -> None:
    bad = []
    for rel, call in CALLS:
        name = _name(call.func)
        if name.endswith("torch.load") or name == "load" and "torch" in rel:
            wo = _kw(call, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                bad.append(f"{rel}:{call.lineno} torch.load without weights_only=True")
        if name in ("pickle.load", "dill.load", "joblib.load", "cloudpickle.load", "shelve.open", "marshal.load"):
            bad.append(f"{rel}:{call.lineno} {name}")
        if name in ("pickle.loads", "dill.loads", "cloudpickle.loads") and rel not in PICKLE_ALLOWED:
            bad.append(f"{rel}:{call.lineno} {name}")
        if name.endswith("np.load") or name.endswith("numpy.load"):
            ap = _kw(call, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                bad.append(f"{rel}:{call.lineno} np.load(allow_pickle={ast.unparse(ap)})")
    assert bad == []


def test_no_eval_exec_shell_or_blind_extraction() -> None:
    bad = []
    for rel, call in CALLS:
        name = _name(call.func)
        if name in ("eval", "exec", "os.system", "os.popen") or name.endswith(".extractall"):
            bad.append(f"{rel}:{call.lineno} {name}")
        shell = _kw(call, "shell")
        if name.startswith("subprocess.") and isinstance(shell, ast.Constant) and shell.value is True:
            bad.append(f"{rel}:{call.lineno} {name}(shell=True)")
    assert bad == []


def test_endpoint_client_takes_a_variable_name_never_a_key() -> None:
    import inspect

    from divscope.endpoint import EndpointClient

    params = inspect.signature(EndpointClient).parameters
    assert "api_key_env" in params and not any(p in params for p in ("api_key", "key", "token"))


def _grep(roots: list[Path], logs: list[str]) -> list[str]:
    hits = [str(p) for root in roots for p in root.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    return hits + [f"log {i}" for i, text in enumerate(logs) if KEY in text]


def _tags(messages: list[dict]) -> str:
    return json.dumps([{"tag": "write text", "explanation": "x"}, {"tag": "answer question", "explanation": "y"}])


def test_planted_key_is_sent_but_never_written_or_printed(tmp_path: Path, monkeypatch) -> None:
    """ingest -> featurize (meso, endpoint tagger) -> respond through the CLI with a key in the environment;
    the server echoes the key back inside error bodies for some requests (as some proxies do). The key must
    reach the server and appear in no file, no error record and no console line."""
    monkeypatch.setenv("DIVSCOPE_PLANTED_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    ws, ws2 = tmp_path / "ws", tmp_path / "ws2"
    divscope.ingest(real_pairs(12), ws)
    echo = f'{{"error": {{"message": "invalid key Bearer {KEY} for this model", "padding": "{"x" * 280}"}}}}'
    calls = {"n": 0}

    def responder(messages: list[dict]):
        calls["n"] += 1
        if calls["n"] % 4 == 1:  # every fourth request fails once, echoing the key (cut across the snippet end)
            return Fault.status(500, body=echo)
        return _tags(messages) if "User query:" in messages[-1]["content"] else "REGEN " + messages[-1]["content"]

    logs: list[str] = []
    with OpenAIServer(responder=responder) as srv:
        for args in (["featurize", str(ws), "--level", "meso", "--side", "instruction", "--tagger", "endpoint",
                      "--meso-option", f"base_url={srv.base_url}", "--meso-option", "model=tagger",
                      "--meso-option", "api_key_env=DIVSCOPE_PLANTED_KEY", "--meso-option", "max_retries=0",
                      "--meso-option", "max_failure_rate=1.0", "--meso-option", "min_count=1"],
                     ["respond", str(ws), "--endpoint", srv.base_url, "--model", "m", "--out", str(ws2),
                      "--api-key-env", "DIVSCOPE_PLANTED_KEY", "--max-retries", "0", "--concurrency", "2"]):
            proc = subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=600, env=env())
            logs += [proc.stdout, proc.stderr]
            assert proc.returncode in (0, 2), proc.stderr
        assert srv.headers and all(h.get("authorization") == f"Bearer {KEY}" for h in srv.headers)
    recorded = (ws2 / "respond_failures.jsonl").read_text()
    assert "HTTP 500" in recorded and "***" in recorded  # the failure is recorded, with the key redacted
    assert _grep([ws, ws2], logs) == []


def test_key_echoed_in_an_error_is_redacted_before_it_is_cut(monkeypatch) -> None:
    """An error body echoing the key right where the stored snippet is cut must not leave a key prefix."""
    from divscope.endpoint import EndpointClient

    monkeypatch.setenv("DIVSCOPE_PLANTED_KEY", KEY)
    for pad in range(280, 300, 3):
        body = "e" * pad + KEY + " tail"
        with OpenAIServer(responder=lambda m, b=body: Fault.status(500, body=b)) as srv:
            c = EndpointClient(srv.base_url, "m", api_key_env="DIVSCOPE_PLANTED_KEY", max_retries=0, timeout=5)
            res = c.chat([{"role": "user", "content": "x"}])
        assert not res.ok and KEY[:10] not in res.error and KEY[:10] not in " ".join(res.history), res.error


def _files(root: Path, pattern: str) -> list[Path]:
    return [p for p in root.glob(pattern) if p.is_file()]


@pytest.mark.slow  # ~30-50 s: the meso tagger's models and the metric cards' embedder load
def test_manifests_and_reports_hold_no_environment(tmp_path: Path, monkeypatch) -> None:
    """The key sits where every endpoint client looks by default (OPENAI_API_KEY; no --api-key-env given) and is
    really used: the meso endpoint tagger and respond send it on every request. Their results flow on into
    feature entries and the tagger's caches, a grid's subset manifests (over the endpoint-tagged meso features),
    metric cards, and the respond'ed pool. The key reaches the server, and no file under the test folder and
    no console line holds it."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_TOKEN", KEY)
    ws, ws2, grid = tmp_path / "ws", tmp_path / "ws2", tmp_path / "grid"
    divscope.ingest(real_pairs(30), ws)
    logs: list[str] = []
    with OpenAIServer(responder=lambda m: _tags(m) if "User query:" in m[-1]["content"] else "REGEN") as srv:
        for args in (["featurize", str(ws), "--level", "meso", "--side", "instruction", "--tagger", "endpoint",
                      "--meso-option", f"base_url={srv.base_url}", "--meso-option", "model=tagger",
                      "--meso-option", "min_count=1"],
                     ["grid", str(ws), "--sizes", "8", "--levels", "2", "--strategies", "instruction-meso,random",
                      "--out", str(grid)],
                     ["metrics", str(grid), "--pairs-sample", "8", "--bleu-sample", "8", "--vendi-sample", "8"],
                     ["respond", str(ws), "--endpoint", srv.base_url, "--model", "m", "--out", str(ws2)]):
            proc = subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=600, env=env())
            logs += [proc.stdout, proc.stderr]
            assert proc.returncode == 0, proc.stderr
        models = [b["model"] for b in srv.bodies]
        assert models.count("tagger") >= 25 and models.count("m") >= 25  # each text once (duplicates are asked once)
        assert len(srv.headers) == len(models) and all(h.get("authorization") == f"Bearer {KEY}" for h in srv.headers)
    # The places a key could have been copied to were written (the grep below has something to read).
    assert _files(ws, "features/instruction-meso/*/entry.json") and _files(ws, "cache/meso/*.jsonl")
    assert len(_files(grid, "*/*.manifest.json")) == 3 and (grid / "metrics.json").is_file()
    assert len(_files(grid, "*/*.metrics.json")) == 3 and (ws2 / "pool.parquet").is_file()
    entry = json.loads(_files(ws, "features/instruction-meso/*/entry.json")[0].read_text())
    assert entry["config"]["tagger"] == "endpoint"
    assert _grep([tmp_path], logs) == []


def test_a_key_given_as_an_option_value_is_refused_and_never_written(tmp_path: Path) -> None:
    """A user who passes the key itself as an option (``--meso-option api_key=...``) gets a one-line error that
    names the fix (an environment variable named by api_key_env), before anything is written: the feature entry's
    config and every manifest's features_config used to hold it. A misspelt tagger option is refused the same way."""
    ws = tmp_path / "ws"
    divscope.ingest(real_pairs(30), ws)
    logs: list[str] = []
    with OpenAIServer(responder=_tags) as srv:
        base = ["featurize", str(ws), "--level", "meso", "--side", "instruction", "--tagger", "endpoint",
                "--meso-option", f"base_url={srv.base_url}", "--meso-option", "model=tagger"]
        for extra, message in ((f"api_key={KEY}", "api_key_env=NAME"), ("max_concurency=2", "max_concurrency")):
            proc = subprocess.run(cli_argv(*base, "--meso-option", extra), capture_output=True, text=True,
                                  timeout=600, env=env())
            logs += [proc.stdout, proc.stderr]
            assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (ws / "features" / "instruction-meso").exists()
    assert _grep([tmp_path], logs) == []
