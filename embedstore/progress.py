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
                 status: Callable[[], str] | None = None, done: int = 0) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows ``done/total``, ``<rate> <unit>/s``, elapsed and ETA.

    The rate is the items advanced in this bar over its elapsed time: results that arrive in bursts (a
    process pool's ordered map) do not show as a spike. ``done`` items were finished before (a resumed run):
    they count towards ``done/total`` but not towards the rate. ``status`` is called on each advance and its
    text is shown after the bar (e.g. the current loss).
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
        task = progress.add_task(description, total=total, completed=done, rate="", status="")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            fields = {"rate": rate_text(progress.tasks[task].completed - done, progress.tasks[task].elapsed, unit)}
            if status is not None:
                fields["status"] = status()
            progress.update(task, **fields)

        yield advance


def rate_text(items: float, elapsed: float | None, unit: str) -> str:
    """``"12.5 tiles/s"``: items over the elapsed seconds; "" before any time has passed or any item."""
    return f"{items / elapsed:.1f} {unit}/s" if elapsed and items > 0 else ""
