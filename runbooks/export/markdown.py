"""The Markdown post-mortem: summary, targets (RTO/RPO met or missed), timeline, steps, approvals, checklist."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from runbooks.export.common import Timeline, not_done, plus, short, timeline_of, when
from runbooks.models import IncidentRecord, StepRun
from runbooks.timeline import as_utc, budget, format_duration, iso, rpo, rto

__all__ = ["export_markdown"]


def _cell(text: str) -> str:
    """Keep a value inside its table cell: a stray `|` would start a new column, a newline end the row."""
    return text.replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")


def _inline(text: str) -> str:
    """Keep a value on its list line or heading."""
    return " ".join(text.split())


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub table whose columns also line up as plain text (Slack shows Markdown files raw).

    Every column but the last is padded; the last holds free text whose length would bloat every row. `rows` may
    be a generator (a long timeline read from the store): only the escaped cells are held, never the events.
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


def export_markdown(record: IncidentRecord, *, now: datetime, timeline: Timeline | None = None) -> str:
    """The post-mortem: what happened, when, who decided, and whether the recovery targets were met. `timeline`:
    the incident's events when `record` does not hold them (the store's paged reader)."""
    incident = record.incident
    events = timeline_of(record, timeline)
    lines = [f"# {incident.id}: {_inline(incident.title)}", "",
             f"Post-mortem exported {iso(now)} by drbot. All times are UTC.", ""]
    lines += _md_summary(record, events)
    lines += _md_targets(record, now=now)
    lines += _md_timeline(record, events)
    lines += _md_steps(record, now=now)
    lines += _md_approvals(record)
    lines += _md_checklist(record, now=now)
    return "\n".join(lines).rstrip("\n") + "\n"


def _md_summary(record: IncidentRecord, events: Timeline) -> list[str]:
    incident, tier = record.incident, record.tier
    lines = [
        "## Summary", "",
        f"- Incident: {incident.id} ({_inline(incident.title)})",
        f"- Severity: {incident.severity}",
        f"- Environment: {incident.environment}",
        f"- Tier: {tier.name} (RTO target {format_duration(tier.rto)}, RPO target {format_duration(tier.rpo)})",
        f"- Status: {incident.status.value}",
        f"- Opened: {iso(incident.opened_at)} by {incident.opened_by}",
        f"- Impact start: {when(incident.impact_start_at, 'not recorded')}",
        f"- Detected: {iso(incident.detected_at)}",
        f"- Restored: {when(incident.restored_at, 'not yet')}",
        f"- Resolved: {when(incident.resolved_at, 'not yet')}",
    ]
    if incident.resolution_note:
        lines.append(f"- Resolution note: {_inline(incident.resolution_note)}")
    for item in not_done(events):
        lines.append(f"- NOT DONE: {_inline(item)}")
    if incident.external:
        refs = ", ".join(f"{key}: {_inline(str(value))}" for key, value in sorted(incident.external.items()))
        lines.append(f"- References: {refs}")
    return [*lines, ""]


def _md_targets(record: IncidentRecord, *, now: datetime) -> list[str]:
    incident, tier = record.incident, record.tier
    measured = rto(record)
    if measured is not None:
        rto_row = [
            "RTO", format_duration(measured), format_duration(tier.rto), "met" if measured <= tier.rto else "missed",
            f"restored ({when(incident.restored_at)}) minus detected ({iso(incident.detected_at)})",
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


def _md_timeline(record: IncidentRecord, events: Timeline) -> list[str]:
    count = len(events)
    if not count:
        return ["## Timeline", "", "No events were recorded.", ""]
    detected = as_utc(record.incident.detected_at)

    rows = ([iso(event.at), plus(as_utc(event.at) - detected), event.actor, event.text] for event in events)
    return ["## Timeline", "", f"{count} events; elapsed is measured from detection ({iso(detected)}).", "",
            *_table(["Time (UTC)", "Elapsed", "Actor", "Event"], rows), ""]


def _step_row(step: StepRun, *, now: datetime) -> list[str]:
    if step.started_at is None:
        duration = "—"
    elif step.finished_at is not None:
        duration = format_duration(as_utc(step.finished_at) - as_utc(step.started_at))
    else:
        duration = f"{format_duration(as_utc(now) - as_utc(step.started_at))} so far"
    status = step.status.value + (f": {step.error}" if step.error else "")
    return [f"{step.title} ({step.step_id})", status, when(step.started_at), duration, str(step.attempt)]


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
                  f"Plan {short(run.plan_hash)}. Finished {when(run.finished_at, 'not yet')}."]
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
            rows.append([request.id, request.run_id, gate, short(request.plan_hash), request.requested_by,
                         iso(request.requested_at), str(request.required), request.status])
        lines += [*_table(["Request", "Run", "Gate", "Plan hash", "Requested by", "Requested", "Needed", "Status"],
                          rows), ""]
    if record.approvals:
        rows = []
        for approval in record.approvals:
            asked = requested.get(approval.request_id)
            plan = short(approval.plan_hash)
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


