"""Terminal rendering with rich: the progress display passes report into, and result tables.

Passes never print; they call `ctx.progress.task(...)`. This module is the CLI's implementation
of that protocol (edgesparse.pipeline.Progress).
"""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)   # progress and tables on stderr; stdout stays clean for --json


class _RichTask:
    def __init__(self, progress: Progress, task_id, transient: bool):
        self._p, self._id, self._transient = progress, task_id, transient

    def advance(self, n: float = 1) -> None:
        self._p.advance(self._id, n)

    def update(self, **fields: Any) -> None:
        self._p.update(self._id, **fields)

    def close(self) -> None:
        if self._transient:
            self._p.remove_task(self._id)


class RichProgress:
    """Implements edgesparse.pipeline.Progress on a rich live display."""

    def __init__(self):
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.completed:>.0f}/{task.total:>.0f}"),
                                  TimeElapsedColumn(), console=console, transient=False)

    # The live display starts with the first task: started empty, it leaves a blank line above
    # an error raised before any work (a bad flag, an unreachable server).
    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self._progress.task_ids:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: float | None = None) -> _RichTask:
        first = not self._progress.task_ids
        if first:
            self._progress.__enter__()
        task_id = self._progress.add_task(description, total=total)
        return _RichTask(self._progress, task_id, transient=not first)


def table(title: str, headers: list[str], rows: list[list[Any]], no_wrap: tuple | list = ()) -> Table:
    t = Table(title=title, title_justify="left")
    first = rows[0] if rows else [None] * len(headers)
    for h, v in zip(headers, first):
        t.add_column(h, justify="right" if isinstance(v, (int, float)) else "left",
                     # a header may wrap between words, never inside one: at 80 columns the
                     # whole headers' widths left inspect's "prunable" reasons 10 cropped columns
                     no_wrap=h in no_wrap, min_width=max((len(w) for w in h.split()), default=1))
    for row in rows:
        t.add_row(*["—" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row])
    return t
