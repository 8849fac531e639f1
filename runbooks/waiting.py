"""Whether the engine is settled: no run is doing work right now (each is finished, or waiting for a person).
The shell, the tests and `drbot serve`'s worker wait for it."""

from __future__ import annotations

from datetime import datetime

from runbooks import approvals as rule
from runbooks.models import RunStatus
from runbooks.store import Store

__all__ = ["settled"]


def settled(store: Store, *, now: datetime) -> bool:
    for run in store.active_runs():
        waiting = run.status in (RunStatus.AWAITING_APPROVAL, RunStatus.PAUSED)
        if waiting and store.cancel_requested(run.id) is None and any(
                rule.tally(request=r, votes=store.votes(request_id=r.id), now=now) == "pending"
                for r in store.requests_for(run_id=run.id)):
            continue
        return False
    return True
