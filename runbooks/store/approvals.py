"""Approval requests (a run's gate waiting for people) and the votes cast on them. A vote is written with its
timeline event, in one transaction, and each person counts once per request (a unique constraint, so a double
click from two processes still records one vote)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from runbooks.models import Approval, ApprovalRequest, Decision, Event
from runbooks.store.base import StoreBase
from runbooks.store.events import write_event
from runbooks.store.tables import approval_requests, approvals, required_ts, row_request, runs, ts


class ApprovalStore(StoreBase):
    def create_request(self, *, run_id: str, gate: str, option: str, step_id: str, plan_hash: str,
                       requested_by: str, requested_at: datetime, expires_at: datetime, required: int,
                       approvers: tuple[str, ...], dedupe_key: str) -> ApprovalRequest:
        """Idempotent on `dedupe_key`: a workflow step re-run after a crash gets the same request back."""
        with self.tx() as conn:
            row = conn.execute(sa.select(approval_requests).where(
                approval_requests.c.dedupe_key == dedupe_key)).first()
            if row is not None:
                return row_request(row)
            number = int(conn.execute(sa.select(
                sa.func.coalesce(sa.func.max(approval_requests.c.number), 0))).scalar_one()) + 1
            req = ApprovalRequest(id=f"AR-{number}", run_id=run_id, gate=gate, option=option, step_id=step_id,
                                  plan_hash=plan_hash, requested_by=requested_by, requested_at=requested_at,
                                  expires_at=expires_at, required=required, approvers=approvers)
            conn.execute(approval_requests.insert().values(
                id=req.id, number=number, run_id=run_id, gate=gate, option=option, step_id=step_id,
                plan_hash=plan_hash, requested_by=requested_by, requested_at=ts(requested_at),
                expires_at=ts(expires_at), required=required, approvers=list(approvers), status=req.status,
                dedupe_key=dedupe_key))
            return req

    def get_request(self, request_id: str) -> ApprovalRequest | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(approval_requests).where(
                approval_requests.c.id == request_id.upper())).first()
        return None if row is None else row_request(row)

    def requests_for(self, *, run_id: str | None = None, incident_id: str | None = None) -> list[ApprovalRequest]:
        q = sa.select(approval_requests)
        if run_id is not None:
            q = q.where(approval_requests.c.run_id == run_id)
        if incident_id is not None:
            q = q.join(runs, runs.c.id == approval_requests.c.run_id).where(runs.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            return [row_request(r) for r in conn.execute(q.order_by(approval_requests.c.number))]

    def pending_requests(self) -> list[ApprovalRequest]:
        q = sa.select(approval_requests).where(approval_requests.c.status == "pending")
        with self.engine.connect() as conn:
            return [row_request(r) for r in conn.execute(q.order_by(approval_requests.c.number))]

    def set_request_status(self, request_id: str, *, status: str) -> None:
        with self.tx() as conn:
            conn.execute(approval_requests.update().where(approval_requests.c.id == request_id).values(status=status))

    def add_vote(self, vote: Approval, *, event: Event) -> Event | None:
        """Record a vote and append `event`; return the event as stored, or None when this person already voted
        on this request (a double click: nothing is written)."""
        try:
            with self.tx() as conn:
                conn.execute(approvals.insert().values(request_id=vote.request_id, actor=vote.actor,
                                                       decision=vote.decision.value, plan_hash=vote.plan_hash,
                                                       at=ts(vote.at)))
                return write_event(conn, event, dedupe_key=None)
        except sa.exc.IntegrityError:
            return None

    def votes(self, *, request_id: str | None = None, incident_id: str | None = None) -> list[Approval]:
        q = sa.select(approvals)
        if request_id is not None:
            q = q.where(approvals.c.request_id == request_id)
        if incident_id is not None:
            q = q.join(approval_requests, approval_requests.c.id == approvals.c.request_id).join(
                runs, runs.c.id == approval_requests.c.run_id).where(runs.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(approvals.c.id)).all()
        return [Approval(request_id=r.request_id, actor=r.actor, decision=Decision(r.decision),
                         plan_hash=r.plan_hash, at=required_ts(r.at)) for r in rows]
