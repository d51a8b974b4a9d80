"""Meso level: taggers (real spaCy, real embedder, real HTTP server), normalisation, min_count, merging, caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from divscope.errors import DivscopeError
from divscope.features.meso import (
    build_meso,
    clean_tag,
    default_min_count,
    merge_tags,
    normalize_config,
    normalize_tags,
    tag_cache_path,
    type_name,
)
from divscope.features.tagging import (
    DEFAULT_OFFLINE_METHOD,
    OFFLINE_METHODS,
    OfflineTagger,
    instag_messages,
    parse_instag,
    soft_match_scores,
)
from openai_server import (
    Fault,
    OpenAIServer,
    openai_server_fixture,  # noqa: F401 - registers the ``openai_server`` fixture
)

DATA = Path(__file__).parent / "data"


def load_refs(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


# -- normalisation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,clean", [
    ("Code-Generation!", "code generation"),
    ("  Python   Programming ", "python programming"),
    ("C++ programming", "c++ programming"),
    ("C#", "c#"),
    ("Node.js", "node.js"),
    ("Poem.", "poem"),
    ("write_poem", "write poem"),
    ("Ｆｕｌｌwidth", "fullwidth"),
    ("12345", ""),
    ("", ""),
    ("a b c d e f g", ""),
    ("x" * 61, ""),
])
def test_clean_tag(raw, clean):
    assert clean_tag(raw) == clean


def test_normalize_tags_lemmatises_and_dedups():
    out = normalize_tags([["Writing Poems", "write poem", "SQL Queries", "Explaining concepts", "C++ programming"],
                          ["Data", "data analysis", "   "]])
    assert out == [["write poem", "sql query", "explain concept", "c++ programming"], ["data", "data analysis"]]
    assert normalize_tags([["Writing Poems"]], lemmatize=False) == [["writing poems"]]


def test_default_min_count_scales_with_pool():
    assert default_min_count(100) == 2
    assert default_min_count(10_000) == 2
    assert default_min_count(20_000) == 4
    assert default_min_count(117_000) == 24
    assert normalize_config({}, 50_000)["min_count"] == 10
    assert normalize_config({"min_count": 7}, 50_000)["min_count"] == 7
    with pytest.raises(DivscopeError):
        normalize_config({"tagger": "nope"}, 10)
    with pytest.raises(DivscopeError):
        normalize_config({"merge_threshold": -1}, 10)


# -- merging --------------------------------------------------------------------------------------------------


def test_merge_tags_synonyms_and_determinism():
    tags = ["write poem", "python programming", "write poetry", "compose poem", "javascript programming",
            "write email", "write letter", "sql query"]
    counts = [10, 8, 3, 2, 6, 5, 4, 1]
    groups = merge_tags(tags, counts, 0.2)
    named = [[tags[i] for i in g] for g in groups]
    assert named[0] == ["write poem", "write poetry", "compose poem"]  # most frequent member first
    assert ["python programming"] in named and ["javascript programming"] in named
    assert ["write email"] in named and ["write letter"] in named
    assert sorted(i for g in groups for i in g) == list(range(len(tags)))
    assert merge_tags(tags, counts, 0.2) == groups
    # Input order does not matter.
    perm = [3, 7, 0, 5, 1, 6, 2, 4]
    again = merge_tags([tags[i] for i in perm], [counts[i] for i in perm], 0.2)
    assert [[tags[perm[i]] for i in g] for g in again] == named
    assert merge_tags(tags, counts, 0.0) == [[i] for i in sorted(range(8), key=lambda i: (-counts[i], tags[i]))]
    assert type_name(named[0]) == "write poem (+2)" and type_name(["x"]) == "x"


# -- offline tagger --------------------------------------------------------------------------------------------


def test_offline_tagger_verb_object_and_chunks():
    texts = ["Write a poem about the sea",
             "Can you help me write a python script to parse CSV files?",
             "What is the difference between TCP and UDP?",
             "Continue",
             "I want you to act as a linux terminal.",
             ""]
    tags = OfflineTagger().tag(texts)
    assert tags[0][0] == "write poem" and "sea" in tags[0]
    assert tags[1][0] == "write python script" and "csv file" in tags[1]
    assert tags[2][0] == "explain difference" and {"tcp", "udp"} <= set(tags[2])
    assert tags[3] == ["continue"]
    assert "act as linux terminal" in tags[4]
    assert tags[5] == []
    vo = OfflineTagger(method="verb-object").tag(texts)
    assert vo[:4] == [["write poem"], ["write python script"], ["explain difference"], ["continue"]]


def test_offline_tagger_truncates_long_texts():
    code = "x = 1\n" * 2000
    text = "Please fix the bug in this code.\n" + code + "\nWhy does it raise an error?"
    tg = OfflineTagger(method="verb-object")
    assert tg.tag([text])[0][0] == "fix bug"
    assert tg.identity()["head_chars"] == 400 and tg.identity()["tail_chars"] == 200


def test_offline_tagger_on_real_prompts_gives_tags():
    refs = load_refs("instag_reference.jsonl")
    tags = OfflineTagger().tag([r["text"] for r in refs])
    assert sum(1 for t in tags if t) >= 0.9 * len(refs)
    assert 2 <= np.mean([len(t) for t in tags]) <= 5


@pytest.mark.slow
def test_offline_methods_against_instag_references():
    """The comparison reported in docs/meso.md (run with -s to see the table)."""
    rows = {}
    for name in ("instag_reference.jsonl", "instag_reference_heldout.jsonl"):
        refs = load_refs(name)
        gold = [r["tags"] for r in refs]
        for m in OFFLINE_METHODS:
            pred = OfflineTagger(method=m).tag([r["text"] for r in refs])
            rows[(name, m)] = soft_match_scores(pred, gold)
        chance = soft_match_scores(gold[7:] + gold[:7], gold)  # another sample's reference tags
        rows[(name, "chance")] = chance
    for (name, m), sc in rows.items():
        print(f"{name:34s} {m:24s} " + " ".join(f"{k}={v:.3f}" for k, v in sc.items()))
    for name in ("instag_reference.jsonl", "instag_reference_heldout.jsonl"):
        best = max(rows[(name, m)]["soft_f1"] for m in OFFLINE_METHODS)
        assert rows[(name, DEFAULT_OFFLINE_METHOD)]["soft_f1"] >= best - 0.03
        assert rows[(name, DEFAULT_OFFLINE_METHOD)]["soft_f1"] > rows[(name, "chance")]["soft_f1"] + 0.1


def test_soft_match_scores_bounds():
    sc = soft_match_scores([["write poem"], []], [["write poem"], ["x"]])
    assert sc["soft_precision"] == pytest.approx(0.5, abs=1e-5) and sc["empty"] == 0.5
    assert soft_match_scores([["a b"]], [["a b"]])["soft_f1"] == pytest.approx(1.0, abs=1e-5)


# -- offline build_meso ---------------------------------------------------------------------------------------


def test_build_meso_offline_and_tag_cache(tmp_path):
    refs = load_refs("instag_reference.jsonl") + load_refs("instag_reference_heldout.jsonl")
    texts = [r["text"] for r in refs] + [refs[0]["text"], "Write a poem about the sea", "write a poem about love"]
    m, names, prov = build_meso(texts, {"min_count": 2}, tmp_path)
    assert m.shape == (len(texts), len(names)) and m.dtype == np.bool_
    assert prov["tagging"]["unique_texts"] == len(texts) - 1 and prov["run"]["tagged_texts"] == len(texts) - 1
    assert prov["n_types"] == len(names) and prov["kept_tags"] >= prov["n_types"]
    df = np.asarray(m.sum(axis=0)).ravel()
    assert (df >= 2).all() and list(df) == sorted(df, reverse=True)
    assert (m[0].toarray() == m[len(refs)].toarray()).all()  # duplicate text, same row
    poem = [j for j, n in enumerate(names) if "poem" in n]
    assert poem and m[len(refs) + 1, poem[0]] and m[len(refs) + 2, poem[0]]
    for key in ("tagger", "config", "raw_tags", "kept_tags", "merged_types", "mean_tags_per_sample",
                "mean_types_per_sample", "type_members", "typeless_samples"):
        assert key in prov
    json.dumps(prov)
    # A rerun tags, lemmatises and embeds nothing and gives the same incidence.
    (emb_file,) = tmp_path.glob("tag-embeddings-*.npz")
    (lemma_file,) = tmp_path.glob("tag-lemmas-*.jsonl")
    stamps = (emb_file.stat().st_mtime_ns, lemma_file.stat().st_size)
    m2, names2, prov2 = build_meso(texts, {"min_count": 2}, tmp_path)
    assert (emb_file.stat().st_mtime_ns, lemma_file.stat().st_size) == stamps
    assert prov2["run"]["tagged_texts"] == 0 and prov2["run"]["cached_texts"] == len(texts) - 1
    assert names2 == names and (m2 != m).nnz == 0
    # A killed run (half-written last cache line): only that text is tagged again.
    cache = tag_cache_path(tmp_path, OfflineTagger().identity())
    raw = cache.read_bytes()
    cache.write_bytes(raw[:-25])
    m3, names3, prov3 = build_meso(texts, {"min_count": 2}, tmp_path)
    assert prov3["run"]["tagged_texts"] == 1 and prov3["run"]["cache_corrupt_lines"] == 1
    assert names3 == names and (m3 != m).nnz == 0
    # Another tagger setting does not read these tags.
    _, _, prov4 = build_meso(texts[:5], {"min_count": 1, "method": "verb-object"}, tmp_path)
    assert prov4["run"]["tagged_texts"] == 5


def test_min_count_drops_rare_tags(tmp_path):
    texts = ["Write a poem about the sea", "Write a poem about love", "Write a poem about cats",
             "Translate this sentence into French", "Explain quantum computing"]
    m1, n1, p1 = build_meso(texts, {"min_count": 1, "merge_threshold": 0, "method": "verb-object"}, tmp_path)
    m3, n3, p3 = build_meso(texts, {"min_count": 3, "merge_threshold": 0, "method": "verb-object"}, tmp_path)
    assert p3["kept_tags"] < p1["kept_tags"]
    assert n3 == ["write poem"]
    assert m3[:, 0].toarray().ravel().tolist() == [True, True, True, False, False]
    assert p3["typeless_samples"] == 2


# -- endpoint tagger ------------------------------------------------------------------------------------------

TAGS = {
    "t0": ["Writing Poems", "Creative Writing"],
    "t1": ["write poem", "Python Programming"],
    "t2": ["compose poem", "python programming"],
    "t3": ["write poetry", "JavaScript programming", "creative writing"],
    "t4": ["javascript programming", "rare one-off tag"],
    "t5": ["Python programming", "Code generation", "Compose poems"],
    "t6": ["code generation", "write poetry"],
    "t7": ["Creative-Writing"],
}


def instag_responder(messages):
    query = messages[-1]["content"].split("User query: ", 1)[1]
    items = [{"tag": t, "explanation": f"about {query}"} for t in TAGS[query]]
    styles = int(query[1]) % 3
    if styles == 0:
        return json.dumps(items)
    if styles == 1:
        return "Sure, here are the tags:\n```json\n" + json.dumps(items, indent=2) + "\n```"
    return "[" + ", ".join(f"{{'tag': '{i['tag']}', 'explanation': 'x'}}" for i in items) + ",]"


def endpoint_cfg(server, **kw):
    return {"tagger": "endpoint", "base_url": server.base_url, "model": "tagger-model", "max_concurrency": 4,
            "api_key_env": "DIVSCOPE_TEST_NO_KEY", "timeout": 5, "min_count": 2, **kw}


def test_instag_prompt_and_parsing():
    msgs = instag_messages("Write a poem")
    assert msgs[0]["role"] == "system" and "identify tags of user intentions" in msgs[1]["content"]
    assert msgs[1]["content"].endswith("User query: Write a poem")
    long = instag_messages("a" * 10_000, max_chars=1000)[1]["content"]
    assert len(long) < 1400
    assert parse_instag('[{"tag": "a", "explanation": "b"}, {"tag": "c"}]') == ["a", "c"]
    assert parse_instag('{"tag": "a", "explanation": "b"}') == ["a"]
    assert parse_instag('{"tags": ["a", "b"]}') == ["a", "b"]
    assert parse_instag("['a', 'b']") == ["a", "b"]
    assert parse_instag('[{"Tag": "a"}, {"name": "b"}, {"explanation": "no tag"}, 3]') == ["a", "b"]
    assert parse_instag("I cannot help with that.") is None


def test_build_meso_endpoint_end_to_end(openai_server, tmp_path):
    openai_server.responder = instag_responder
    texts = list(TAGS) + ["t0"]
    m, names, prov = build_meso(texts, endpoint_cfg(openai_server), tmp_path)
    assert openai_server.requests == len(TAGS)  # the duplicate text is asked once
    assert openai_server.bodies[0]["model"] == "tagger-model" and openai_server.bodies[0]["temperature"] == 0.0
    members = {n: ms for n, ms in zip(names, prov["type_members"], strict=True)}
    # normalisation: case, punctuation, lemma; synonyms merged; rare tag dropped
    poem = next(n for n in names if "poem" in n)
    assert set(members[poem]) == {"write poem", "compose poem", "write poetry"} and poem == "write poem (+2)"
    assert "creative writing" in names and "code generation" in names
    assert "python programming" in names and "javascript programming" in names
    assert not any("rare" in t for ms in members.values() for t in ms)
    col = {n: j for j, n in enumerate(names)}
    row3 = set(np.flatnonzero(m[3].toarray().ravel()))
    assert row3 == {col[poem], col["javascript programming"], col["creative writing"]}  # several types
    assert (m[len(TAGS)].toarray() == m[0].toarray()).all()
    assert prov["tagger"] == "endpoint" and prov["tagger_identity"]["model"] == "tagger-model"
    assert prov["run"]["unparseable_replies"] == 0 and prov["tagging"]["failed_texts"] == 0
    # Rerun: nothing asked. Without the tag cache, the endpoint cache still answers.
    openai_server.reset_counters()
    m2, names2, _ = build_meso(texts, endpoint_cfg(openai_server), tmp_path)
    assert openai_server.requests == 0 and names2 == names and (m2 != m).nnz == 0
    for p in tmp_path.glob("tags-endpoint-*.jsonl"):
        p.unlink()
    _, names3, prov3 = build_meso(texts, endpoint_cfg(openai_server), tmp_path)
    assert openai_server.requests == 0 and names3 == names and prov3["run"]["tagged_texts"] == len(TAGS)


def test_build_meso_endpoint_failures(tmp_path):
    with OpenAIServer() as srv:
        srv.responder = lambda msgs: Fault.server_error(500) if msgs[-1]["content"].endswith("t6") \
            else instag_responder(msgs)
        cfg = endpoint_cfg(srv, max_retries=1)
        with pytest.raises(DivscopeError, match="failed for 1 of 8 texts"):
            build_meso(list(TAGS), cfg, tmp_path)
        assert srv.requests == len(TAGS) + 1  # t6 tried twice
        m, names, prov = build_meso(list(TAGS), {**cfg, "max_failure_rate": 0.5}, tmp_path)
        assert prov["tagging"]["failed_texts"] == 1 and "HTTP 500" in prov["tagging"]["errors"][0]
        assert m[6].nnz == 0
        # Server fixed: a rerun asks only the failed text.
        srv.reset_counters()
        srv.responder = instag_responder
        m, names, prov = build_meso(list(TAGS), cfg, tmp_path)
        assert srv.requests == 1 and prov["tagging"]["failed_texts"] == 0
        assert m[6, names.index("code generation")]


def test_endpoint_unparseable_reply_counted(openai_server, tmp_path):
    openai_server.responder = lambda msgs: "I am not able to produce tags." if msgs[-1]["content"].endswith("t7") \
        else instag_responder(msgs)
    _, _, prov = build_meso(list(TAGS), endpoint_cfg(openai_server), tmp_path)
    assert prov["run"]["unparseable_replies"] == 1 and prov["tagging"]["failed_texts"] == 0


def test_endpoint_mostly_unparseable_replies_warn(openai_server, tmp_path, capsys):
    """3 of 8 replies without JSON (37%): one warning line with the count and rate; those texts stay typeless
    and are not stored as tags (a rerun parses them again from the endpoint cache, asking nothing)."""
    no_json = ("t1", "t4", "t7")
    openai_server.responder = lambda msgs: "Sure! Here are some tags for you." \
        if msgs[-1]["content"].endswith(no_json) else instag_responder(msgs)
    m, _, prov = build_meso(list(TAGS), endpoint_cfg(openai_server), tmp_path)
    err = capsys.readouterr().err
    assert "warning: meso tagging: 3 of 8 replies (38%) could not be parsed" in err and len(err.splitlines()) == 1
    assert prov["tagging"]["unparseable_texts"] == 3 and all(m[i].nnz == 0 for i in (1, 4, 7))
    stored = [ln for p in tmp_path.glob("tags-endpoint-*.jsonl") for ln in p.read_text().splitlines()]
    assert len(stored) == 5
    openai_server.reset_counters()
    build_meso(list(TAGS), endpoint_cfg(openai_server), tmp_path)
    assert openai_server.requests == 0 and "3 of 8 replies" in capsys.readouterr().err


def test_endpoint_never_json_is_an_error(openai_server, tmp_path):
    """A tagger model that never returns JSON: a one-line error, not a pool of typeless texts, and no tag
    stored as a result."""
    openai_server.responder = lambda msgs: "I would describe this as a creative request."
    with pytest.raises(DivscopeError, match=r"none of the 8 replies could be parsed .*tagger=offline"):
        build_meso(list(TAGS), endpoint_cfg(openai_server), tmp_path)
    assert not any(p.read_text().strip() for p in tmp_path.glob("tags-endpoint-*.jsonl"))
    # Many texts: stopped after the first NEVER_PARSED replies of a chunk, not after tagging the whole pool.
    texts = [f"text number {i}" for i in range(300)]
    with pytest.raises(DivscopeError, match="the first 64 replies held no JSON tag list"):
        build_meso(texts, {**endpoint_cfg(openai_server), "chunk_size": 64}, tmp_path)
    assert openai_server.requests <= 8 + 64


def test_endpoint_request_options_are_not_part_of_the_feature_key(openai_server, tmp_path):
    """--meso-option timeout=/max_retries=/max_concurrency= change how tags are asked for, not what they are:
    the same cached features. The reply budget (max_tokens) changes replies: another entry."""
    import divscope
    from divscope.features.featurize import featurize_result

    divscope.ingest([{"instruction": t, "output": "ok"} for t in TAGS], tmp_path / "ws")
    openai_server.responder = instag_responder
    cfg = {**endpoint_cfg(openai_server), "min_count": 1}
    cfg.pop("tagger")
    first = featurize_result(tmp_path / "ws", "meso", "instruction", tagger="endpoint", **cfg)
    again = featurize_result(tmp_path / "ws", "meso", "instruction", tagger="endpoint",
                             **{**cfg, "timeout": 600, "max_retries": 0, "max_concurrency": 1})
    assert again.status == "hit" and again.key == first.key
    longer = featurize_result(tmp_path / "ws", "meso", "instruction", tagger="endpoint", **{**cfg, "max_tokens": 99})
    assert longer.key != first.key


def test_endpoint_tagger_needs_url_and_model(tmp_path):
    with pytest.raises(DivscopeError, match="base_url and model"):
        build_meso(["x"], {"tagger": "endpoint"}, tmp_path)


def test_build_meso_degenerate_inputs(tmp_path):
    m, names, prov = build_meso([], {}, tmp_path)
    assert m.shape == (0, 0) and names == [] and prov["n_types"] == 0
    m, names, prov = build_meso(["", "???", "12345"], {}, tmp_path)
    assert m.shape == (3, 0) and prov["typeless_samples"] == 3
