"""Exports read by their real consumers, not by our own reader.

* **LLaMA-Factory** (its PyPI package, installed without dependencies as README says): its own dataset registry
  parser reads our ``dataset_info.json`` and its own converter aligns every row, for every format it reads. Its
  ``llamafactory.data`` package ``__init__`` imports the multimodal plugins (torchaudio, ...), so the two data
  modules are imported without it; nothing of theirs is replaced. The file is loaded as its loader does
  (``datasets.load_dataset(FILEEXT2TYPE[ext], data_files=..., split=...)``).
* **TRL**: ``SFTTrainer`` trains one step on the messages export, as written.
* **datasets at the oldest version LLaMA-Factory pins** (2.16.0) reads JSON exports whose metadata mixes types, in
  a side environment (:func:`old_datasets_python`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import divscope
from divscope import Record, Turn, write_records

LLAMAFACTORY = "llamafactory==0.9.5"


def _llamafactory() -> tuple[object, object, object, dict[str, str]]:
    try:
        import llamafactory
    except ImportError:
        pytest.fail(f"the real-client tests need LLaMA-Factory: pip install --no-deps {LLAMAFACTORY}")
    for sub in ("data", "hparams"):  # the packages' __init__ pull in multimodal and training stacks
        name = f"llamafactory.{sub}"
        if name not in sys.modules or not hasattr(sys.modules[name], "__file__"):
            module = types.ModuleType(name)
            module.__path__ = [str(Path(llamafactory.__path__[0]) / sub)]
            sys.modules[name] = module
    from llamafactory.data.converter import align_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.extras.constants import FILEEXT2TYPE
    from llamafactory.hparams.data_args import DataArguments

    return align_dataset, get_dataset_list, DataArguments, FILEEXT2TYPE


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Record]]:
    """``demo``: builtin:demo as is (single turn, no system prompt: the files LLaMA-Factory rejected, because the
    entry declared columns no row had). ``multi``: ShareGPT pairs with their earlier turns, and records with a
    system prompt and metadata of mixed types."""
    root = tmp_path_factory.mktemp("pools")
    out = {}
    for name, source in (("demo", "builtin:demo"), ("multi", "builtin:sharegpt-pairs?context=keep&n=150&seed=1")):
        divscope.ingest(source, root / name)
        out[name] = divscope.Workspace(root / name).pool.records()[:150]
    out["multi"] += [Record.make([Turn("system", f"You are terse ({k})."), Turn("user", f"q{k}"),
                                  Turn("assistant", f"a{k}"), Turn("user", f"again {k}"), Turn("assistant", f"b{k}")],
                                 metadata={"score": 4 if k % 2 else "4"}) for k in range(6)]
    return out


@pytest.fixture(scope="module")
def pool(pools: dict[str, list[Record]]) -> list[Record]:
    return pools["multi"]


def _expected(record: Record) -> tuple[str, list[tuple[str, str]], str]:
    """(system, prompt turns, answer) as LLaMA-Factory's aligned row holds them."""
    turns = list(record.conversation)
    system = turns.pop(0).content if turns[0].role == "system" else ""
    return system, [(t.role, t.content) for t in turns[:-1]], turns[-1].content


@pytest.mark.slow
@pytest.mark.parametrize("which", ["demo", "multi"])
@pytest.mark.parametrize("fmt,suffix", [("alpaca", ".json"), ("sharegpt", ".json"), ("openai", ".jsonl"),
                                        ("alpaca", ".parquet"), ("sharegpt", ".parquet"), ("openai", ".parquet"),
                                        ("alpaca", ""), ("sharegpt", ""), ("openai", "")])
def test_llamafactory_aligns_every_row(tmp_path: Path, pools: dict[str, list[Record]], which: str, fmt: str,
                                       suffix: str) -> None:
    import datasets
    from transformers import Seq2SeqTrainingArguments

    align_dataset, get_dataset_list, data_arguments, fileext2type = _llamafactory()
    pool = pools[which]
    path = tmp_path / f"{which}_{fmt}{suffix}"
    container = {".parquet": "parquet", "": "hf"}.get(suffix, fmt)
    write_records(pool, path, fmt=container, shape=fmt)
    name = f"{path.stem}_{suffix[1:] or 'hf'}"  # one entry per file, named after its stem and format
    args = data_arguments(dataset_dir=str(tmp_path), dataset=[name])
    [attr] = get_dataset_list([name], str(tmp_path))  # our dataset_info.json, read by LLaMA-Factory
    assert attr.load_from == "file"
    # As LLaMA-Factory's loader resolves a "file" entry (a HF directory: through its Arrow shard).
    local = tmp_path / attr.dataset_name
    assert local.is_file() and local.is_relative_to(path)
    ds = datasets.load_dataset(fileext2type[local.suffix[1:]], data_files=[str(local)], split=attr.split)
    aligned = align_dataset(ds, attr, args, Seq2SeqTrainingArguments(output_dir=str(tmp_path / "o")))
    assert len(aligned) == len(pool)
    skipped = [i for i, row in enumerate(aligned) if not row["_prompt"] or not row["_response"]]
    assert skipped == [], f"{fmt}{suffix}: LLaMA-Factory skipped rows {skipped[:5]}"
    for row, record in zip(aligned, pool, strict=True):
        system, prompt, answer = _expected(record)
        assert [(m["role"], m["content"]) for m in row["_prompt"]] == prompt
        assert [(m["role"], m["content"]) for m in row["_response"]] == [("assistant", answer)]
        assert (row["_system"] or "") == system


@pytest.mark.slow
def test_trl_trains_one_step_on_the_messages_export(tmp_path: Path, pool: list[Record]) -> None:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from divscope.train.model import resolve_model_path

    path = write_records(pool[:4], tmp_path / "train.jsonl", fmt="openai")
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert set(ds.column_names) >= {"messages"}
    folder = resolve_model_path("smollm2")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2, max_length=64,
                     report_to=[], use_cpu=True, save_strategy="no", assistant_only_loss=False,
                     dataloader_num_workers=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss > 0


OLD_DATASETS_CHECK = """
import json, sys
import datasets
for path in sys.argv[1:]:
    ds = datasets.load_dataset("json", data_files=path, split="train")
    print(json.dumps({"path": path, "rows": len(ds), "version": datasets.__version__}))
"""


OLD_DATASETS = "datasets==2.16.0"  # the oldest LLaMA-Factory 0.9.5 accepts (datasets>=2.16.0,<=4.0.0)


def old_datasets_python() -> str:
    """A Python with ``OLD_DATASETS``: ``DIVSCOPE_OLD_DATASETS_PYTHON``, else a venv built once from the package
    registry under ``~/.cache/divscope/test-envs`` (atomically: built aside, then renamed into place)."""
    given = os.environ.get("DIVSCOPE_OLD_DATASETS_PYTHON")
    if given:
        return given
    root = Path(os.environ.get("DIVSCOPE_TEST_ENVS", Path.home() / ".cache" / "divscope" / "test-envs"))
    env = root / OLD_DATASETS.replace("==", "-")
    if not (env / "bin" / "python").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{env.name}.{os.getpid()}"
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=300)
        res = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", OLD_DATASETS],
                             capture_output=True, text=True, timeout=900)
        if res.returncode:
            pytest.fail(f"could not install {OLD_DATASETS} into {tmp} (set DIVSCOPE_OLD_DATASETS_PYTHON to a "
                        f"Python that has it): {res.stderr[-500:]}")
        tmp.rename(env)
    return str(env / "bin" / "python")


@pytest.mark.slow
def test_oldest_pinned_datasets_reads_json_exports_with_mixed_metadata(tmp_path: Path, pool: list[Record]) -> None:
    python = old_datasets_python()
    mixed = pool[-6:]  # score 4 and "4"
    paths = [write_records(mixed, tmp_path / f"m_{fmt}{suffix}", fmt=fmt)
             for fmt, suffix in (("alpaca", ".json"), ("sharegpt", ".json"), ("openai", ".jsonl"))]
    res = subprocess.run([python, "-c", OLD_DATASETS_CHECK, *map(str, paths)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["rows"] for r in rows] == [6, 6, 6] and {r["version"] for r in rows} == {"2.16.0"}
