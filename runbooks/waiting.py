"""Whether the engine is settled: no run is doing work right now (each is finished, or waiting for a person).
The shell, the tests and `drbot serve`'s worker wait for it."""

from __future__ import annotations

from datetime import datetime

from runbooks import approvals as rule
from runbooks.drills import LEDGER
from runbooks.models import RunStatus
from runbooks.store import Store

__all__ = ["settled"]


def settled(store: Store, *, now: datetime) -> bool:
    active = store.active_runs()
    running = {run.id for run in active}
    for entry in store.list_state(kind=LEDGER).values():  # an ended run's clean-up still to run or to report
        if entry.get("gone_at") is None and entry["run_id"] not in running \
                and not store.has_event(dedupe_key=f"{entry['run_id']}:cleanup"):
            return False
    drilling = {run.incident_id for run in active}
    if any(i.drill and i.id not in drilling for i in store.list_incidents(open_only=True)):
        return False  # a drill whose run ended and whose conclusion has not been written yet
    for run in active:
        waiting = run.status in (RunStatus.AWAITING_APPROVAL, RunStatus.PAUSED)
        if waiting and store.cancel_requested(run.id) is None and any(
                rule.tally(request=r, votes=store.votes(request_id=r.id), now=now) == "pending"
                for r in store.requests_for(run_id=run.id)):
            continue
        return False
    return True
