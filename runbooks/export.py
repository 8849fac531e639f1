"""Incident exports: a Markdown post-mortem, versioned JSON and one-event-a-row CSV.

The post-mortem is the reason drbot records every moment, so it is built only from stored timestamps and the
figures in `runbooks.timeline`; `now` is passed in so that an export is reproducible. Big incidents (tens of
thousands of events from a long outage) must export in well under a second, so every format is built in one
pass with list joins or `io.StringIO`, and events are read attribute by attribute rather than via
`model_dump`, which costs several times more per event (see bench/bench_export.py).

JSON schema `drbot.incident/v1`: additive changes keep the version; renaming or removing a key bumps it.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from runbooks.models import Event, IncidentRecord, StepRun
from runbooks.timeline import as_utc, budget, format_duration, iso, rpo, rto, seconds

__all__ = ["FORMATS", "SCHEMA", "export", "export_csv", "export_json", "export_markdown"]

SCHEMA = "drbot.incident/v1"
FORMATS: tuple[str, ...] = ("md", "json", "csv")
CSV_HEADER: tuple[str, ...] = ("seq", "time", "elapsed_seconds", "incident", "run", "actor", "kind", "text")
_SHORT_HASH = 12


def export(record: IncidentRecord, *, fmt: str, now: datetime) -> str:
    """One entry point for the CLI, the shell and `/dr timeline [md|json|csv]`."""
    kind = fmt.strip().lower()
    if kind == "md":
        return export_markdown(record, now=now)
    if kind == "json":
        return export_json(record, now=now)
    if kind == "csv":
        return export_csv(record)
    raise ValueError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")


def _events(record: IncidentRecord) -> list[Event]:
    """The store's append order; a stable sort keeps input order when events were never numbered."""
    return sorted(record.events, key=lambda event: event.seq)


def _short(plan_hash: str) -> str:
    return plan_hash[:_SHORT_HASH] if plan_hash else "—"


def _when(dt: datetime | None, missing: str = "—") -> str:
    return iso(dt) if dt is not None else missing


def _plus(td: timedelta) -> str:
    return format_duration(td) if td < timedelta(0) else "+" + format_duration(td)


# --------------------------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    """Keep a value inside its table cell: a stray `|` would start a new column, a newline end the row."""
    return text.replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")


def _inline(text: str) -> str:
    """Keep a value on its list line or heading."""
    return " ".join(text.split())


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub table whose columns also line up as plain text (Slack shows Markdown files raw).

    Every column but the last is padded; the last holds free text whose length would bloat every row.
    """
    body = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in body:
        for index in range(len(widths) - 1):
            widths[index] = max(widths[index], len(row[index]))

    def line(values: Sequence[str]) -> str:
        padded = [value.ljust(widths[index]) for index, value in enumerate(values[:-1])]
        return "| " + " | ".join([*padded, values[-1]]) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths[:-1]) + "|" + "-" * (widths[-1] + 2) + "|"
    return [line(headers), rule, *(line(row) for row in body)]


def export_markdown(record: IncidentRecord, *, now: datetime) -> str:
    """The post-mortem: what happened, when, who decided, and whether the recovery targets were met."""
    incident = record.incident
    lines = [f"# {incident.id}: {_inline(incident.title)}", "",
             f"Post-mortem exported {iso(now)} by drbot. All times are UTC.", ""]
    lines += _md_summary(record)
    lines += _md_targets(record, now=now)
    lines += _md_timeline(record)
    lines += _md_steps(record, now=now)
    lines += _md_approvals(record)
    lines += _md_checklist(record, now=now)
    return "\n".join(lines).rstrip("\n") + "\n"


def _md_summary(record: IncidentRecord) -> list[str]:
    incident, tier = record.incident, record.tier
    lines = [
        "## Summary", "",
        f"- Incident: {incident.id} ({_inline(incident.title)})",
        f"- Severity: {incident.severity}",
        f"- Environment: {incident.environment}",
        f"- Tier: {tier.name} (RTO target {format_duration(tier.rto)}, RPO target {format_duration(tier.rpo)})",
        f"- Status: {incident.status.value}",
        f"- Opened: {iso(incident.opened_at)} by {incident.opened_by}",
        f"- Impact start: {_when(incident.impact_start_at, 'not recorded')}",
        f"- Detected: {iso(incident.detected_at)}",
        f"- Restored: {_when(incident.restored_at, 'not yet')}",
        f"- Resolved: {_when(incident.resolved_at, 'not yet')}",
    ]
    if incident.resolution_note:
        lines.append(f"- Resolution note: {_inline(incident.resolution_note)}")
    for item in not_done(record):
        lines.append(f"- NOT DONE: {_inline(item)}")
    if incident.external:
        refs = ", ".join(f"{key}: {_inline(str(value))}" for key, value in sorted(incident.external.items()))
        lines.append(f"- References: {refs}")
    return [*lines, ""]


def not_done(record: IncidentRecord) -> list[str]:
    """Steps a runbook has that did not run because an optional setting is absent — above all an integrity check,
    so the post-mortem says plainly that the restored data was not checked."""
    return [f"{event.text.split(':', 1)[0]} ({event.run_id}) did not run: {event.data.get('why', '')}"
            for event in record.events if event.kind == "step.skipped" and event.data.get("reason") == "not_configured"]


def _md_targets(record: IncidentRecord, *, now: datetime) -> list[str]:
    incident, tier = record.incident, record.tier
    measured = rto(record)
    if measured is not None:
        rto_row = [
            "RTO", format_duration(measured), format_duration(tier.rto), "met" if measured <= tier.rto else "missed",
            f"restored ({_when(incident.restored_at)}) minus detected ({iso(incident.detected_at)})",
        ]
    else:
        spent = budget(incident=incident, tier=tier, now=now)
        result = "missed (not restored)" if spent.over else f"open ({spent.percent:.0f}% of budget used)"
        rto_row = [
            "RTO", f"not restored ({format_duration(spent.elapsed)} so far)", format_duration(tier.rto), result,
            f"not restored yet; detected ({iso(incident.detected_at)}) to export time ({iso(now)})",
        ]
    value, basis = rpo(record)
    if value is not None:
        rpo_row = [
            "RPO", format_duration(value), format_duration(tier.rpo), "met" if value <= tier.rpo else "missed", basis,
        ]
    else:
        rpo_row = ["RPO", "unknown", format_duration(tier.rpo), "unknown", basis]
    return ["## RTO and RPO", "",
            *_table(["Measure", "Actual", "Target", "Result", "How computed"], [rto_row, rpo_row]), ""]


def _md_timeline(record: IncidentRecord) -> list[str]:
    events = _events(record)
    if not events:
        return ["## Timeline", "", "No events were recorded.", ""]
    detected = as_utc(record.incident.detected_at)
    rows = [[iso(event.at), _plus(as_utc(event.at) - detected), event.actor, event.text] for event in events]
    return ["## Timeline", "", f"{len(events)} events; elapsed is measured from detection ({iso(detected)}).", "",
            *_table(["Time (UTC)", "Elapsed", "Actor", "Event"], rows), ""]


def _step_row(step: StepRun, *, now: datetime) -> list[str]:
    if step.started_at is None:
        duration = "—"
    elif step.finished_at is not None:
        duration = format_duration(as_utc(step.finished_at) - as_utc(step.started_at))
    else:
        duration = f"{format_duration(as_utc(now) - as_utc(step.started_at))} so far"
    status = step.status.value + (f": {step.error}" if step.error else "")
    return [f"{step.title} ({step.step_id})", status, _when(step.started_at), duration, str(step.attempt)]


def _md_steps(record: IncidentRecord, *, now: datetime) -> list[str]:
    lines = ["## Steps", ""]
    by_run: dict[str, list[StepRun]] = {}
    for step in record.steps:
        by_run.setdefault(step.run_id, []).append(step)
    if not record.runs and not by_run:
        return [*lines, "No runbook was run.", ""]
    headers = ["Step", "Status", "Started", "Duration", "Attempt"]
    for run in record.runs:
        lines += [f"### {run.id}: {run.runbook} ({run.status.value})", "",
                  f"Requested by {run.requested_by} at {iso(run.requested_at)}: `{_inline(run.command)}`. "
                  f"Plan {_short(run.plan_hash)}. Finished {_when(run.finished_at, 'not yet')}."]
        if run.reason:
            lines.append(f"Reason: {_inline(run.reason)}")
        lines.append("")
        steps = by_run.pop(run.id, [])
        lines += [*_table(headers, [_step_row(step, now=now) for step in steps]), ""] if steps else [
            "No step started.", ""]
    for run_id, steps in by_run.items():  # steps whose run record is missing: show them rather than drop them
        lines += [f"### {run_id} (run record missing)", "",
                  *_table(headers, [_step_row(step, now=now) for step in steps]), ""]
    return lines


def _md_approvals(record: IncidentRecord) -> list[str]:
    lines = ["## Approvals", ""]
    if not record.requests and not record.approvals:
        return [*lines, "No approvals were requested.", ""]
    requested = {request.id: request for request in record.requests}
    if record.requests:
        rows = []
        for request in record.requests:
            gate = request.gate + (f": {request.option}" if request.option else "")
            gate += f" ({request.step_id})" if request.step_id else ""
            rows.append([request.id, request.run_id, gate, _short(request.plan_hash), request.requested_by,
                         iso(request.requested_at), str(request.required), request.status])
        lines += [*_table(["Request", "Run", "Gate", "Plan hash", "Requested by", "Requested", "Needed", "Status"],
                          rows), ""]
    if record.approvals:
        rows = []
        for approval in record.approvals:
            asked = requested.get(approval.request_id)
            plan = _short(approval.plan_hash)
            if asked is not None and asked.plan_hash != approval.plan_hash:
                plan += " (not the requested plan)"
            rows.append([approval.request_id, plan, approval.actor, iso(approval.at), approval.decision.value])
        lines += [*_table(["Request", "Plan hash", "Who", "When", "Decision"], rows), ""]
    else:
        lines += ["Nobody approved or rejected.", ""]
    return lines


def _md_checklist(record: IncidentRecord, *, now: datetime) -> list[str]:
    lines = ["## Checklist", ""]
    if not record.checklist:
        return [*lines, "No checklist was attached.", ""]
    # After resolution an unticked item stops getting later: measure overdue against the resolution.
    incident = record.incident
    until = as_utc(incident.resolved_at if incident.resolved_at is not None else now)
    phases: dict[str, list[str]] = {}
    done: dict[str, int] = {}
    total_done = overdue = 0
    for item in record.checklist:
        due = as_utc(item.due_at)
        entries = phases.setdefault(item.phase, [])
        if item.done_at is not None:
            done[item.phase] = done.get(item.phase, 0) + 1
            total_done += 1
            late = as_utc(item.done_at) - due
            note = f", {format_duration(late)} after due" if late > timedelta(0) else ""
            entries.append(f"- [x] {_inline(item.text)} (done by {item.done_by or 'unknown'} at "
                           f"{iso(item.done_at)}{note})")
        elif until > due:
            overdue += 1
            entries.append(f"- [ ] {_inline(item.text)} (due {iso(due)}, OVERDUE by {format_duration(until - due)})")
        else:
            entries.append(f"- [ ] {_inline(item.text)} (due {iso(due)})")
    lines += [f"{total_done} of {len(record.checklist)} items done; {overdue} overdue.", ""]
    for phase, entries in phases.items():
        lines += [f"### {phase}: {done.get(phase, 0)} of {len(entries)} done", "", *entries, ""]
    return lines


# --------------------------------------------------------------------------------------------- json


def _json_default(value: Any) -> Any:
    """Free-form fields (event data, step outputs, run params) may hold anything; an export never crashes."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def export_json(record: IncidentRecord, *, now: datetime) -> str:
    """Machine-readable export for dashboards and audits; numbers are whole seconds, times ISO `Z`."""
    incident, tier = record.incident, record.tier
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
        "not_done": not_done(record),
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
        "events": [
            {"seq": event.seq, "time": iso(event.at), "elapsed_seconds": seconds(as_utc(event.at) - detected),
             "run": event.run_id, "actor": event.actor, "kind": event.kind, "text": event.text, "data": event.data}
            for event in _events(record)
        ],
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
        return json.dumps(value, indent=indent, ensure_ascii=False, default=_json_default)

    members = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            body = "[\n    " + ",\n    ".join(dump(item) for item in value) + "\n  ]"
        else:
            body = dump(value, indent=2).replace("\n", "\n  ")
        members.append(f"  {dump(key)}: {body}")
    return "{\n" + ",\n".join(members) + "\n}\n"


# --------------------------------------------------------------------------------------------- csv


def export_csv(record: IncidentRecord) -> str:
    """One event a row for spreadsheets; the csv module quotes commas, quotes and newlines in the text."""
    detected = as_utc(record.incident.detected_at)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    writer.writerows(
        (event.seq, iso(event.at), seconds(as_utc(event.at) - detected), event.incident_id, event.run_id or "",
         event.actor, event.kind, event.text)
        for event in _events(record)
    )
    return buffer.getvalue()
