"""The incident's parent message (title, severity, live RTO budget) and its checklist message.

Both are re-rendered and `chat.update`d in place, so they always show the state at `now` rather than a history;
the history is the thread and the export.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.slack.blocks_kit import (
    CHECKBOX_OPTIONS,
    OPTION_TEXT,
    OPTION_VALUE,
    TICK,
    Block,
    actions,
    clip,
    context,
    esc,
    fit,
    header,
    hm,
    hms,
    link,
    mrkdwn,
    plain,
    pointer,
    section,
    who,
)
from runbooks.models import Checklist, ChecklistItem, ChecklistPhase, Incident, IncidentStatus, Tier
from runbooks.timeline import as_utc, budget, format_duration, iso

SEVERITY_EMOJI = {"sev1": ":red_circle:", "sev2": ":large_orange_circle:", "sev3": ":large_yellow_circle:"}
STATUS_EMOJI = {IncidentStatus.OPEN: ":fire:", IncidentStatus.RESTORED: ":white_check_mark:",
                IncidentStatus.RESOLVED: ":checkered_flag:"}
WARN_AT = 75.0


def incident_header(*, incident: Incident, tier: Tier, now: datetime, pagerduty_url: str | None = None,
                    checklist_done: int = 0, checklist_total: int = 0) -> list[Block]:
    """The parent message of the incident thread. An incident paged from PagerDuty also shows PagerDuty's own
    status, urgency, priority and assignees (from `external["pagerduty"]`, the newest event's view)."""
    fields = [
        f"*Severity*\n{SEVERITY_EMOJI.get(incident.severity, ':white_circle:')} {esc(incident.severity)}",
        f"*Environment*\n{esc(incident.environment)} (tier {esc(tier.name)})",
        f"*Status*\n{STATUS_EMOJI.get(incident.status, '')} {incident.status.value}",
        f"*Detected*\n{iso(incident.detected_at)}",
        f"*RTO*\n{rto_text(incident=incident, tier=tier, now=now)}",
    ]
    if incident.impact_start_at is not None:
        fields.append(f"*Impact started*\n{iso(incident.impact_start_at)}")
    if checklist_total:
        fields.append(f"*Checklist*\n{checklist_done}/{checklist_total} done")
    if incident.resolved_at is not None:
        fields.append(f"*Resolved*\n{iso(incident.resolved_at)}")
    pd = incident.external.get("pagerduty")
    if isinstance(pd, dict) and pd.get("id"):
        fields.append("*PagerDuty*\n" + pagerduty_text(pd))
    notes = []
    if pagerduty_url:
        notes.append(link(pagerduty_url, "PagerDuty incident"))
    notes.append(f"Opened by {who(incident.opened_by)} · updated {hms(now)}")
    return [
        header(f"{incident.id}: {incident.title}"),
        {"type": "section", "fields": [mrkdwn(clip(f, 2000)) for f in fields[:10]]},
        context(" · ".join(notes)),
    ]


def header_text(incident: Incident) -> str:
    """The parent message's notification text: the title is typed by whoever opened the incident (or PagerDuty's)."""
    return esc(f"{incident.id}: {incident.title}")


def checklist_text(incident_id: str) -> str:
    return esc(f"{incident_id} checklist")


def pagerduty_text(pd: dict[str, Any]) -> str:
    """`#42 acknowledged · high urgency · P1 · Alice, Bob`."""
    label = f"#{pd['number']}" if pd.get("number") else str(pd["id"])
    parts = [link(str(pd["url"]), label) if pd.get("url") else esc(label), esc(str(pd.get("status", "?")))]
    if pd.get("urgency"):
        parts.append(f"{esc(str(pd['urgency']))} urgency")
    if pd.get("priority"):
        parts.append(esc(str(pd["priority"])))
    assignees = [str(a) for a in pd.get("assignees") or []]
    if assignees:
        parts.append(esc(", ".join(assignees[:5]) + (f" +{len(assignees) - 5}" if len(assignees) > 5 else "")))
    return " · ".join(parts)


def rto_text(*, incident: Incident, tier: Tier, now: datetime) -> str:
    """`12m 03s of 1h 00m 00s (20 %)`, with a warning from 75 % and the result once restored."""
    b = budget(incident=incident, tier=tier, now=now)
    target = format_duration(b.target)
    if incident.restored_at is not None:
        verdict = f"missed by {format_duration(-b.remaining)}" if b.over else "met"
        emoji = ":x:" if b.over else ":white_check_mark:"
        return f"{emoji} restored in {format_duration(b.elapsed)} (target {target}, {verdict})"
    spent = f"{format_duration(b.elapsed)} of {target} ({b.percent:.0f} %)"
    if b.over:
        return f":rotating_light: {spent}, over by {format_duration(-b.remaining)}"
    if b.percent >= WARN_AT:
        return f":warning: {spent}, {format_duration(b.remaining)} left"
    return f"{spent}, {format_duration(b.remaining)} left"


# --------------------------------------------------------------------------------------------- checklist


def tick_value(item: ChecklistItem) -> str:
    """`INC-1:ack-page`, the form `Engine.press(action="tick")` expects."""
    return f"{item.incident_id}:{item.item_id}"[:OPTION_VALUE]


def checklist_blocks(*, incident_id: str, checklist: Checklist, items: Sequence[ChecklistItem],
                     now: datetime) -> list[Block]:
    """Per phase: its title and window, checkboxes (ticked = done) and who ticked what."""
    done = sum(1 for i in items if i.done_at is not None)
    overdue = sum(1 for i in items if i.done_at is None and as_utc(i.due_at) < as_utc(now))
    late = f", :warning: {overdue} overdue" if overdue else ""
    body: list[Block] = [section(f"*Incident checklist — {esc(incident_id)}* · {done}/{len(items)} done{late}")]
    anchor = _anchor(checklist, items)
    for phase, phase_items in _by_phase(checklist, items):
        if phase_items:
            body += _phase_blocks(phase, phase_items, anchor, now)
    return fit(body, cut_note=pointer(incident_id, "checklist"))


def _by_phase(checklist: Checklist, items: Sequence[ChecklistItem]
              ) -> list[tuple[ChecklistPhase, list[ChecklistItem]]]:
    """Items in catalog order; an item whose phase the catalog no longer has still shows, under its phase id."""
    known = {p.id for p in checklist.phases}
    order = {(p.id, s.id): n for p in checklist.phases for n, s in enumerate(p.items)}

    def rank(item: ChecklistItem) -> tuple[int, datetime]:
        return order.get((item.phase, item.item_id), len(order)), as_utc(item.due_at)

    groups = [(p, sorted((i for i in items if i.phase == p.id), key=rank)) for p in checklist.phases]
    strays: dict[str, list[ChecklistItem]] = {}
    for item in items:
        if item.phase not in known:
            strays.setdefault(item.phase, []).append(item)
    for phase_id, found in strays.items():
        groups.append((ChecklistPhase(id=phase_id, title=phase_id, starts=timedelta(0), ends=timedelta(0), items=()),
                       found))
    return groups


def _anchor(checklist: Checklist, items: Sequence[ChecklistItem]) -> datetime | None:
    """The detection time the due times were measured from, recovered from any item the catalog still knows."""
    dues = {(p.id, s.id): s.due for p in checklist.phases for s in p.items}
    for item in items:
        due = dues.get((item.phase, item.item_id))
        if due is not None:
            return as_utc(item.due_at) - due
    return None


def _phase_blocks(phase: ChecklistPhase, items: list[ChecklistItem], anchor: datetime | None,
                  now: datetime) -> list[Block]:
    done = sum(1 for i in items if i.done_at is not None)
    window = ""
    if phase.ends > phase.starts:
        window = f" · {_offset(phase.starts)}–{_offset(phase.ends)} after detection"
        if anchor is not None:
            window += f" ({hm(anchor + phase.starts, now)}–{hm(anchor + phase.ends, now)})"
    blocks: list[Block] = [section(f"*{esc(phase.title)}*{window} · {done}/{len(items)}")]
    elements: list[dict[str, Any]] = []
    for n, start in enumerate(range(0, len(items), CHECKBOX_OPTIONS)):
        chunk = items[start:start + CHECKBOX_OPTIONS]
        options = [_option(i, now) for i in chunk]
        element: dict[str, Any] = {"type": "checkboxes", "action_id": f"{TICK}:{phase.id}" + (f":{n + 1}" if n else ""),
                                   "options": options}
        chosen = [o for o, i in zip(options, chunk, strict=True) if i.done_at is not None]
        if chosen:
            element["initial_options"] = chosen
        elements.append(element)
    blocks += actions(elements)
    ticked = [i for i in items if i.done_at is not None]
    if ticked:
        blocks.append(context("; ".join(
            f"{who(i.done_by or '?')} ticked “{esc(clip(i.text, 80))}” at {hm(i.done_at or now, now)}"
            for i in sorted(ticked, key=lambda i: as_utc(i.done_at or now)))))
    else:
        blocks.append(context("Nothing ticked yet in this phase."))
    return blocks


def _offset(td: timedelta) -> str:
    """`0m`, `15m`, `4h`, `1h30m`, `3d`: how the catalog writes phase windows."""
    minutes = int(td.total_seconds() // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return "".join(parts) or "0m"


def _option(item: ChecklistItem, now: datetime) -> dict[str, Any]:
    text = clip(item.text, OPTION_TEXT)
    due = hm(item.due_at, now)
    if item.done_at is not None:
        late = " (late)" if as_utc(item.done_at) > as_utc(item.due_at) else ""
        note = f"done by {item.done_by or '?'} at {hm(item.done_at, now)}{late}"
    elif as_utc(item.due_at) < as_utc(now):
        note = f":warning: overdue, was due {due}"
    else:
        note = f"due {due}"
    if text != item.text:
        note = f"{note} · …{item.text[len(text[:-1]):].strip()}"
    return {"text": plain(text), "description": plain(note, OPTION_TEXT), "value": tick_value(item)}
