"""One progress bar style for every long loop (items/s and ETA), silent when disabled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "items", enabled: bool = True,
                 status: Callable[[], str] | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows ``done/total``, ``<rate> <unit>/s``, elapsed and ETA.

    ``status`` is called on each advance and its text is shown after the bar (e.g. the current loss).
    """
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, disable=not enabled, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="", status="")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            fields = {"rate": f"{speed:.1f} {unit}/s" if speed else ""}
            if status is not None:
                fields["status"] = status()
            progress.update(task, **fields)

        yield advance
