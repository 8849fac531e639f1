"""Which runs are orphans: not finished in drbot's store, but no live DBOS workflow owns them.

A run's state lives in drbot's tables; what moves it on is its DBOS workflow. If the workflow is gone — it ended
in ERROR, was cancelled in DBOS, ran out of recovery attempts, or never existed (a crash between creating the run
and launching it) — nothing will ever move the run again, and because a run in progress blocks the next request
for the same runbook and environment, one orphan can block a prod restore. The engine asks this module at start,
every minute, and whenever a run stands in the way of a new request, and settles each orphan (failed, with the
reason, in the thread and the timeline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from runbooks.models import Run

__all__ = ["ALIVE", "LAUNCH_GRACE", "OTHER_VERSION", "Orphan", "find_orphans", "why_orphaned"]

ALIVE = frozenset({"PENDING", "ENQUEUED", "DELAYED"})
"""DBOS workflow statuses that mean someone will still move the run on."""

OTHER_VERSION = "PENDING_OTHER_VERSION"
"""A pending workflow of another application version: DBOS recovers only its own version's, so after an upgrade
that changed the workflows it would wait forever."""

LAUNCH_GRACE = timedelta(seconds=30)
"""A run is created a moment before its workflow starts; a run this young without a workflow is not an orphan."""


@dataclass(frozen=True)
class Orphan:
    run: Run
    cause: str
    """Why nothing moves it any more, in words for the thread."""


def why_orphaned(run: Run, *, workflow_status: str | None, now: datetime,
                 started_at: datetime | None = None) -> str | None:
    """The reason `run` is an orphan, or None when a live workflow owns it (or it is finished, or brand new).

    `started_at`: when this drbot process started its engine. A run requested before that cannot be in the middle
    of being launched by this process, so it needs no grace (one active process; see LAUNCH_GRACE)."""
    if run.status.finished:
        return None
    if workflow_status is None:
        launching = started_at is None or run.requested_at >= started_at
        if launching and now - run.requested_at < LAUNCH_GRACE:
            return None
        return "its workflow never started (drbot stopped between accepting the request and starting the run)"
    if workflow_status in ALIVE:
        return None
    what = {
        "ERROR": "its workflow ended with an error",
        "CANCELLED": "its workflow was cancelled in DBOS",
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "its workflow was restarted too many times and was given up",
        "SUCCESS": "its workflow ended without recording how the run ended",
        OTHER_VERSION: "it was started by an older drbot whose workflows this version cannot resume",
    }.get(workflow_status, f"its workflow is {workflow_status}")
    return f"{what} while the run was {run.status.value}"


def find_orphans(runs: Iterable[Run], *, status_of: Callable[[str], str | None], now: datetime,
                 started_at: datetime | None = None) -> list[Orphan]:
    """Every orphan among `runs`; `status_of(run_id)` is the DBOS status of its workflow (None: none exists)."""
    found = []
    for run in runs:
        cause = why_orphaned(run, workflow_status=status_of(run.id), now=now, started_at=started_at)
        if cause is not None:
            found.append(Orphan(run=run, cause=cause))
    return found
