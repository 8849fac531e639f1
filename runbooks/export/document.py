"""The JSON export (schema `drbot.incident/v1`): machine-readable, for dashboards and audits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from runbooks.export.common import SCHEMA, Timeline, json_default, not_done, timeline_of
from runbooks.models import IncidentRecord
from runbooks.timeline import as_utc, budget, iso, rpo, rto, seconds

__all__ = ["export_json"]


def export_json(record: IncidentRecord, *, now: datetime, timeline: Timeline | None = None) -> str:
    """Machine-readable export for dashboards and audits; numbers are whole seconds, times ISO `Z`. `timeline`:
    the incident's events when `record` does not hold them (the store's paged reader)."""
    incident, tier = record.incident, record.tier
    events = timeline_of(record, timeline)
    detected = as_utc(incident.detected_at)
    measured = rto(record)
    rpo_value, basis = rpo(record)
    spent = budget(incident=incident, tier=tier, now=now)

    def opt(dt: datetime | None) -> str | None:
        return iso(dt) if dt is not None else None

    document = {
        "schema": SCHEMA,
        "exported_at": iso(now),
        "incident": {
            "id": incident.id, "number": incident.number, "title": incident.title, "severity": incident.severity,
            "environment": incident.environment, "tier": incident.tier, "status": incident.status.value,
            "opened_by": incident.opened_by, "opened_at": iso(incident.opened_at), "detected_at": iso(detected),
            "impact_start_at": opt(incident.impact_start_at), "restored_at": opt(incident.restored_at),
            "resolved_at": opt(incident.resolved_at), "resolution_note": incident.resolution_note,
            "external": incident.external,
        },
        "tier": {"name": tier.name, "rto_seconds": seconds(tier.rto), "rpo_seconds": seconds(tier.rpo)},
        "not_done": not_done(events),
        "rto": {
            "seconds": seconds(measured) if measured is not None else None,
            "target_seconds": seconds(tier.rto),
            "met": measured <= tier.rto if measured is not None else (False if spent.over else None),
            "elapsed_seconds": seconds(spent.elapsed),
            "restored": incident.restored_at is not None,
        },
        "rpo": {
            "seconds": seconds(rpo_value) if rpo_value is not None else None,
            "target_seconds": seconds(tier.rpo),
            "met": rpo_value <= tier.rpo if rpo_value is not None else None,
            "basis": basis,
            "restore_point": opt(record.restore_point),
            "replica_lag_seconds": seconds(record.replica_lag) if record.replica_lag is not None else None,
        },
        "events": (
            {"seq": event.seq, "time": iso(event.at), "elapsed_seconds": seconds(as_utc(event.at) - detected),
             "run": event.run_id, "actor": event.actor, "kind": event.kind, "text": event.text, "data": event.data}
            for event in events
        ),
        "runs": [
            {"id": run.id, "runbook": run.runbook, "environment": run.environment, "command": run.command,
             "requested_by": run.requested_by, "requested_at": iso(run.requested_at), "status": run.status.value,
             "params": run.params, "plan_hash": run.plan_hash, "plan": run.plan,
             "finished_at": opt(run.finished_at), "reason": run.reason}
            for run in record.runs
        ],
        "steps": [
            {"run": step.run_id, "step": step.step_id, "title": step.title, "attempt": step.attempt,
             "status": step.status.value, "started_at": opt(step.started_at), "finished_at": opt(step.finished_at),
             "duration_seconds": seconds(as_utc(step.finished_at) - as_utc(step.started_at))
             if step.started_at is not None and step.finished_at is not None else None,
             "outputs": step.outputs, "error": step.error}
            for step in record.steps
        ],
        "approvals": [
            {"request": approval.request_id, "actor": approval.actor, "decision": approval.decision.value,
             "plan_hash": approval.plan_hash, "at": iso(approval.at)}
            for approval in record.approvals
        ],
        "requests": [
            {"id": request.id, "run": request.run_id, "gate": request.gate, "option": request.option,
             "step": request.step_id, "plan_hash": request.plan_hash, "requested_by": request.requested_by,
             "requested_at": iso(request.requested_at), "expires_at": iso(request.expires_at),
             "required": request.required, "approvers": list(request.approvers), "status": request.status}
            for request in record.requests
        ],
        "checklist": [
            {"item": item.item_id, "phase": item.phase, "text": item.text, "due_at": iso(item.due_at),
             "done_at": opt(item.done_at), "done_by": item.done_by}
            for item in record.checklist
        ],
    }
    return _layout(document)


def _layout(document: dict[str, Any]) -> str:
    """Pretty at the top, one compact line per list item (event, run, step…).

    Readable in a diff or a pager, greppable a line per event, and fast: `json.dumps(indent=…)` falls back to
    the pure-Python encoder and made this export the slowest of the three.
    """

    def dump(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=False, default=json_default)

    # One list of pieces and one join at the end: a 100,000-event export is copied once, not once per level
    # (a single non-Latin-1 character makes the whole text two bytes a character, so each copy counts).
    pieces = ["{\n"]
    for number, (key, value) in enumerate(document.items()):
        pieces.append(f"{',' if number else ''}\n  {dump(key)}: " if number else f"  {dump(key)}: ")
        if isinstance(value, Iterator | list):  # the events are an iterator, read as they are written
            first = True
            for item in value:
                pieces.append("[\n    " if first else ",\n    ")
                pieces.append(dump(item))
                first = False
            pieces.append("[]" if first else "\n  ]")
        else:
            pieces.append(dump(value, indent=2).replace("\n", "\n  "))
    pieces.append("\n}\n")
    return "".join(pieces)


