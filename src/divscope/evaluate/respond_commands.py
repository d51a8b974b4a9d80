"""``divscope respond``: regenerate a pool's responses with a model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.evaluate.settings import RespondSettings
from divscope.settings import cli_options
from divscope.ui import console, err_console, table


@click.command("respond")
@click.argument("ws", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New workspace for the regenerated pool.")
@cli_options(RespondSettings)
def respond_cmd(ws: Path, out: Path, **values: Any) -> None:
    """Regenerate every response of WS's pool into the workspace OUT (resumable: rerun after a kill)."""
    from divscope.evaluate.respond import FAILURES_FILE, respond

    s = RespondSettings.from_cli(values)
    res = respond(ws, out, s.endpoint, s.model, api_key_env=s.api_key_env or None, concurrency=s.concurrency,
                  max_tokens=s.max_tokens, temperature=s.temperature, timeout=s.timeout, max_retries=s.max_retries,
                  limit=s.limit or None)
    r = res.report
    rows = [("samples", r["requested"]), ("regenerated", r["regenerated"]), ("failed", r["failed"]),
            ("truncated (kept)", r["truncated"]), ("requests sent", r["requests_sent"]),
            ("cached answers", r["cache_hits"]), ("seconds", r["seconds"])]
    console.print(table(f"respond {ws} -> {out}", ["", "value"], rows))
    if r["failed"]:
        kinds = ", ".join(f"{k}={v}" for k, v in r["failed_by_kind"].items())
        err_console.print(f"[yellow]{r['failed']} samples not regenerated ({kinds}): listed in "
                          f"{out / FAILURES_FILE}; run the same command again to retry them[/yellow]")
    console.print(f"workspace: {out}")
