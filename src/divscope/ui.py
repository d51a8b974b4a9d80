"""Console output shared by every command: progress bars on loops over data, summary tables, errors.

Progress goes to stderr and only animates on a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
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


def show_progress() -> bool:
    flag = os.environ.get("DIVSCOPE_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false")
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Any]:
    """A rich progress bar; yields ``advance(n=1)``."""
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, disable=not show_progress(), transient=False) as prog:
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
