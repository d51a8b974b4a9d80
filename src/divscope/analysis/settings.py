"""The plan stage's settings: ``divscope plan`` options (one source for their names, types and defaults)."""

from __future__ import annotations

from typing import Literal

from divscope.settings import Settings, setting


class PlanSettings(Settings):
    pilot: str | None = setting(None, "Pilot study directory: variance components from its results.jsonl and "
                                "runs/ (per-item scores), costs from its train.json and eval timings "
                                "[documented defaults].", metavar="DIR")
    effect: float | None = setting(None, "Target slope in score units per unit d (0.01 = 1 x 10^-2): the "
                                   "replicates needed to detect it.")
    power: float = setting(0.8, "Power of the minimum detectable slope.", gt=0.0, lt=1.0)
    alpha: float = setting(0.05, "Two-sided level: a slope is detected when P(slope > 0) is beyond 1 - alpha/2 "
                           "or below alpha/2.", gt=0.0, lt=1.0)
    replicates: int | None = setting(None, "Replicates per level to plan for [the spec's].", ge=1)
    noise_sd: float | None = setting(None, "Per-cell score sd at the spec's evaluation size (training + "
                                     "selection + prompt sampling) [pilot, else default].", gt=0.0)
    slope_sd: float | None = setting(None, "Between-replicate sd of the slope, score per unit d [pilot, else 0].",
                                     ge=0.0)
    device: Literal["auto", "cpu", "gpu"] = setting(
        "auto", "Whose default costs: the measured 2-core CPU, or an assumed GPU; auto: gpu when the spec trains "
        "on cuda or a model of 1B parameters or more, else cpu.")
    seconds_per_step: float | None = setting(None, "Training seconds per optimizer step [pilot, else default "
                                             "scaled by batch x length x model size].", gt=0.0)
    seconds_per_item: float | None = setting(None, "Evaluation seconds per item [pilot, else default].", gt=0.0)
    load_seconds: float | None = setting(None, "Seconds to load the model, per cell [pilot, else default].",
                                         ge=0.0)
    featurize_hours: float | None = setting(None, "Featurization hours [default from the pool size].", ge=0.0)
    run_mb: float | None = setting(None, "Disk a cell keeps in MB once its checkpoints are deleted [pilot, else "
                                   "from the model size].", ge=0.0)
    parallel_cells: int = setting(1, "Cells training at once (ray: the cluster's GPUs / GPUs per cell): each holds "
                                  "its checkpoints until evaluated, which the total peak disk counts.", ge=1)


class CompareSettings(Settings):
    length_tolerance: float = setting(0.10, "Flag a subset whose mean tokens on a side differ from the random "
                                      "subsets' mean (same size) by more than this fraction of it (and, with 2+ "
                                      "random seeds, by more than --length-sds of their sd).", ge=0.0)
    length_sds: float = setting(2.0, "With 2 or more random seeds, a length flag also needs the difference to "
                                "exceed this many standard deviations of random's means (outside its spread).",
                                ge=0.0)
