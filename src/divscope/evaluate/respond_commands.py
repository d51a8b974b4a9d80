"""``divscope respond``: regenerate a pool's responses with a model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

import click

from divscope.ui import console, err_console, table


@click.command("respond")
@click.argument("ws", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--endpoint", required=True, help="OpenAI-compatible server: http://host:8000/v1 (or its root).")
@click.option("--model", required=True, help="Model name the server serves (e.g. a Llama-3.1-70B variant).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New workspace for the regenerated pool.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key (read at request time, never written).")
@click.option("--concurrency", default=8, show_default=True, type=int, help="Requests in flight at most.")
@click.option("--max-tokens", default=2048, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float)
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds per attempt.")
@click.option("--max-retries", default=5, show_default=True, type=int)
@click.option("--limit", default=0, show_default=True, type=int, help="Only the first N samples (0 = all).")
def respond_cmd(ws: Path, endpoint: str, model: str, out: Path, api_key_env: str, concurrency: int,
                max_tokens: int, temperature: float, timeout: float, max_retries: int, limit: int) -> None:
    """Regenerate every response of WS's pool into the workspace OUT (resumable: rerun after a kill)."""
    from divscope.evaluate.respond import FAILURES_FILE, respond

    res = respond(ws, out, endpoint, model, api_key_env=api_key_env or None, concurrency=concurrency,
                  max_tokens=max_tokens, temperature=temperature, timeout=timeout, max_retries=max_retries,
                  limit=limit or None)
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
