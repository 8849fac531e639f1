"""Votes on approval requests: the plan gate (approve/reject) and a failed step's decision (retry/skip/abort).
The rule itself is `runbooks.approvals` (pure); this records a vote that passes it, wakes the waiting run, and
audits one that does not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from runbooks import approvals as rule
from runbooks.errors import ApprovalRefused
from runbooks.models import Approval, Decision, Event, EventKind, Run
from runbooks.ports import Clock
from runbooks.replies import Reply
from runbooks.runtime import Runtime
from runbooks.sink import EventSink
from runbooks.store import Store

__all__ = ["Votes"]


class Votes:
    def __init__(self, *, store: Store, clock: Clock, events: EventSink, runtime: Runtime) -> None:
        self.store = store
        self.clock = clock
        self.events = events
        self.runtime = runtime

    def vote(self, *, request_id: str, actor: str, decision: Decision, plan_hash: str | None = None,
             groups: Mapping[str, Sequence[str]] | None = None) -> Reply:
        now = self.clock.now()
        request = self.store.get_request(request_id)
        run = self.store.get_run(request.run_id) if request is not None else None
        current_hash = request.plan_hash if request is not None else ""
        if run is not None and request is not None and request.gate == "plan":
            current_hash = run.plan_hash
        try:
            rule.check_vote(request=request, request_id=request_id,
                            votes=self.store.votes(request_id=request_id) if request else [], actor=actor,
                            decision=decision, plan_hash=plan_hash or current_hash, now=now, groups=groups)
            if request is not None and request.plan_hash != current_hash:
                rule.check_vote(request=request, request_id=request_id, votes=[], actor=actor, decision=decision,
                                plan_hash=current_hash, now=now, groups=groups)
        except ApprovalRefused as exc:
            self._audit_refusal(actor=actor, request_id=request_id, run=run, reason=exc.reason,
                                message=exc.message, now=now)
            if exc.reason == "expired" and run is not None:
                self.runtime.wake(run.id, key=f"expired:{request_id}")  # let the run record its expiry now
            raise
        assert request is not None and run is not None
        what = {"plan": "approved" if decision is Decision.APPROVE else "rejected"}.get(
            request.gate, f"chose {request.option} for")
        event = Event(incident_id=run.incident_id, run_id=run.id, at=now, actor=actor,
                      kind=EventKind.APPROVAL_VOTE, text=f"{actor} {what} {run.id}"
                      + (f" step {request.step_id}" if request.step_id else "")
                      + f" (plan {rule.short_hash(request.plan_hash)}).",
                      data={"request_id": request.id, "decision": decision.value, "plan_hash": request.plan_hash,
                            "option": request.option})
        stored = self.store.add_vote(Approval(request_id=request.id, actor=actor, decision=decision,
                                              plan_hash=request.plan_hash, at=now), event=event)
        if stored is None:
            raise ApprovalRefused(f"{actor}, you already voted on {request.id}; each person counts once.",
                                  reason="duplicate")
        self.events.publish(stored)
        self.runtime.wake(run.id, key=f"{request.id}:{actor}")
        votes = self.store.votes(request_id=request.id)
        return Reply(text=f"Recorded: {event.text} "
                          f"{rule.describe(request=request, votes=votes, now=now)}.", run_id=run.id,
                     incident_id=run.incident_id)

    def _audit_refusal(self, *, actor: str, request_id: str, run: Run | None, reason: str, message: str,
                       now: datetime) -> None:
        if run is None:
            self.store.audit_refusal(at=now, actor=actor, action="approval.refused", subject="unknown-request",
                                     data={"reason": reason, "request": request_id[:40]})
            return
        self.events.emit(Event(incident_id=run.incident_id, run_id=run.id, at=now, actor=actor,
                               kind=EventKind.APPROVAL_REFUSED, text=f"Refused {actor}: {message}",
                               data={"reason": reason, "request_id": request_id}))
