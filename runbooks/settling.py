"""Ending a run that cannot go on, visibly: the last step of every failure path.

A run ends here when it could not be planned, when drbot failed between two of its steps, when its workflow was
found dead (runbooks.reconcile), or when someone cancels a run no workflow owns any more. Whatever the cause, the
run ends decided (failed or cancelled), told to the thread, the requester and the timeline, with whether anything
was changed, so people know whether there is something to clean up. `fault` is how a step body turns an
unexpected exception into words and an error id (runbooks.faults) — except while drbot is stopping, when an
interrupted step is not a failure at all (DBOS resumes it at the next start).
"""

from __future__ import annotations

from collections.abc import Callable

from runbooks import faults
from runbooks.actions import ACTIONS
from runbooks.catalog import Catalog
from runbooks.errors import DrbotError
from runbooks.faults import Fault
from runbooks.models import Event, RunStatus, StepStatus
from runbooks.ports import Clock
from runbooks.store import Store

__all__ = ["Settler"]

Emit = Callable[[Event, str], object]
"""Store an event under a dedupe key and show it on every surface (the engine's `emit`)."""


class Settler:
    def __init__(self, *, store: Store, catalog: Catalog, clock: Clock, emit: Emit,
                 stopping: Callable[[], bool]) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.emit = emit
        self.stopping = stopping

    def fault(self, exc: Exception, *, where: str, run_id: str) -> Fault:
        """Log an unexpected exception once with an error id and say it in words; re-raise it while stopping."""
        if self.stopping():
            raise exc
        try:
            run = self.store.get_run(run_id)
        except Exception:  # the store itself may be what failed; the fault is still logged and told
            run = None
        return faults.contain(exc, where=where, environment=run.environment if run else "")

    def settle(self, run_id: str, *, cause: str, error_id: str = "", status: RunStatus = RunStatus.FAILED,
               actor: str = "drbot") -> str:
        """End the run with `status` and `cause`; steps still marked running end with it, open questions close.
        Idempotent: a run already ended keeps its ending. Returns the status the run has now."""
        run = self.store.get_run(run_id)
        if run is None:
            raise DrbotError(f"run {run_id} vanished from the store")
        if run.status.finished:
            return run.status.value
        now = self.clock.now()
        runbook = self.catalog.for_run(run) if run.runbook in self.catalog.runbooks else None
        mutating = {s.id for s in runbook.steps if ACTIONS.get(s.action) is not None and ACTIONS[s.action].mutates} \
            if runbook is not None else set()
        reason = f"{cause} (error {error_id})" if error_id else cause
        changed: list[str] = []
        for step in self.store.steps_for(run_id=run.id):
            if step.status is StepStatus.RUNNING:
                ended = StepStatus.FAILED if status is RunStatus.FAILED else StepStatus.CANCELLED
                self.store.save_step(step.model_copy(update={"status": ended, "finished_at": now, "error": reason}))
            if step.step_id in mutating and step.status is not StepStatus.SKIPPED and step.title not in changed:
                changed.append(step.title)
        for request in self.store.requests_for(run_id=run.id):
            if request.status == "pending":
                self.store.set_request_status(request.id, status="cancelled")
        self.store.update_run(run.id, status=status, reason=reason, finished_at=now)
        if changed:
            after = (f"{' and '.join(changed)} had already started, so check what "
                     f"{'they' if len(changed) > 1 else 'it'} made (the steps above say) before `/dr retry {run.id}`")
        else:
            after = f"nothing was changed; `/dr retry {run.id}` asks again" + (" once the cause is fixed"
                                                                               if error_id else "")
        verb = "stopped" if status is RunStatus.FAILED else status.value
        self.emit(Event(incident_id=run.incident_id, run_id=run.id, at=now, actor=actor, kind=f"run.{status.value}",
                        text=f"{run.id} ({run.runbook} on {run.environment}) {verb}: {cause}. "
                             f"{after[0].upper()}{after[1:]}." + (f" Error {error_id}." if error_id else ""),
                        data={"reason": reason, "error_id": error_id, "changed": changed,
                              "tell": run.requested_by}),
                  f"{run.id}:status:{status.value}")
        return status.value
