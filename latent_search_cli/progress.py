"""Live progress on the terminal: shown only when stderr is a terminal and ``--json`` is off, so
piped and machine-read output stays exactly as documented."""

from __future__ import annotations

import sys
from contextlib import contextmanager


def is_live(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty()


@contextmanager
def bar(description: str, total: int | None, *, live: bool, unit: str = ""):
    """A rich progress bar on stderr; yields ``update(completed, total=None, info="")``. When not
    live, the update does nothing."""
    if not live:
        yield lambda *a, **k: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def update(completed: int, total: int | None = None, info: str = "") -> None:
            progress.update(task, completed=completed, info=info)
            if total is not None:
                progress.update(task, total=total)

        yield update
