"""Following a Celery group: its results as each task finishes, in whatever order the workers finish them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery.result import GroupResult

POLL_SECONDS = 0.1


def results_as_they_finish(job: GroupResult) -> Iterator[tuple[int, object]]:
    """Yield (position in the group, result) for each task as it finishes; a task's error is raised."""
    pending = list(enumerate(job.results))
    while pending:
        still = []
        for position, result in pending:
            if result.ready():
                yield position, result.get(propagate=True)
            else:
                still.append((position, result))
        pending = still
        if pending:
            time.sleep(POLL_SECONDS)
