"""drbot's tables (SQLAlchemy Core) and the mapping of their rows to domain models. Times are ISO-8601 UTC text
with microseconds, which sorts correctly as text on every backend; JSON columns hold parameters, outputs and event
data. Only the store's modules read these tables."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from runbooks.models import (
    ApprovalRequest,
    Event,
    Incident,
    IncidentStatus,
    Plan,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
)

metadata = sa.MetaData()

_ts = sa.String(32)  # ISO-8601 UTC with Z and microseconds: sorts as text on every backend

incidents = sa.Table(
    "incidents", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("number", sa.Integer, nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("severity", sa.String(8), nullable=False),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("tier", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("opened_by", sa.String(128), nullable=False),
    sa.Column("opened_at", _ts, nullable=False),
    sa.Column("detected_at", _ts, nullable=False),
    sa.Column("impact_start_at", _ts),
    sa.Column("restored_at", _ts),
    sa.Column("resolved_at", _ts),
    sa.Column("resolution_note", sa.Text, nullable=False, default=""),
    sa.Column("external", sa.JSON, nullable=False, default=dict),
    sa.Column("external_key", sa.String(200), unique=True),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("number", sa.Integer, nullable=False, unique=True),
    sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("runbook", sa.String(64), nullable=False),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("requested_at", _ts, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("plan", sa.JSON),
    sa.Column("plan_hash", sa.String(64), nullable=False, default=""),
    sa.Column("finished_at", _ts),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("cancel_requested", sa.String(128)),
    sa.Column("drill", sa.Boolean, nullable=False, server_default=sa.false()),  # added by issue 12
)

steps = sa.Table(
    "steps", metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("step_id", sa.String(64), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", _ts),
    sa.Column("finished_at", _ts),
    sa.Column("outputs", sa.JSON, nullable=False, default=dict),
    sa.Column("error", sa.Text, nullable=False, default=""),
)

approval_requests = sa.Table(
    "approval_requests", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("number", sa.Integer, nullable=False, unique=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("gate", sa.String(16), nullable=False),
    sa.Column("option", sa.String(16), nullable=False, default=""),
    sa.Column("step_id", sa.String(64), nullable=False, default=""),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("requested_at", _ts, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
    sa.Column("required", sa.Integer, nullable=False),
    sa.Column("approvers", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("dedupe_key", sa.String(200), unique=True),
)

approvals = sa.Table(
    "approvals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(32), sa.ForeignKey("approval_requests.id"), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("at", _ts, nullable=False),
    sa.UniqueConstraint("request_id", "actor", name="uq_one_vote_per_person"),
)

checklist_items = sa.Table(
    "checklist_items", metadata,
    sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), primary_key=True),
    sa.Column("item_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("phase", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("due_at", _ts, nullable=False),
    sa.Column("done_at", _ts),
    sa.Column("done_by", sa.String(128)),
)

events = sa.Table(
    "events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(32), nullable=False, index=True),
    sa.Column("run_id", sa.String(32)),
    sa.Column("at", _ts, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("dedupe_key", sa.String(300), unique=True),
)
# An incident's newest event, in O(log n) on both backends: the timeline's clamp reads it on every append, and an
# incident reporting progress all day has tens of thousands of events. (SQLite's index on incident_id alone would
# do, as it ends in the rowid; PostgreSQL's does not.)
events_newest = sa.Index("ix_events_incident_seq", events.c.incident_id, events.c.seq)

audit = sa.Table(
    "audit", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", _ts, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

provider_state = sa.Table(
    "provider_state", metadata,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def ts(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("naive datetime reached the store; all times must be UTC-aware")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str | None) -> datetime | None:
    """A time as `ts` wrote it (`2026-11-24T10:00:00.000000Z`). `fromisoformat` reads it about 20 times faster than
    `strptime`, which matters when an export reads 100,000 events."""
    if text is None:
        return None
    return datetime.fromisoformat(text)


def required_ts(text: str) -> datetime:
    value = parse_ts(text)
    assert value is not None
    return value


# --------------------------------------------------------------------------------------------- row mapping


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


EVENT_COLUMNS = (events.c.seq, events.c.incident_id, events.c.run_id, events.c.at, events.c.actor, events.c.kind,
                 events.c.text, sa.type_coerce(events.c.data, sa.Text).label("data"))
"""What `row_event` reads, `data` as its JSON text: parsed here, it costs a quarter of SQLAlchemy's JSON type."""


def event_data(value: Any) -> dict[str, Any]:
    """An event's `data` as selected through EVENT_COLUMNS: its JSON text (a driver may hand over the object)."""
    data = json.loads(value) if isinstance(value, str | bytes) else value
    return dict(data or {})


def row_event(r: Any) -> Event:
    """Rows were validated on the way in (`write_event`), so they are not validated again on the way out: an
    incident's timeline can be 100,000 events long. The names that repeat on every row are shared, not copied."""
    return Event.model_construct(seq=r.seq, incident_id=sys.intern(r.incident_id),
                                 run_id=sys.intern(r.run_id) if r.run_id else None, at=required_ts(r.at),
                                 actor=sys.intern(r.actor), kind=sys.intern(r.kind), text=r.text,
                                 data=event_data(r.data))


def row_incident(r: Any) -> Incident:
    return Incident(id=r.id, number=r.number, title=r.title, severity=r.severity, environment=r.environment,
                    tier=r.tier, status=IncidentStatus(r.status), opened_by=r.opened_by,
                    opened_at=required_ts(r.opened_at),
                    detected_at=required_ts(r.detected_at), impact_start_at=parse_ts(r.impact_start_at),
                    restored_at=parse_ts(r.restored_at), resolved_at=parse_ts(r.resolved_at),
                    resolution_note=r.resolution_note or "", external=dict(r.external or {}))


def row_run(r: Any) -> Run:
    return Run(id=r.id, incident_id=r.incident_id, runbook=r.runbook, environment=r.environment, command=r.command,
               requested_by=r.requested_by, requested_at=required_ts(r.requested_at), status=RunStatus(r.status),
               params=dict(r.params or {}), plan=Plan.model_validate(r.plan) if r.plan else None,
               plan_hash=r.plan_hash or "", finished_at=parse_ts(r.finished_at), reason=r.reason or "",
               drill=bool(r.drill))


def row_step(r: Any) -> StepRun:
    return StepRun(run_id=r.run_id, step_id=r.step_id, title=r.title, attempt=r.attempt, status=StepStatus(r.status),
                   started_at=parse_ts(r.started_at), finished_at=parse_ts(r.finished_at),
                   outputs=dict(r.outputs or {}), error=r.error or "")


def row_request(r: Any) -> ApprovalRequest:
    return ApprovalRequest(id=r.id, run_id=r.run_id, gate=r.gate, option=r.option or "", step_id=r.step_id or "",
                           plan_hash=r.plan_hash, requested_by=r.requested_by, requested_at=required_ts(r.requested_at),
                           expires_at=required_ts(r.expires_at), required=r.required, approvers=tuple(r.approvers),
                           status=r.status)
