"""``divscope train``: fine-tune the target model on one subset file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.settings import cli_options
from divscope.train.settings import TrainSettings
from divscope.ui import console, table


@click.command("train")
@click.argument("subset", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (checkpoints, final model, train.json). Rerun to resume after a kill.")
@cli_options(TrainSettings)
def train_cmd(subset: Path, out: Path, **values: Any) -> None:
    """Fine-tune MODEL on SUBSET (any supported format) with TRL + PEFT; loss on assistant tokens only."""
    from divscope.errors import DivscopeError
    from divscope.io import read_records
    from divscope.train.sft import train

    cfg = TrainSettings.from_cli(values)
    records, rejects = read_records(subset)
    if rejects:
        raise DivscopeError(f"{subset}: {len(rejects)} invalid record(s), first at {rejects[0].where}: "
                            f"{rejects[0].problem[1] if rejects[0].problem else ''}; fix or re-export the subset")
    res = train(records, out, cfg, source=str(subset))
    s = res.summary
    r = s.get("resolved") or {}  # runs trained before issue 17 have none
    console.print(table("train", ["", "value"], [
        ("samples", s["samples"]), ("steps", s["global_step"]), ("resumed from", s["resumed_from"] or "-"),
        ("first / last loss", f"{s['losses'][0]:.3f} / {s['losses'][-1]:.3f}" if s["losses"] else "-"),
        ("seconds per step", s["seconds_per_step"] or "-"), ("device", s["device"]),
        ("global batch", _batch(s.get("batch"))),
        ("chat format", f"{r['chat_template']} (ends turns with {r['stop_token']})" if r else "-"),
        ("precision / optimizer", f"{r['precision']} / {r['optimizer']}" if r else "-"),
        ("model", str(res.model_dir))]))


def _batch(b: dict[str, Any] | None) -> str:
    if not b:
        return "-"
    return (f"{b['global_batch']} = {b['per_device_batch']} per device x {b['processes']} process(es) x "
            f"{b['grad_accum']} accumulation")
