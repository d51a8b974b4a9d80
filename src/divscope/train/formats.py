"""Chat formats: the template that renders a conversation, and the token that ends an assistant turn.

A model whose tokenizer has a chat template uses it (``model``). One without gets a named template of its family,
chosen from the tokenizer by ``auto``:

* ``llama-2`` for a SentencePiece vocabulary with ``<s>``/``</s>`` (Llama-2, Mistral): Meta's ``[INST]`` format,
  every exchange opening with BOS and every answer closed by EOS (``<s>[INST] q [/INST] a </s>``);
* ``chatml`` otherwise: ``<|im_start|>``/``<|im_end|>`` added to the vocabulary as special tokens, the model's
  embeddings resized to match (new rows set to the mean of the old ones, so loading is deterministic), and BOS
  in front when the tokenizer puts one before every text.

``chat_template`` may also name a Jinja file; markers written ``<|name|>`` in it that the vocabulary lacks are
added as special tokens the same way.

Whatever the format, the token that closes an assistant turn is read off the template's own rendering
(:func:`stop_token`): the labels of every assistant turn end with it (``train.chat``) and generation stops on it
(:func:`stop_token_ids`). A run records its format in ``train.json`` (:meth:`ChatFormat.record`) and evaluation
applies that same format (``train.run.Run.load``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError

CHOICES = ("auto", "model", "chatml", "llama-2")
LEGACY = "legacy"  # runs trained before formats were recorded: own template, else ChatML markers as plain text

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")

# Hugging Face's Llama-2-chat template (Meta's reference format), without its check that roles alternate.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

_MARKER = re.compile(r"<\|[A-Za-z0-9_.-]+\|>")
_PROBE_Q, _PROBE_A = "divscope probe question", "divscope probe answer"


@dataclass(frozen=True)
class ChatFormat:
    """``name``: model | chatml | llama-2 | legacy | file:NAME; ``template``: the Jinja text (None: the tokenizer's
    own); ``added_tokens``: special tokens the format needs in the vocabulary."""

    name: str
    template: str | None = None
    added_tokens: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "template": self.template, "added_tokens": list(self.added_tokens)}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ChatFormat:
        return cls(data["name"], data.get("template"), tuple(data.get("added_tokens") or ()))


def _adds_bos(tok: Any) -> bool:
    """Whether the tokenizer puts BOS before every text it encodes (Llama's do, SmolLM2's does not)."""
    if tok.bos_token_id is None:
        return False
    ids = tok("a")["input_ids"]
    return bool(ids) and ids[0] == tok.bos_token_id


def family(tok: Any) -> str:
    """The named format of a tokenizer without a template: llama-2 for SentencePiece with <s>/</s>, else chatml."""
    sentencepiece = any(t.startswith("\u2581") for t in tok.get_vocab())
    return "llama-2" if tok.bos_token == "<s>" and tok.eos_token == "</s>" and sentencepiece else "chatml"


def resolve_format(tok: Any, choice: str = "auto") -> ChatFormat:
    """The format ``choice`` (auto | model | chatml | llama-2 | legacy | a Jinja file) means for this tokenizer."""
    own = bool(getattr(tok, "chat_template", None))
    if choice in ("auto", "model", LEGACY):
        if own:
            return ChatFormat("model")
        if choice == "model":
            raise DivscopeError("chat_template model: this model's tokenizer has no chat template; use auto, "
                                "chatml, llama-2 or a Jinja file")
        if choice == LEGACY:
            return ChatFormat(LEGACY, CHATML)
        choice = family(tok)
    if choice == "chatml":
        return ChatFormat("chatml", ("{{ bos_token }}" if _adds_bos(tok) else "") + CHATML, CHATML_TOKENS)
    if choice == "llama-2":
        if tok.bos_token is None or tok.eos_token is None:
            raise DivscopeError("chat_template llama-2 needs a tokenizer with BOS and EOS tokens; use chatml")
        return ChatFormat("llama-2", LLAMA2)
    path = Path(choice).expanduser()
    if not path.is_file():
        raise DivscopeError(f"chat_template {choice!r}: not one of {', '.join(CHOICES)}, nor a Jinja file")
    text = path.read_text(encoding="utf-8")
    return ChatFormat(f"file:{path.name}", text, tuple(dict.fromkeys(_MARKER.findall(text))))


def apply_format(tok: Any, fmt: ChatFormat, model: Any = None) -> list[int]:
    """Give ``tok`` the format (template, special tokens, a pad token) and ``model`` embeddings for every token;
    returns the ids of the tokens it added (their embedding rows are new: LoRA must train them)."""
    if fmt.template is not None:
        tok.chat_template = fmt.template
    vocab = tok.get_vocab()
    missing = [t for t in fmt.added_tokens if t not in vocab]
    if missing:
        tok.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    new_ids = [int(tok.convert_tokens_to_ids(t)) for t in missing]
    if model is not None and new_ids:
        _init_embeddings(model, len(tok), new_ids)
    return new_ids


def _init_embeddings(model: Any, size: int, new_ids: list[int]) -> None:
    """Rows for ``new_ids`` (the matrix grown to ``size`` rows if needed), set to the mean of the rows before them
    in the input and the output embeddings: deterministic, so a LoRA run loads the base exactly as it trained."""
    import torch

    if model.get_input_embeddings().weight.shape[0] < size:
        model.resize_token_embeddings(size, mean_resizing=False)
    first = min(new_ids)
    with torch.no_grad():
        weights = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != weights[0].data_ptr():
            weights.append(out.weight)
        for w in weights:
            w[new_ids] = w[:first].mean(dim=0).to(w.dtype)


def stop_token(tok: Any) -> str | None:
    """The special token that closes an assistant turn in the tokenizer's template (``<|im_end|>``, ``</s>``,
    ``<|eot_id|>``...): the first special token after the answer in a rendered turn; None if there is none."""
    user = [{"role": "user", "content": _PROBE_Q}]
    try:
        text = tok.apply_chat_template([*user, {"role": "assistant", "content": _PROBE_A}], tokenize=False)
    except Exception:  # a template that refuses the probe conversation
        return None
    at = text.rfind(_PROBE_A)
    if at < 0:
        return None
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    for i in tok(text[at + len(_PROBE_A):], add_special_tokens=False)["input_ids"]:
        if i in special:
            return str(tok.convert_ids_to_tokens(i))
    return None


def stop_token_ids(tok: Any) -> list[int]:
    """What generation stops on: the template's end-of-turn token, EOS, and the usual end markers the vocabulary
    has as tokens (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``)."""
    ids: list[int] = []
    for t in (stop_token(tok), tok.eos_token, "<|im_end|>", "<|eot_id|>", "<|end|>"):
        if t is None:
            continue
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id and i not in ids:
            ids.append(i)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.insert(0, tok.eos_token_id)
    return ids
