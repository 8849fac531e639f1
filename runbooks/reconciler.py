"""The reconciler: finds the runs no live workflow owns (see `runbooks.reconcile`) and settles each — at start,
every `reconcile_interval`, and whenever such a run stands in the way of a request or is cancelled."""

from __future__ import annotations

import logging
from datetime import datetime

from runbooks.faults import new_error_id
from runbooks.models import Run
from runbooks.ports import Clock
from runbooks.reconcile import find_orphans, why_orphaned
from runbooks.runtime import Runtime
from runbooks.settling import Settler
from runbooks.store import Store

log = logging.getLogger("drbot.engine")

__all__ = ["Reconciler"]


class Reconciler:
    def __init__(self, *, store: Store, runtime: Runtime, clock: Clock, settler: Settler) -> None:
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.settler = settler
        self.started_at: datetime | None = None
        """When this engine started: runs requested before it were left by an earlier process (no launch grace)."""

    def why(self, run: Run) -> str | None:
        """Why nothing moves `run` any more, or None while its workflow lives (or is being launched)."""
        return why_orphaned(run, workflow_status=self.runtime.status(run.id), now=self.clock.now(),
                            started_at=self.started_at)

    def settle(self, run: Run, cause: str) -> None:
        error_id = new_error_id()
        log.error("error %s: %s is orphaned: %s", error_id, run.id, cause)
        self.settler.settle(run.id, cause=cause, error_id=error_id)

    def reconcile(self) -> list[str]:
        """Settle every orphaned run (failed, with the reason, in the thread and the timeline); their ids."""
        orphans = find_orphans(self.store.active_runs(), status_of=self.runtime.status, now=self.clock.now(),
                               started_at=self.started_at)
        for orphan in orphans:
            self.settle(orphan.run, orphan.cause)
        return [o.run.id for o in orphans]
