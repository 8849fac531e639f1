"""drbot's own tables (SQLAlchemy Core), on SQLite or PostgreSQL with the same code.

DBOS keeps its checkpoints elsewhere and may garbage-collect them; everything people rely on afterwards —
incidents, runs, steps, approvals, checklist ticks, the timeline and the audit chain — lives here.

The audit table is append-only and chained: each row carries the hash of the previous row, so an edit or a
deletion anywhere breaks every later hash and `drbot audit verify` names the first row that does not match.
Every timeline event is also an audit row, written in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runbooks.models import (
    Approval,
    ApprovalRequest,
    ChecklistItem,
    Decision,
    Event,
    Incident,
    IncidentStatus,
    Plan,
    Run,
    RunStatus,
    StepRun,
)
from runbooks.tables import (
    approval_requests,
    approvals,
    audit,
    checklist_items,
    events,
    incidents,
    jsonable,
    meta,
    metadata,
    parse_ts,
    provider_state,
    required_ts,
    row_event,
    row_incident,
    row_request,
    row_run,
    row_step,
    runs,
    steps,
    ts,
)

GENESIS = "0" * 64


def audit_hash(*, prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, data: str) -> str:
    body = json.dumps([prev_hash, seq, at, actor, action, subject, data], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    reason: str


class Store:
    """All reads and writes of drbot's tables. Methods are keyword-only and return domain models."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # SQLAlchemy's `begin` event below emits BEGIN itself
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @sa.event.listens_for(self.engine, "begin")
            def _begin(conn: Connection) -> None:
                # A write transaction takes SQLite's write lock before its first read (the last audit hash, the
                # next incident number), so another process writing at the same moment makes it wait, not collide.
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("drbot_write", False) else "BEGIN")
        self._write_lock = threading.RLock()
        metadata.create_all(self.engine)
        self.instance_id = self._instance_id()

    def _instance_id(self) -> str:
        """A random id made when the tables are first created. Durable workflow ids include it, so a wiped or
        replaced database never meets checkpoints that DBOS kept for an earlier one's `R-1`."""
        with self.tx() as conn:
            found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "instance_id")).scalar()
            if found is None:
                found = uuid.uuid4().hex[:12]
                conn.execute(meta.insert().values(key="instance_id", value=found))
            return str(found)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction. SQLite allows one writer at a time: serialise in-process writers."""
        with self._write_lock, self.engine.connect() as conn:
            conn.info["drbot_write"] = True
            with conn.begin():
                if self.is_postgres:
                    # The audit chain needs a total order of writers across processes.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
                yield conn

    # ----------------------------------------------------------------------------------------- events

    def append_event(self, event: Event, *, dedupe_key: str | None = None) -> Event | None:
        """Store an event and its audit row. With a `dedupe_key` already seen, store nothing and return None
        (a step re-run after a crash must not write its line twice)."""
        with self.tx() as conn:
            return self._append_event(conn, event, dedupe_key=dedupe_key)

    def _append_event(self, conn: Connection, event: Event, *, dedupe_key: str | None,
                      checked: bool = False) -> Event | None:
        """`checked`: the caller already looked for `dedupe_key` in this transaction."""
        if dedupe_key is not None and not checked:
            seen = conn.execute(sa.select(events.c.seq).where(events.c.dedupe_key == dedupe_key)).first()
            if seen is not None:
                return None
        # Steps running in parallel read the clock before they queue for the write lock, so two events can
        # arrive a few milliseconds out of order; the timeline stays monotonic by never stepping back in time.
        last = conn.execute(sa.select(sa.func.max(events.c.at)).where(
            events.c.incident_id == event.incident_id)).scalar()
        if last is not None and ts(event.at) < last:
            event = event.model_copy(update={"at": required_ts(last)})
        result = conn.execute(events.insert(), {
            "incident_id": event.incident_id, "run_id": event.run_id, "at": ts(event.at), "actor": event.actor,
            "kind": event.kind, "text": event.text, "data": event.data, "dedupe_key": dedupe_key})
        seq = int(result.inserted_primary_key[0])  # type: ignore[index]
        stored = event.model_copy(update={"seq": seq})
        payload = json.dumps({"event": seq, "incident": event.incident_id, "run": event.run_id, "kind": event.kind,
                              "text": event.text, "data": event.data}, sort_keys=True, default=str)
        self._append_audit(conn, at=ts(event.at), actor=event.actor, action=event.kind,
                           subject=event.run_id or event.incident_id, data=payload)
        return stored

    def _append_audit(self, conn: Connection, *, at: str, actor: str, action: str, subject: str, data: str) -> None:
        last = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        seq = 1 if last is None else int(last.seq) + 1
        prev = GENESIS if last is None else str(last.hash)
        digest = audit_hash(prev_hash=prev, seq=seq, at=at, actor=actor, action=action, subject=subject, data=data)
        conn.execute(audit.insert(), {"seq": seq, "at": at, "actor": actor, "action": action, "subject": subject,
                                      "data": data, "prev_hash": prev, "hash": digest})

    def audit_refusal(self, *, at: datetime, actor: str, action: str, subject: str, data: Mapping[str, Any]) -> None:
        """Refusals that belong to no incident (unknown request id, tampered value) still reach the chain."""
        with self.tx() as conn:
            self._append_audit(conn, at=ts(at), actor=actor, action=action, subject=subject,
                               data=json.dumps(dict(data), sort_keys=True, default=str))

    def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """Walk the chain; return (rows checked, first problem or None)."""
        prev = GENESIS
        expected_seq = 1
        count = 0
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(audit).order_by(audit.c.seq)):
                count += 1
                if row.seq != expected_seq:
                    return count, AuditProblem(expected_seq, f"row {expected_seq} is missing (next row is {row.seq})")
                if row.prev_hash != prev:
                    return count, AuditProblem(row.seq, "its prev_hash does not match the hash of the row before")
                digest = audit_hash(prev_hash=row.prev_hash, seq=row.seq, at=row.at, actor=row.actor,
                                    action=row.action, subject=row.subject, data=row.data)
                if digest != row.hash:
                    return count, AuditProblem(row.seq, "its content does not match its hash (edited after writing)")
                prev = row.hash
                expected_seq += 1
            # Each event is written with its audit row: an event the chain does not cover means audit rows were
            # cut off the end (which the chain alone cannot show, having no row after them).
            newest_event = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar()
            if newest_event is not None:
                covered = conn.execute(sa.select(audit.c.data).where(
                    audit.c.data.like(f'{{"data": %, "event": {int(newest_event)}, %'))).first()
                if covered is None:
                    return count, AuditProblem(count + 1, f"event {newest_event} has no audit row: the newest audit "
                                               "rows were deleted")
        return count, None

    def audit_head(self) -> tuple[int, str]:
        """The newest row's number and hash: record it elsewhere (a ticket, the thread) to anchor the chain."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))

    def events_for(self, *, incident_id: str, run_id: str | None = None, after_seq: int = 0) -> list[Event]:
        q = sa.select(events).where(events.c.incident_id == incident_id, events.c.seq > after_seq)
        if run_id is not None:
            q = q.where(events.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [row_event(r) for r in conn.execute(q.order_by(events.c.seq))]

    def events_after(self, *, after_seq: int, limit: int = 500) -> list[Event]:
        """Every incident's events after `after_seq`, oldest first: an outbox for integrations that mirror them."""
        q = sa.select(events).where(events.c.seq > after_seq).order_by(events.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [row_event(r) for r in conn.execute(q)]

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))).scalar_one())

    def has_event(self, *, dedupe_key: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(events.c.seq).where(events.c.dedupe_key == dedupe_key)).first() is not None

    # ----------------------------------------------------------------------------------------- incidents

    def create_incident(self, *, title: str, severity: str, environment: str, tier: str, opened_by: str,
                        opened_at: datetime, detected_at: datetime, external: Mapping[str, Any] | None = None,
                        external_key: str | None = None, event_text: str,
                        checklist: Callable[[str], list[ChecklistItem]] | None = None,
                        also: Callable[[str], list[Event]] | None = None) -> tuple[Incident, bool, list[Event]]:
        """Create an incident, its `incident.opened` event and its checklist (made for the new id) in one
        transaction, with any events `also` makes for the new id. With an `external_key` already known (a
        PagerDuty incident id), return the existing incident, False and no events."""
        with self.tx() as conn:
            if external_key is not None:
                row = conn.execute(sa.select(incidents).where(incidents.c.external_key == external_key)).first()
                if row is not None:
                    return row_incident(row), False, []
            number = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(incidents.c.number), 0))).scalar_one())
            number += 1
            inc = Incident(id=f"INC-{number}", number=number, title=title, severity=severity,
                           environment=environment, tier=tier, opened_by=opened_by, opened_at=opened_at,
                           detected_at=detected_at, external=dict(external or {}))
            conn.execute(incidents.insert().values(
                id=inc.id, number=number, title=title, severity=severity, environment=environment, tier=tier,
                status=inc.status.value, opened_by=opened_by, opened_at=ts(opened_at), detected_at=ts(detected_at),
                resolution_note="", external=inc.external, external_key=external_key))
            opened = self._append_event(conn, Event(
                incident_id=inc.id, at=opened_at, actor=opened_by, kind="incident.opened", text=event_text,
                data={"detected_at": ts(detected_at)}), dedupe_key=None)
            self._insert_checklist(conn, checklist(inc.id) if checklist else [])
            stored = [opened] + [self._append_event(conn, e, dedupe_key=None) for e in (also(inc.id) if also else [])]
            return inc, True, [e for e in stored if e is not None]

    def get_incident(self, incident_id: str) -> Incident | None:
        with self.engine.connect() as conn:
            if incident_id == "latest":
                row = conn.execute(sa.select(incidents).order_by(incidents.c.number.desc()).limit(1)).first()
            else:
                row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id.upper())).first()
        return None if row is None else row_incident(row)

    def list_incidents(self, *, open_only: bool = False) -> list[Incident]:
        q = sa.select(incidents).order_by(incidents.c.number)
        if open_only:
            q = q.where(incidents.c.status != IncidentStatus.RESOLVED.value)
        with self.engine.connect() as conn:
            return [row_incident(r) for r in conn.execute(q)]

    def update_incident(self, incident_id: str, *, event: Event | None = None, dedupe_key: str | None = None,
                        **fields: Any) -> Incident:
        with self.tx() as conn:
            self._update_incident(conn, incident_id, event=event, dedupe_key=dedupe_key, fields=fields)
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one()
        return row_incident(row)

    def incident_by_key(self, external_key: str) -> Incident | None:
        """The incident opened for an external id (`pagerduty:Q1ABC…`), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.external_key == external_key)).first()
        return None if row is None else row_incident(row)

    def apply_external(self, incident_id: str, *, event: Event, dedupe_key: str,
                       merge: Mapping[str, Any] | None = None, **fields: Any) -> Event | None:
        """Apply an integration's update in one transaction: merge keys into `external`, set `fields`, append
        the event. A `dedupe_key` already seen (a redelivered webhook) changes nothing and returns None."""
        with self.tx() as conn:
            return self._update_incident(conn, incident_id, event=event, dedupe_key=dedupe_key, fields=fields,
                                         merge=merge)

    def _update_incident(self, conn: Connection, incident_id: str, *, event: Event | None, dedupe_key: str | None,
                         fields: Mapping[str, Any], merge: Mapping[str, Any] | None = None) -> Event | None:
        """Set `fields` (and merge keys into `external`) and append `event`, unless its `dedupe_key` was seen."""
        if event is not None and dedupe_key is not None and conn.execute(
                sa.select(events.c.seq).where(events.c.dedupe_key == dedupe_key)).first() is not None:
            return None
        values = {k: (ts(v) if isinstance(v, datetime) else v.value if isinstance(v, IncidentStatus) else v)
                  for k, v in fields.items()}
        if merge:
            row = conn.execute(sa.select(incidents.c.external).where(incidents.c.id == incident_id)).one()
            values["external"] = {**dict(row.external or {}), **merge}
        if values:
            conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))
        return None if event is None else self._append_event(conn, event, dedupe_key=dedupe_key, checked=True)

    def merge_external(self, incident_id: str, *, key: str, value: Any) -> Incident:
        """Record a surface's or integration's reference on the incident (a Slack thread, a PagerDuty id)."""
        with self.tx() as conn:
            row = conn.execute(sa.select(incidents.c.external).where(incidents.c.id == incident_id)).first()
            if row is None:
                raise KeyError(incident_id)
            external = dict(row.external or {})
            external[key] = value
            conn.execute(incidents.update().where(incidents.c.id == incident_id).values(external=external))
            found = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one()
        return row_incident(found)

    # ----------------------------------------------------------------------------------------- checklist

    def add_checklist(self, *, items: list[ChecklistItem]) -> None:
        if items:
            with self.tx() as conn:
                self._insert_checklist(conn, items)

    def _insert_checklist(self, conn: Connection, items: list[ChecklistItem]) -> None:
        if items:
            conn.execute(checklist_items.insert(), [
                {"incident_id": item.incident_id, "item_id": item.item_id, "position": pos, "phase": item.phase,
                 "text": item.text, "due_at": ts(item.due_at)} for pos, item in enumerate(items)])

    def shift_checklist(self, *, incident_id: str, delta: timedelta) -> None:
        """Due times are offsets from detection: when detection is corrected, they move with it."""
        items = self.checklist(incident_id=incident_id)
        with self.tx() as conn:
            for item in items:
                conn.execute(checklist_items.update().where(
                    checklist_items.c.incident_id == incident_id, checklist_items.c.item_id == item.item_id,
                ).values(due_at=ts(item.due_at + delta)))

    def checklist(self, *, incident_id: str) -> list[ChecklistItem]:
        q = sa.select(checklist_items).where(checklist_items.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(checklist_items.c.position)).all()
        return [ChecklistItem(incident_id=r.incident_id, item_id=r.item_id, phase=r.phase, text=r.text,
                              due_at=required_ts(r.due_at), done_at=parse_ts(r.done_at), done_by=r.done_by)
                for r in rows]

    def tick(self, *, incident_id: str, item_id: str, actor: str, at: datetime, event: Event) -> bool:
        """Tick an item once; False if it was already ticked (nothing changes)."""
        with self.tx() as conn:
            res = conn.execute(checklist_items.update().where(
                checklist_items.c.incident_id == incident_id, checklist_items.c.item_id == item_id,
                checklist_items.c.done_at.is_(None)).values(done_at=ts(at), done_by=actor))
            if res.rowcount == 0:
                return False
            self._append_event(conn, event, dedupe_key=None)
            return True

    # ----------------------------------------------------------------------------------------- runs

    def create_run(self, *, incident_id: str, runbook: str, environment: str, command: str, requested_by: str,
                   requested_at: datetime, params: Mapping[str, Any]) -> Run:
        with self.tx() as conn:
            number = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(runs.c.number), 0))).scalar_one()) + 1
            run = Run(id=f"R-{number}", incident_id=incident_id, runbook=runbook, environment=environment,
                      command=command, requested_by=requested_by, requested_at=requested_at,
                      status=RunStatus.PREFLIGHT, params=dict(params))
            conn.execute(runs.insert().values(
                id=run.id, number=number, incident_id=incident_id, runbook=runbook, environment=environment,
                command=command, requested_by=requested_by, requested_at=ts(requested_at),
                status=run.status.value, params=jsonable(params), plan=None, plan_hash="", reason=""))
            return run

    def get_run(self, run_id: str) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id.upper())).first()
        return None if row is None else row_run(row)

    def runs_for(self, *, incident_id: str) -> list[Run]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.incident_id == incident_id).order_by(runs.c.number))
            return [row_run(r) for r in rows]

    def active_runs(self) -> list[Run]:
        finished = [s.value for s in RunStatus if s.finished]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.status.not_in(finished)).order_by(runs.c.number))
            return [row_run(r) for r in rows]

    def update_run(self, run_id: str, *, plan: Plan | None = None, **fields: Any) -> None:
        values: dict[str, Any] = {}
        for k, v in fields.items():
            values[k] = ts(v) if isinstance(v, datetime) else v.value if isinstance(v, RunStatus) else v
        if plan is not None:
            values["plan"] = plan.model_dump(mode="json")
        with self.tx() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def request_cancel(self, run_id: str, *, actor: str) -> None:
        with self.tx() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(cancel_requested=actor))

    def cancel_requested(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(runs.c.cancel_requested).where(runs.c.id == run_id)).scalar()
        return None if value is None else str(value)

    # ----------------------------------------------------------------------------------------- steps

    def save_step(self, step: StepRun) -> None:
        values = dict(title=step.title, attempt=step.attempt, status=step.status.value,
                      started_at=ts(step.started_at) if step.started_at else None,
                      finished_at=ts(step.finished_at) if step.finished_at else None,
                      outputs=jsonable(step.outputs), error=step.error)
        with self.tx() as conn:
            found = conn.execute(sa.select(steps.c.step_id).where(
                steps.c.run_id == step.run_id, steps.c.step_id == step.step_id)).first()
            if found is None:
                conn.execute(steps.insert().values(run_id=step.run_id, step_id=step.step_id, **values))
            else:
                conn.execute(steps.update().where(steps.c.run_id == step.run_id,
                                                  steps.c.step_id == step.step_id).values(**values))

    def steps_for(self, *, run_id: str) -> list[StepRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(steps).where(steps.c.run_id == run_id)).all()
        return [row_step(r) for r in rows]

    def steps_for_incident(self, *, incident_id: str) -> list[StepRun]:
        q = sa.select(steps).join(runs, runs.c.id == steps.c.run_id).where(runs.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            return [row_step(r) for r in conn.execute(q.order_by(runs.c.number, steps.c.started_at))]

    # ----------------------------------------------------------------------------------------- approvals

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

    def add_vote(self, vote: Approval, *, event: Event) -> bool:
        """Record a vote; False when this person already voted on this request (a double click)."""
        try:
            with self.tx() as conn:
                conn.execute(approvals.insert().values(request_id=vote.request_id, actor=vote.actor,
                                                       decision=vote.decision.value, plan_hash=vote.plan_hash,
                                                       at=ts(vote.at)))
                self._append_event(conn, event, dedupe_key=None)
        except sa.exc.IntegrityError:
            return False
        return True

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

    # ----------------------------------------------------------------------------------------- provider state

    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(provider_state.c.value).where(
                provider_state.c.kind == kind, provider_state.c.key == key)).scalar()
        return None if value is None else dict(value)

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None:
        with self.tx() as conn:
            found = conn.execute(sa.select(provider_state.c.key).where(
                provider_state.c.kind == kind, provider_state.c.key == key)).first()
            if found is None:
                conn.execute(provider_state.insert().values(kind=kind, key=key, value=jsonable(value)))
            else:
                conn.execute(provider_state.update().where(
                    provider_state.c.kind == kind, provider_state.c.key == key).values(value=jsonable(value)))

    def delete_state(self, *, kind: str, key: str) -> None:
        with self.tx() as conn:
            conn.execute(provider_state.delete().where(provider_state.c.kind == kind, provider_state.c.key == key))

    def claim_once(self, *, kind: str, key: str, value: Mapping[str, Any]) -> bool:
        """Insert a marker; False if it was already there (a repeated delivery). Atomic across processes."""
        try:
            with self.tx() as conn:
                conn.execute(provider_state.insert().values(kind=kind, key=key, value=jsonable(value)))
        except sa.exc.IntegrityError:
            return False
        return True

    def list_state(self, *, kind: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        q = sa.select(provider_state).where(provider_state.c.kind == kind)
        if prefix:
            q = q.where(provider_state.c.key.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {r.key: dict(r.value) for r in rows}
