"""``divscope plan SPEC``: what a study can detect and what it costs, before running it.

Detectable slope. A strategy's slope is tested as the analysis does (``regression``): one replicate, a t on
L - 2 df with standard error sigma / sqrt(Sxx); R >= 2 replicates, a t on R - 1 df with standard error
sqrt((sigma^2 / Sxx + tau^2) / R) (Sxx = sum of (d - mean d)^2 over the L levels; sigma^2 the per-cell noise
at the spec's evaluation size; tau the between-replicate sd of the slope). The minimum detectable slope (MDS)
is the true slope detected with probability ``power`` (80%) at two-sided level ``alpha`` (5%), i.e. with
P(slope > 0) beyond 0.975 or below 0.025, from the noncentral t (exact for these t statistics). Two replicates
are worse than one (1 df); the replicates needed for ``--effect`` are the fewest that reach the power.

Per-cell noise: ``--noise-sd``; else the pilot's residual variance (``pilot``), its prompt part rescaled from the
pilot's items to the spec's (prompt-sampling noise falls as 1/items, training and selection noise do not); else,
for a pilot without slope fits (one level and baselines), the sum of its training, selection and prompt
components; else ``DEFAULT_NOISE`` (documented below).

Costs: cells x (model load + steps x seconds per step + items x seconds per item), plus featurization, from
``COSTS`` (measured on the 2-core CPU of examples/reproduce-cpu.yaml; the GPU numbers are assumptions) scaled
by batch x length x model size, or from the pilot's train.json / eval timings and run folders. A cell trained
in P processes (``train.launcher: accelerate``) holds P GPUs; its steps are assumed to scale ideally (wall time
/ P), so its GPU-hours are those of one GPU plus the evaluation on P held GPUs.

Disk per cell (:func:`cell_disk`): what it keeps (the final model at 4 bytes per trained parameter, plus ~2 KB per
training sample of summaries and results; or the pilot's measured ``disk_bytes``) and its peak while training:
that plus ``keep_checkpoints`` + 1 checkpoints (the Trainer writes a new one before deleting the oldest) of
weights and AdamW's two fp32 moments, 12 bytes per trained parameter. fp32 weights are what fp32 training and
mixed precision (fp32 master weights) hold and save. The study's peak: every cell's kept disk plus
``--parallel-cells`` cells' checkpoints.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from divscope.analysis.results import STRATEGIES
from divscope.analysis.settings import PlanSettings
from divscope.errors import DivscopeError

# Per-cell noise when no pilot is given (score units). nll: examples/reproduce-cpu (SmolLM2-135M LoRA, N = 64,
# 32 AlpacaEval prompts): pooled residual variance of its six slope fits 9.83e-6 (sd 0.0031, 30 df), split by
# ASSUMPTION into half prompt interaction (per item: 0.5 x 9.83e-6 x 32) and a quarter each training and
# selection. judge / ifeval (scores in [0, 1]): ASSUMED, item interaction 0.125 per item (half a fair coin's
# variance), training and selection sd 0.01 each.
DEFAULT_NOISE = {
    "nll": {"training": 2.46e-6, "selection": 2.46e-6, "prompt_item_var": 1.573e-4,
            "source": "reproduce-cpu residual 9.83e-6 at 32 items, split assumed"},
    "judge": {"training": 1e-4, "selection": 1e-4, "prompt_item_var": 0.125, "source": "assumed"},
    "ifeval": {"training": 1e-4, "selection": 1e-4, "prompt_item_var": 0.125, "source": "assumed"},
}
# Seconds, per token of one optimizer step's batch x grad_accum x max_len (train; max_len is an upper bound on a
# sample's tokens), per token scored (nll: eval max_len) or generated (judge, ifeval: max_new_tokens, per item of
# a batch), for a 135M-parameter model; scaled linearly by parameter count. cpu: measured (2 cores, fp32: LoRA step 8 x
# 256 tokens 16.1 s; NLL of 32 prompts at 256 tokens ~15 s; model load ~5 s; featurizing the 20K study pool ~65
# min). gpu: ASSUMED for one current GPU, not measured.
COSTS = {
    "cpu": {"train_token": 16.1 / (8 * 256), "nll_token": 15.0 / (32 * 256), "gen_token": 0.02, "load": 5.0,
            "featurize_20k_h": 65 / 60},
    "gpu": {"train_token": 2.5e-5, "nll_token": 1e-5, "gen_token": 1e-4, "load": 10.0, "featurize_20k_h": 0.15},
}
FULL_FACTOR = 1.5  # a full fine-tune step against a LoRA step (weight gradients and optimizer state): assumed
POOL_SIZES = {"builtin:demo": 3_000, "builtin:study": 20_000, "builtin:sharegpt-pairs": 57_000}
EVAL_SIZES = {"alpaca_eval": 805, "vicuna": 80, "arena_hard": 750, "mt_bench": 80, "ifeval": 541}
BASE_PARAMS = 0.135e9
WEIGHT_BYTES, ADAM_BYTES = 4, 8  # per trained parameter: fp32 weights (or master weights), AdamW's m and v
SMALL_MB_PER_SAMPLE = 2e-3  # train.json (sample ids), eval results, tokenizer share: ~2 KB per sample (assumed)
GPU_PARAMS = 1e9  # --device auto: a model this large is planned on a GPU


def model_params(model: str) -> tuple[float, str]:
    """Parameter count of a model id (SmolLM2 names, or a size in the name such as 7b / 360M)."""
    m = model.lower()
    if m == "smollm2" or "smollm2-135m" in m:
        return 0.135e9, ""
    hit = re.search(r"(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", m.replace("_", "-"))
    if hit:
        return float(hit.group(1)) * (1e9 if hit.group(2) == "b" else 1e6), ""
    return BASE_PARAMS, f"model size of {model!r} unknown: costs are for a 135M model (give --seconds-per-step)"


# Selection keys a variant may change and still select, for a strategy and level the base has, the bytes the base
# selected (so the runner reuses that training run, experiment.reuse): which strategies and levels run.
_REUSE_NEUTRAL = frozenset({"strategies", "levels"})


def read_spec(path: str | Path) -> dict[str, Any]:
    """The parts of a spec the plan needs, validated by the stages' own settings (unknown keys are left to
    ``divscope run``: this command only reads)."""
    import yaml

    from divscope.evaluate.settings import EvalSettings
    from divscope.select.settings import GridSettings
    from divscope.settings import parse
    from divscope.train.settings import TrainSettings

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DivscopeError(f"{path}: cannot read the spec ({e})") from None
    if not isinstance(data, dict):
        raise DivscopeError(f"{path}: the top level must be a mapping")

    def section(model: Any, raw: Any, where: str) -> Any:
        raw = raw if isinstance(raw, dict) else {}
        return parse(model, {k: v for k, v in raw.items() if k in model.model_fields}, f"{path}: {where}")

    sel_raw = data.get("selection") or {}
    sel = section(GridSettings, sel_raw, "selection")
    train = section(TrainSettings, data.get("train"), "train")
    evals = [section(EvalSettings, e, "evaluate") for e in data.get("evaluate") or [{}]]
    primary = data.get("primary")
    ev = next((e for e in evals if f"{e.eval_set}.{e.method}" == primary), evals[0])
    reps = data.get("replicates", sel_raw.get("replicates") if isinstance(sel_raw, dict) else None)
    given = isinstance(reps, int) and reps >= 1
    replicates = int(reps) if given else len(sel.seeds)
    named = sel.replicates_for or {}
    # Per strategy: replicates as the analysis counts them (without replicates, the selection seeds), and the
    # subsets the grid selects (levels aside): seeds x replicates.
    by_strategy = {x: named.get(x, replicates) if given or x in named else len(sel.seeds) for x in sel.strategies}

    def subsets(grid: Any) -> dict[str, int]:
        named = grid.replicates_for or {}
        return {x: len(grid.seeds if x in STRATEGIES else grid.baseline_seeds or grid.seeds)
                * (named.get(x, int(reps) if given else 1)) for x in grid.strategies}

    runs = subsets(sel)
    levels = sel.level_values()
    variants = []
    for v in [v for v in data.get("variants") or [] if isinstance(v, dict)]:
        vsel = v.get("selection") if isinstance(v.get("selection"), dict) else {}
        vgrid = section(GridSettings, {**sel_raw, **vsel}, "variants") if vsel else sel
        feats = v.get("features") if isinstance(v.get("features"), dict) else {}
        variants.append({"name": v.get("name", "?"), "strategies": vgrid.strategies, "levels": vgrid.level_values(),
                         "runs": subsets(vgrid), "new_baselines": bool(set(vsel) - _REUSE_NEUTRAL),
                         "new_features": sorted(feats)})
    pool = data.get("pool") or {}
    sources = pool.get("source", ["builtin:demo"]) if isinstance(pool, dict) else ["builtin:demo"]
    return {"name": data.get("name", path.stem), "path": str(path), "strategies": sel.strategies,
            "levels": [float(x) for x in levels], "sizes": sel.sizes, "replicates": replicates,
            "replicates_by_strategy": by_strategy, "runs": runs,
            "seeds": len(sel.seeds), "baseline_seeds": len(sel.baseline_seeds or sel.seeds), "train": train,
            "eval": ev, "evals": evals, "variants": variants,
            "sources": [sources] if isinstance(sources, str) else list(sources)}


def design(levels: list[float], replicates: int, noise_var: float, slope_var: float = 0.0) -> tuple[float, float]:
    """(standard error, df) of the slope the analysis reports for this design."""
    d = np.asarray(levels, dtype=np.float64)
    sxx = float(((d - d.mean()) ** 2).sum())
    if sxx <= 0:
        return math.nan, 0.0
    if replicates <= 1:
        return math.sqrt(noise_var / sxx), float(d.size - 2)
    return math.sqrt((noise_var / sxx + slope_var) / replicates), float(replicates - 1)


def power_at(effect: float, se: float, df: float, alpha: float = 0.05) -> float:
    """Probability that a study with true slope ``effect`` ends with P(slope > 0) beyond 1 - alpha/2 or below
    alpha/2 (the t statistic beyond its two-sided critical value): noncentral t."""
    from scipy import stats

    if not (df > 0 and se > 0):
        return math.nan
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = effect / se
    upper, lower = float(stats.nct.sf(crit, df, nc)), float(stats.nct.cdf(-crit, df, nc))
    # scipy 1.17's noncentral t returns NaN for the lower tail far below a large noncentrality (df = 1, nc = 80,
    # e.g. the demo's 2 replicates): that tail is 0.
    if not math.isfinite(lower) and nc > 0:
        lower = 0.0
    return upper + lower


def min_detectable(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The slope detected with probability ``power``."""
    from scipy.optimize import brentq

    if not (df > 0 and se > 0):
        return math.nan
    hi = se
    while power_at(hi, se, df, alpha) < power:
        hi *= 2
    return float(brentq(lambda x: power_at(x, se, df, alpha) - power, 0.0, hi, xtol=1e-12 * hi))


def replicates_for(effect: float, levels: list[float], noise_var: float, slope_var: float, alpha: float,
                   power: float, most: int = 500) -> int | None:
    """The fewest replicates whose power at ``effect`` reaches ``power`` (None: more than ``most``)."""
    for r in range(1, most + 1):
        se, df = design(levels, r, noise_var, slope_var)
        if df > 0 and power_at(abs(effect), se, df, alpha) >= power:
            return r
    return None


def noise(spec: dict[str, Any], s: PlanSettings, pilot: dict[str, Any] | None) -> dict[str, Any]:
    """Per-cell noise variance at the spec's evaluation size, its parts, and where it came from."""
    items = eval_items(spec)
    method = spec["eval"].method
    d = DEFAULT_NOISE.get(method, DEFAULT_NOISE["judge"])
    out: dict[str, Any] = {"items": items, "slope_var": (s.slope_sd or 0.0) ** 2,
                           "slope_source": "--slope-sd" if s.slope_sd is not None else "default 0"}
    if pilot and pilot.get("slope_var") is not None and s.slope_sd is None:
        out.update(slope_var=pilot["slope_var"], slope_source=f"pilot ({pilot['slope_var_groups']} groups)")
    if s.noise_sd is not None:
        return {**out, "var": s.noise_sd**2, "source": "--noise-sd"}
    if pilot and pilot.get("residual") is not None:
        var, src = pilot["residual"], f"pilot residual ({pilot['residual_df']} df)"
        if pilot.get("prompt") is not None and pilot.get("prompt_item_var") is not None:
            var = max(var - pilot["prompt"], 0.0) + pilot["prompt_item_var"] / items
            src += f", prompt part rescaled {pilot['pilot_items']} -> {items} items"
        return {**out, "var": var, "source": src, "training": pilot.get("training"),
                "selection": pilot.get("selection"), "prompt": pilot.get("prompt")}
    if pilot and pilot.get("selection") is not None and pilot.get("prompt_item_var") is not None:
        # A pilot without slope fits (one level, or baselines only): the sum of its measured components, the
        # prompt part at the spec's items; training noise is inside 'selection' when no subset had 2 seeds.
        parts = {"training": pilot.get("training") or 0.0, "selection": pilot["selection"],
                 "prompt": pilot["prompt_item_var"] / items}
        return {**out, "var": sum(parts.values()), **parts,
                "source": f"pilot components (training + selection + prompt at {items} items; no slope fit)"}
    parts = {"training": d["training"], "selection": d["selection"], "prompt": d["prompt_item_var"] / items}
    return {**out, "var": sum(parts.values()), "source": f"default ({method}: {d['source']})", **parts}


def eval_items(spec: dict[str, Any]) -> int:
    ev = spec["eval"]
    full = EVAL_SIZES.get(ev.eval_set, 100)
    return min(ev.limit, full) if ev.limit else full


def plan_device(s: PlanSettings, train: Any) -> str:
    """``--device``, or for ``auto``: gpu when the spec trains on cuda or a model of 1B parameters or more."""
    if s.device != "auto":
        return s.device
    if train.device:
        return "gpu" if str(train.device).startswith("cuda") else "cpu"
    return "gpu" if model_params(train.model)[0] >= GPU_PARAMS else "cpu"


def cell_disk(t: Any, params: float, steps: int, size: int, kept_mb: float | None = None) -> dict[str, float]:
    """MB a cell keeps and its peak while training (module docstring)."""
    scale = params / BASE_PARAMS
    trainable = 9.8 / 4 * 1e6 * (t.lora_r / 8) * math.sqrt(scale) if t.method == "lora" else params
    checkpoint = trainable * (WEIGHT_BYTES + ADAM_BYTES) / 1e6
    held = min(t.keep_checkpoints + 1, math.ceil(steps / t.save_steps))  # every save_steps and at the end
    kept = kept_mb if kept_mb is not None else trainable * WEIGHT_BYTES / 1e6 + size * SMALL_MB_PER_SAMPLE
    return {"kept_mb": kept, "peak_mb": kept + held * checkpoint, "checkpoint_mb": checkpoint,
            "checkpoints_held": held}


def variant_cells(spec: dict[str, Any], v: dict[str, Any]) -> int:
    """Cells per size a variant trains: the runner reuses the base's run of a subset with the same bytes
    (experiment.reuse), i.e. a baseline the variant's selection keys leave alone, and a strategy at a level the
    base ran when the variant changes neither its selection keys (beyond strategies and levels) nor the features
    of its level (macro, meso or micro)."""
    base_levels = set(spec["levels"])
    n = 0
    for x in v["strategies"]:
        if x not in STRATEGIES:
            n += v["runs"][x] * (v["new_baselines"] or x not in spec["strategies"])
            continue
        same = (not v["new_baselines"] and x in spec["strategies"]
                and x.rpartition("-")[2] not in v["new_features"])
        n += v["runs"][x] * sum(not same or lvl not in base_levels for lvl in v["levels"])
    return n


def costs(spec: dict[str, Any], s: PlanSettings, pilot: dict[str, Any] | None) -> dict[str, Any]:
    """Cells, hours (train, eval, featurize), GPU-hours and disk of the spec, in total and per cell."""
    t, ev = spec["train"], spec["eval"]
    device = plan_device(s, t)
    c = COSTS[device]
    params, why = model_params(t.model)
    scale = params / BASE_PARAMS
    notes = [why] if why else []
    L, sizes = len(spec["levels"]), spec["sizes"]

    def runs(x: str) -> int:
        """Subsets of strategy ``x`` per level (seeds x replicates; --replicates: that many per seed)."""
        if s.replicates:
            return s.replicates * (spec["seeds"] if x in STRATEGIES else spec["baseline_seeds"])
        return spec["runs"].get(x, spec["seeds"] if x in STRATEGIES else spec["baseline_seeds"])

    def count(strategies: list[str], baselines: bool = True) -> int:
        return sum(L * runs(x) if x in STRATEGIES else runs(x) * baselines for x in strategies)

    cells = {size: count(spec["strategies"]) for size in sizes}
    for v in spec["variants"]:
        for size in sizes:
            cells[size] += variant_cells(spec, v)
    if spec["variants"]:
        notes.append("variants: a cell whose subset the base already trained (a baseline, or a strategy and level "
                     "the variant does not change) is reused, not retrained")
    measured = pilot or {}
    per_token = measured.get("seconds_per_token") or c["train_token"] * scale * (
        FULL_FACTOR if t.method == "full" else 1.0)
    step_s = s.seconds_per_step or per_token * t.batch_size * t.grad_accum * t.max_len  # max_len: an upper bound
    load_s = s.load_seconds if s.load_seconds is not None else (measured.get("load_seconds") or c["load"] *
                                                                max(1.0, scale ** 0.5))
    items = eval_items(spec)
    gen = ev.method != "nll"
    item_s = s.seconds_per_item or measured.get("seconds_per_item") or (
        c["gen_token"] * ev.new_tokens() * scale if gen else c["nll_token"] * ev.max_len * scale)
    procs = t.processes()  # GPUs a cell holds (one process per GPU)
    cell_eval_h = (load_s + items * item_s) * len(spec["evals"]) / 3600
    train_h, per_cell, kept_mb, extra_peak = 0.0, [], 0.0, 0.0
    for size, n in cells.items():
        steps = t.max_steps if t.max_steps > 0 else math.ceil(size * t.epochs / (t.batch_size * t.grad_accum))
        cell_h = (load_s + steps * step_s / procs) / 3600  # wall time: the P processes share the steps
        train_h += n * cell_h
        d = cell_disk(t, params, steps, size, s.run_mb if s.run_mb is not None else measured.get("run_mb"))
        kept_mb += n * d["kept_mb"]
        extra_peak = max(extra_peak, d["peak_mb"] - d["kept_mb"])
        per_cell.append({"size": size, "cells": n, "steps": steps, "train_hours": cell_h, "eval_hours": cell_eval_h,
                         "gpu_hours": procs * (cell_h + cell_eval_h) if device == "gpu" else None, **d})
    n_evals = sum(cells.values()) + 1  # every trained cell (a reused one reuses its scores), the anchor once
    eval_h = n_evals * cell_eval_h
    if procs > 1:
        notes.append(f"a cell holds {procs} GPUs: training assumed to scale ideally over them, evaluation runs on "
                     "one of them")
    if gen and any(e.method == "judge" for e in spec["evals"]):
        notes.append("judge calls to the endpoint are not counted (their time is the endpoint's)")
    pool = sum(POOL_SIZES.get(src, 0) for src in spec["sources"])
    feat_h = s.featurize_hours if s.featurize_hours is not None else c["featurize_20k_h"] * pool / 20_000
    if not pool and s.featurize_hours is None:
        notes.append("pool size unknown (not a builtin source): featurization not counted (give "
                     "--featurize-hours)")
    src = "pilot" if measured.get("seconds_per_token") else ("--seconds-per-step" if s.seconds_per_step else
                                                               f"default {device}" + (", ASSUMED" if device == "gpu"
                                                                                       else ""))
    gpu_h = procs * (train_h + eval_h) + feat_h if device == "gpu" else None
    return {"cells": sum(cells.values()), "cells_per_size": cells, "evaluations": n_evals, "step_seconds": step_s,
            "item_seconds": item_s, "load_seconds": load_s, "items": items, "train_hours": train_h,
            "eval_hours": eval_h, "featurize_hours": feat_h, "hours": train_h + eval_h + feat_h,
            "gpus_per_cell": procs if device == "gpu" else 0, "gpu_hours": gpu_h, "per_cell": per_cell,
            "disk_gb": kept_mb / 1e3, "peak_disk_gb": (kept_mb + s.parallel_cells * extra_peak) / 1e3,
            "parallel_cells": s.parallel_cells, "device": device, "model_params": params, "source": src,
            "notes": notes}


def plan(spec_path: str | Path, settings: PlanSettings | None = None) -> dict[str, Any]:
    """The plan of the spec at ``spec_path``: detectable slopes, replicates for an effect, costs."""
    s = settings or PlanSettings()
    spec = read_spec(spec_path)
    pilot = None
    if s.pilot:
        from divscope.analysis.pilot import pilot_components

        pilot = pilot_components(s.pilot, f"{spec['eval'].eval_set}.{spec['eval'].method}")
    nz = noise(spec, s, pilot)
    R = s.replicates or spec["replicates"]
    se, df = design(spec["levels"], R, nz["var"], nz["slope_var"])
    mds = min_detectable(se, df, s.alpha, s.power)
    rows = []
    for x in [x for x in spec["strategies"] if x in STRATEGIES]:  # each at its own replicates (replicates_for)
        rx = s.replicates or spec["replicates_by_strategy"].get(x, R)
        se_x, df_x = design(spec["levels"], rx, nz["var"], nz["slope_var"])
        mds_x = min_detectable(se_x, df_x, s.alpha, s.power)
        rows += [{"strategy": x, "size": size, "levels": len(spec["levels"]), "replicates": rx, "df": df_x,
                  "se": se_x, "mds": mds_x} for size in spec["sizes"]]
    rows.sort(key=lambda r: r["size"])
    by_r = {}
    for r in (1, 3, 5, 10, 20):
        se_r, df_r = design(spec["levels"], r, nz["var"], nz["slope_var"])
        by_r[r] = min_detectable(se_r, df_r, s.alpha, s.power)
    need = None
    if s.effect is not None:
        need = replicates_for(s.effect, spec["levels"], nz["var"], nz["slope_var"], s.alpha, s.power)
    costs_ = costs(spec, s, pilot)
    costs_["notes"] = (pilot or {}).get("notes", []) + costs_["notes"] + [
        "training time assumes every sample fills max_len: an upper bound"]
    return {"spec": spec["name"], "path": spec["path"], "metric": f"{spec['eval'].eval_set}.{spec['eval'].method}",
            "alpha": s.alpha, "power": s.power, "levels": spec["levels"], "replicates": R, "se": se, "df": df,
            "mds": mds, "rows": rows, "mds_by_replicates": by_r, "effect": s.effect, "replicates_needed": need,
            "noise": nz, "pilot": pilot, "costs": costs_}
