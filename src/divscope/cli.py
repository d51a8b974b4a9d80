"""The ``divscope`` command: one subcommand per pipeline stage.

User mistakes raise ``DivscopeError`` anywhere below; ``main`` turns them into one red line and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from divscope._version import __version__
from divscope.errors import DivscopeError
from divscope.io.settings import IngestSettings
from divscope.settings import cli_options
from divscope.ui import console, err_console

FORMAT_HELP = "alpaca | sharegpt | openai (record shape) or json | jsonl | parquet | hf (container); default: auto"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="divscope")
def cli() -> None:
    """divscope: build fixed-size SFT training sets at controlled diversity, measure them, train and
    evaluate on them.

    \b
    Pipeline:  ingest -> featurize -> select / grid -> metrics -> train -> evaluate -> analyze -> report
    A workspace directory (WS) holds the pool and everything derived from it.
    """


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Workspace directory to create or refresh.")
@click.option("--format", "-f", "fmt", default=None, help=FORMAT_HELP)
@cli_options(IngestSettings)
def ingest(inputs: tuple[str, ...], out: Path, fmt: str | None, **values: object) -> None:
    """Read, validate and deduplicate INPUTS into a workspace.

    INPUTS are files (JSON, JSONL, Parquet), Hugging Face datasets directories (save_to_disk) or builtin
    sources: builtin:demo (3K pairs), builtin:study (20K pairs), builtin:sharegpt-pairs (all 57K unique
    pairs; ?context=keep keeps earlier turns), builtin:conversations (whole, repaired), builtin:sharegpt
    (raw). Bad records go to WS/rejects.jsonl with file, line and reason; WS/ingest.json counts them.
    --repair keeps conversations whose turn order is broken (see docs/data.md#repair).
    """
    from divscope.io.ingest import ingest as run_ingest

    settings = IngestSettings.from_cli(values)
    result = run_ingest(list(inputs), out, fmt=fmt, **settings.model_dump())
    rep = result.report
    from divscope.ui import table

    key, label = ("repaired", "repaired") if settings.repair else ("would_keep", "--repair keeps")
    more = [label] if rep["repair"][key] else []
    rows = [(src, s["read"], s["accepted"], s["rejected"], *([s["repair"][key]] if more else []))
            for src, s in rep["by_source"].items()]
    cols = ["source", "read", "accepted", "rejected", *more]
    console.print(table("ingest", cols, rows))
    if rep["by_reason"]:
        console.print(table("rejected by reason", ["reason", "records"], sorted(rep["by_reason"].items())))
        console.print(f"rejects: {result.workspace.rejects_path}")
    if rep["repair"]["by_kind"]:
        title = "repairs applied" if settings.repair else "repairs --repair would apply"
        console.print(table(title, ["repair", "records"], sorted(rep["repair"]["by_kind"].items())))
    if not settings.repair and rep["repair"]["would_keep"]:
        console.print(f"--repair would keep {rep['repair']['would_keep']:,} of the {rep['rejected']:,} rejected "
                      f"records (pool: {rep['repair']['accepted_with_repair']:,}); see docs/data.md#repair")
    console.print(f"pool: {result.workspace.pool_path} ({rep['accepted']:,} records)")


@cli.command()
@click.argument("ws", type=click.Path(file_okay=False, path_type=Path))
def stats(ws: Path) -> None:
    """Counts, turn and length distributions of the pool in workspace WS."""
    from divscope.io.stats import pool_stats, render_stats

    for t in render_stats(pool_stats(ws)):
        console.print(t)


def _output_options(f: Callable[..., None]) -> Callable[..., None]:
    """--to, --format and --shape: the output side, the same for export and convert."""
    for option in reversed((
        click.option("--to", "to", required=True, type=click.Path(path_type=Path), help="Output file or directory."),
        click.option("--format", "-f", "fmt", default=None,
                     help="alpaca | sharegpt | openai | parquet | hf; default from the extension "
                          "(.json sharegpt, .jsonl openai, .parquet, no extension hf)."),
        click.option("--shape", default="openai", show_default=True,
                     help="Record layout inside parquet/hf outputs: alpaca | sharegpt | openai."),
    )):
        f = option(f)
    return f


def _wrote(n: int, path: Path, entry: str | None) -> str:
    where = f"; LLaMA-Factory dataset {entry!r} in {path.parent / 'dataset_info.json'}" if entry else ""
    return f"wrote {n:,} records to {path}{where}"


@cli.command()
@click.argument("ws", type=click.Path(path_type=Path))
@_output_options
def export(ws: Path, to: Path, fmt: str | None, shape: str) -> None:
    """Write the pool of workspace WS in any supported format (plus a LLaMA-Factory dataset_info.json entry).

    To convert a file (a subset, a dataset) rather than a workspace's pool, use divscope convert."""
    from divscope.io.workspace import Workspace
    from divscope.io.writers import entry_name, write_records
    from divscope.ui import track

    if ws.is_file():
        raise DivscopeError(f"{ws}: a file, not a workspace; to convert a file: divscope convert {ws} --to {to}")
    pool = Workspace(ws).pool
    path = write_records(track(pool.iter_records(), "export", total=len(pool)), to, fmt=fmt, shape=shape)
    console.print(_wrote(len(pool), path, entry_name(path, fmt)))


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@_output_options
@click.option("--from", "from_fmt", default=None, help="The input's format when detection is wrong: " + FORMAT_HELP)
def convert(source: Path, to: Path, fmt: str | None, shape: str, from_fmt: str | None) -> None:
    """Convert one file or HF directory SOURCE (any input format) to --to, with its LLaMA-Factory entry.

    Records are validated, not deduplicated; invalid ones go to TO.rejects.jsonl with file, line and reason.
    The dataset_info.json entry is named <stem>_<format> (best100_jsonl, best100_parquet, best100_hf)."""
    from divscope.io.convert import convert as run_convert

    result = run_convert(source, to, fmt=fmt, shape=shape, from_fmt=from_fmt)
    console.print(_wrote(result.written, result.path, result.entry))
    if result.rejects_path:
        console.print(f"rejected {result.rejected:,} invalid records: {result.rejects_path}")


def _register() -> None:
    from divscope.analysis.commands import analyze_cmd, compare_cmd, plan_cmd, report_cmd
    from divscope.evaluate.commands import evaluate_cmd
    from divscope.evaluate.respond_commands import respond_cmd
    from divscope.experiment.commands import demo_cmd, run_cmd
    from divscope.features.commands import features_cmd, featurize
    from divscope.metrics.commands import metrics_cmd
    from divscope.select.commands import grid_cmd, select_cmd
    from divscope.train.commands import train_cmd

    for cmd in (featurize, features_cmd, select_cmd, grid_cmd, metrics_cmd, compare_cmd, train_cmd, evaluate_cmd, respond_cmd, run_cmd, analyze_cmd, report_cmd,
                plan_cmd, demo_cmd):
        cli.add_command(cmd)


_register()


def usage_error_line(e: click.ClickException) -> str:
    """A click usage error (unknown option, bad value, missing argument) as the message of one ``error:`` line,
    naming the command and where its help is: ``divscope select: No such option: --levle (did you mean
    --level?); see divscope select --help``."""
    msg = " ".join(e.format_message().split()).rstrip(".")
    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return msg
    return f"{ctx.command_path}: {msg}; see {ctx.command_path} --help"


def main(argv: list[str] | None = None) -> int:
    """Run the ``divscope`` group. Every user mistake, click's own usage errors included, is one line
    ``error: ...`` on stderr and exit code 2; ``--help`` and a bare ``divscope`` print help as click does."""
    from rich.text import Text

    def error(message: str) -> int:
        err_console.print(Text.assemble(("error: ", "bold red"), " ".join(message.split())))
        return 2

    try:
        cli.main(args=argv, prog_name="divscope", standalone_mode=False)
    except DivscopeError as e:
        return error(str(e))
    except click.exceptions.Abort:
        err_console.print("aborted")
        return INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as e:  # bare `divscope`: the help, as before
        e.show()
        return e.exit_code
    except click.ClickException as e:
        return error(usage_error_line(e))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return INTERRUPTED
    return 0


INTERRUPTED = 130


def run() -> None:
    """The ``divscope`` console script: :func:`main`, then exit. After Ctrl-C it exits at once (``os._exit``):
    interpreter shutdown with torch loaded takes seconds, and nothing is left to do, since every store is kill-safe
    (an interrupted run must survive SIGKILL anyway). ``main`` itself returns, so Python callers keep control."""
    code = main()
    if code == INTERRUPTED:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
