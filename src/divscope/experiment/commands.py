"""``divscope run`` and ``divscope demo``."""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from pathlib import Path

import click

from divscope.backend import engine_options
from divscope.ui import console


def demo_spec_path() -> Path:
    return Path(str(resources.files("divscope").joinpath("data", "specs", "demo.yaml")))


def _finish(summary: dict) -> None:
    console.print(f"cells: {summary['cells']}, evaluated: {summary['evaluated']}, failed: {summary['failed']}")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")
    if summary["failed"]:
        from divscope.errors import DivscopeError

        raise DivscopeError(f"{summary['failed']} cell(s) failed (see the cells/ folder); rerun the same command "
                            "to retry them")


@click.command("run")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Study directory; rerun the same command to continue after a kill.")
@engine_options(cell_cpus=True)
def run_cmd(spec: Path, out: Path, engine: str, ray_address: str | None, ray_cpus: int | None,
            cell_cpus: int | None, cell_gpus: int | None) -> None:
    """Run the study described by SPEC (YAML): ingest, featurize, grid, metric cards, train, evaluate,
    analyze, report. Every finished piece is kept, so a rerun continues where it stopped (on either engine).
    With --engine ray, featurization runs on Ray Data and every grid cell is a Ray task (with the GPUs its
    training processes use, where the cluster has GPUs)."""
    from divscope.backend import as_backend
    from divscope.experiment.runner import run_study
    from divscope.experiment.spec import load_spec

    eng = as_backend(engine, ray_address, ray_cpus, cell_cpus, cell_gpus)
    _finish(run_study(load_spec(spec), out, command=shlex.join(["divscope", *sys.argv[1:]]), engine=eng))


@click.command("demo")
@click.option("--out", "-o", default="divscope-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
def demo_cmd(out: Path) -> None:
    """The whole study on the builtin demo pool, scaled to finish in under 15 minutes on 2 CPU cores; ends
    with the path of its HTML report. The spec it runs: divscope/data/specs/demo.yaml."""
    from divscope.experiment.runner import run_study
    from divscope.experiment.spec import load_spec

    _finish(run_study(load_spec(demo_spec_path()), out, command=shlex.join(["divscope", "demo", "--out", str(out)])))
