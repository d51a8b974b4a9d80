"""What runs the macro embedder: PyTorch (sentence-transformers) or ONNX Runtime on the CPU.

The default, ``runtime="auto"``, is resolved by :func:`resolve` before anything is keyed or embedded: ``onnx`` on a
machine without CUDA when onnxruntime is installed (1.4-2.3x torch's texts/s on 2 cores, mean cosine 1.000000 to
torch's embeddings, adjusted Rand index of the macro labels >= 0.99: docs/features.md), ``torch`` on a CUDA
machine, and ``torch`` with a one-line warning on stderr when onnxruntime is missing. Only the
resolved runtime is recorded (cache keys, card parameters, a study's spec); ``torch``, what every version before
runtimes ran, is left out of keys so their caches stay valid.

``runtime="onnx"`` exports the embedder's transformer to ONNX from the weights already on disk (the shipped
all-MiniLM-L6-v2, or the given folder: never a hub download) with ``torch.onnx.export`` and runs it with ONNX
Runtime; ``runtime="onnx-int8"`` runs the same graph with its weights quantised to int8 by
``onnxruntime.quantization.quantize_dynamic`` (signed int8, per output channel: per-tensor scales drop the cosine
to torch's embeddings to 0.72-0.92 on short texts, per-channel keeps it at 0.98-0.996). Tokenisation, pooling and normalisation stay the
sentence-transformers model's own modules, so only the transformer's forward pass changes.

The exported files are cached under ``<divscope cache>/onnx/<key>/`` (``key``: the embedder's identity, the export
recipe and the torch / onnx / onnxruntime versions), each written atomically; exporting twice gives the same bytes
(tested). Needs the ``onnx`` extra: ``pip install "divscope[onnx]"`` (onnxruntime and onnx). sentence-transformers'
own ``backend="onnx"`` is not used: it needs optimum-onnx, whose only release pins transformers < 4.58.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import typing
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from divscope import models
from divscope.errors import DivscopeError
from divscope.features.settings import DEFAULT_RUNTIME, LEGACY_RUNTIME, EmbedRuntime
from divscope.store.atomic import atomic_path, write_json

CHOICES: tuple[str, ...] = typing.get_args(EmbedRuntime)  # one source: divscope.features.settings
RUNTIMES: tuple[str, ...] = tuple(r for r in CHOICES if r != "auto")  # what ``auto`` resolves among
__all__ = ["CHOICES", "DEFAULT_RUNTIME", "LEGACY_RUNTIME", "RUNTIMES", "OnnxEmbedder", "check_runtime", "export",
           "export_dir", "load_embedder", "require_onnxruntime", "resolve"]
EXPORT_VERSION = 1  # bump when the export or quantisation recipe changes
OPSET = 17
INSTALL_HINT = 'runtime {runtime!r} needs ONNX Runtime: pip install "divscope[onnx]" (onnxruntime, onnx)'

ONNX_MISSING = ('runtime auto: onnxruntime is not installed, so the embedder runs on torch (same model, about half '
                'the speed on a CPU); pip install "divscope[onnx]"')

_MEMO: dict[tuple[str, str], OnnxEmbedder] = {}
_LOCK = threading.Lock()
_WARNED: list[bool] = []


def check_runtime(runtime: str) -> str:
    if runtime not in CHOICES:
        raise DivscopeError(f"unknown embedding runtime {runtime!r}: use {' | '.join(CHOICES)}")
    return runtime


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_possible() -> bool:
    """Whether torch could see a CUDA device. Answered without importing torch (1-2 s, most of a cache hit's time)
    where none can exist: macOS, or Linux without an NVIDIA device node (/dev/nvidiactl; WSL's /dev/dxg)."""
    if "torch" not in sys.modules:
        if sys.platform == "darwin":
            return False
        if sys.platform.startswith("linux") and not any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/dxg")):
            return False
    return models.default_device() == "cuda"


def resolve(runtime: str | None = None) -> str:
    """The runtime that runs: ``runtime`` itself, or for ``auto`` (and None) ``torch`` on a CUDA machine, else
    ``onnx`` when onnxruntime is installed, else ``torch`` (with a one-line warning, once per process)."""
    runtime = check_runtime(runtime or DEFAULT_RUNTIME)
    if runtime != "auto":
        return runtime
    if _cuda_possible():
        return "torch"
    if _has_onnxruntime():
        return "onnx"
    if not _WARNED:  # one line, once per process
        from divscope.ui import err_console

        _WARNED.append(True)
        err_console.print(f"warning: {ONNX_MISSING}", markup=False)
    return LEGACY_RUNTIME


def require_onnxruntime(runtime: str = "onnx") -> None:
    """One-line install hint (DivscopeError) when onnxruntime or onnx is missing."""
    if not _has_onnxruntime():
        raise DivscopeError(INSTALL_HINT.format(runtime=runtime))


def _version(dist: str) -> str:
    return models.package_version(dist, missing="absent")


def export_dir(spec: str) -> Path:
    """Where the ONNX files of embedder ``spec`` are cached (no model is loaded)."""
    recipe = [EXPORT_VERSION, OPSET, models.embedder_identity(spec),
              *(_version(d) for d in ("torch", "onnx", "onnxruntime"))]
    return models.cache_dir() / "onnx" / hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:20]


def _forward_module(auto_model: Any, names: list[str]) -> Any:
    """The transformer's forward pass with positional inputs, returning the token embeddings (what
    sentence-transformers' Pooling module reads)."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = auto_model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    return Forward().train(False)  # inference mode (what nn.Module.eval() does)


def _input_names(st_model: Any) -> list[str]:
    feats = st_model.preprocess(["a"]) if hasattr(st_model, "preprocess") else st_model.tokenize(["a"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats]


def export(spec: str, runtime: str) -> Path:
    """The ONNX file of ``spec`` for ``runtime`` (exported and cached on first use; deterministic bytes)."""
    runtime = resolve(runtime)
    if runtime not in ("onnx", "onnx-int8"):
        raise DivscopeError(f"runtime {runtime!r} has no ONNX export: use onnx or onnx-int8")
    require_onnxruntime(runtime)
    folder = export_dir(spec)
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    if not fp32.is_file():
        import torch

        st_model = models.load_embedder(spec, device="cpu")
        names = _input_names(st_model)
        example = st_model.preprocess(["an example text", "a second, longer example text"]) \
            if hasattr(st_model, "preprocess") else st_model.tokenize(["an example text"])
        args = tuple(example[k] for k in names)
        axes = {k: {0: "batch", 1: "seq"} for k in [*names, "token_embeddings"]}
        with atomic_path(fp32) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(_forward_module(st_model[0].auto_model, names), args, str(tmp), dynamo=False,
                              input_names=names, output_names=["token_embeddings"], dynamic_axes=axes,
                              opset_version=OPSET, do_constant_folding=True)
    if runtime == "onnx-int8" and not int8.is_file():
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" advice, logged on the root logger
        try:
            with atomic_path(int8) as tmp:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
    path = int8 if runtime == "onnx-int8" else fp32
    meta = folder / "meta.json"
    if not meta.is_file():
        write_json(meta, {"embedder": spec, "identity": models.embedder_identity(spec), "opset": OPSET,
                          "export_version": EXPORT_VERSION, "torch": _version("torch"), "onnx": _version("onnx"),
                          "onnxruntime": _version("onnxruntime")})
    return path


class OnnxEmbedder:
    """``encode`` like a SentenceTransformer's (the subset divscope uses), with the transformer on ONNX Runtime."""

    def __init__(self, spec: str, runtime: str, threads: int | None = None):
        import onnxruntime as ort
        import torch

        self.spec, self.runtime = spec, runtime
        self.path = export(spec, runtime)
        self.st_model = models.load_embedder(spec, device="cpu")  # tokenizer, pooling, normalisation
        self.names = _input_names(self.st_model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.on_batch: Any = None  # called with each batch's size (the progress bar; torch's: a forward hook)

    def get_sentence_embedding_dimension(self) -> int:
        dim = getattr(self.st_model, "get_embedding_dimension", None) or self.st_model.get_sentence_embedding_dimension
        return int(dim())

    get_embedding_dimension = get_sentence_embedding_dimension

    def encode(self, texts: list[str], batch_size: int = 64, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False) -> np.ndarray:
        """L2-normalised float32 embeddings, batched in descending length like sentence-transformers'."""
        import torch

        n = len(texts)
        out = np.zeros((n, self.get_sentence_embedding_dimension()), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        prep = getattr(self.st_model, "preprocess", None) or self.st_model.tokenize
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            feats = prep([texts[i] for i in idx])
            ort_in = {k: np.asarray(feats[k], np.int64) for k in self.names}
            tokens = self.session.run(["token_embeddings"], ort_in)[0]
            feats = {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}
            feats["token_embeddings"] = torch.from_numpy(tokens)
            with torch.inference_mode():
                for module in list(self.st_model)[1:]:
                    feats = module(feats)
            emb = feats["sentence_embedding"].float()
            if normalize_embeddings:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out[idx] = emb.numpy()
            if self.on_batch is not None:
                self.on_batch(len(idx))
        return out


def load_embedder(spec: str, runtime: str) -> Any:
    """The embedder ``spec`` on ``runtime`` (``auto``: :func:`resolve`): a SentenceTransformer (torch) or an
    :class:`OnnxEmbedder` (memoised per process)."""
    runtime = resolve(runtime)
    if runtime == "torch":
        return models.load_embedder(spec)
    require_onnxruntime(runtime)
    key = (models.embedder_identity(spec), runtime)
    with _LOCK:
        if key not in _MEMO:
            _MEMO[key] = OnnxEmbedder(spec, runtime)
        return _MEMO[key]
