"""Console output shared by every command: progress bars on loops over data, summary tables, errors.

Progress goes to stderr. On a terminal it is a rich bar; elsewhere (a log file, a pipe, a batch job) it is plain
lines: one when a stage starts, then one about every 30 s while it runs (``DIVSCOPE_PROGRESS_INTERVAL``
seconds) with the count, rate and elapsed time, and a last one with the totals when the stage printed any.
``DIVSCOPE_PROGRESS``: 0 silences progress, 1 forces the bar, plain forces the lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

T = TypeVar("T")
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# The plain lines' clock: tests inject a fake one (``ui.clock = lambda: t``) instead of waiting.
clock: Callable[[], float] = time.monotonic
INTERVAL = 30.0  # seconds between plain progress lines (DIVSCOPE_PROGRESS_INTERVAL overrides)


def progress_mode() -> str:
    """``bar`` (a terminal, or DIVSCOPE_PROGRESS=1), ``plain`` (anything else, or =plain) or ``off`` (=0)."""
    flag = os.environ.get("DIVSCOPE_PROGRESS")
    if flag is not None:
        return "off" if flag in ("0", "", "false") else "plain" if flag == "plain" else "bar"
    return "bar" if sys.stderr.isatty() else "plain"


def show_progress() -> bool:
    """Whether progress animates (a rich bar)."""
    return progress_mode() == "bar"


def _interval() -> float:
    try:
        return float(os.environ.get("DIVSCOPE_PROGRESS_INTERVAL", INTERVAL))
    except ValueError:
        return INTERVAL


def _plain(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _seconds(t: float) -> str:
    return f"{t:.1f} s" if t < 60 else f"{int(t // 60)} min {t % 60:02.0f} s"


@contextlib.contextmanager
def _plain_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Plain progress lines: the stage's start, then one per interval as work advances, then the totals."""
    start = last = clock()
    every = _interval()
    done = 0
    printed = False
    _plain(f"{description}: started" + (f", {total:,} to do" if total is not None else ""))

    def status(now: float) -> str:
        elapsed = now - start
        count = f"{done:,}/{total:,} ({done / total:.0%})" if total else f"{done:,}"
        rate = f", {done / elapsed:,.1f}/s" if elapsed > 0 else ""
        return f"{description}: {count}{rate}, {_seconds(elapsed)}"

    def advance(n: int = 1) -> None:
        nonlocal done, last, printed
        done += n
        now = clock()
        if now - last >= every:
            last, printed = now, True
            _plain(status(now))

    yield advance
    if printed:
        _plain(status(clock()) + " (done)")


@contextlib.contextmanager
def stage(description: str) -> Iterator[None]:
    """A step with no count (loading a model): a spinner on a terminal, one plain line elsewhere."""
    mode = progress_mode()
    if mode == "plain":
        _plain(f"{description} ...")
    if mode != "bar":
        yield
        return
    with err_console.status(description):
        yield


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Any]:
    """A progress bar (plain lines off a terminal, see the module's doc); yields ``advance(n=1)``."""
    mode = progress_mode()
    if mode == "plain":
        with _plain_bar(description, total) as advance:
            yield advance
        return
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, disable=mode == "off", transient=False) as prog:
        task = prog.add_task(description, total=total, rate="")

        pending = 0

        def advance(n: int = 1) -> None:
            nonlocal pending  # batch updates: rich's bookkeeping per item costs more than cheap loop bodies
            pending += n
            if pending >= 64 or total is not None and n > 1:
                flush()

        def flush() -> None:
            nonlocal pending
            prog.advance(task, pending)
            pending = 0
            t = prog.tasks[0]
            if t.elapsed:
                prog.update(task, rate=f"{t.completed / t.elapsed:,.0f}/s")

        yield advance
        flush()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as advance:
        for item in items:
            yield item
            advance()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(_fmt(v) for v in row))
    return t


def print_wide(t: Table) -> None:
    """Print a table at its natural width (never squeezed into ellipses; a narrow terminal wraps the lines)."""
    from rich import box
    from rich.measure import Measurement

    t.box = box.SIMPLE_HEAD
    for c in t.columns:
        c.no_wrap = True
    need = Measurement.get(console, console.options.update(width=100_000), t).maximum
    if need <= console.width:
        console.print(t)
        return
    Console(file=console.file, width=need, highlight=False, force_terminal=console.is_terminal,
            no_color=console.no_color).print(t)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
