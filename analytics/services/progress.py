"""Progress bars for long commands (rich), quiet when output is not a terminal or not wanted."""

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(description: str, total: int | None, *, unit: str = "rows", stream=None, enabled: bool = True):
    """Yield a function update(completed) that advances a bar to an absolute position."""
    if not enabled:
        yield lambda completed: None
        return
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    console = Console(file=stream, stderr=stream is None)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda completed: progress.update(task, completed=completed)
