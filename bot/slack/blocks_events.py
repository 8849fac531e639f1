"""Timeline events as thread posts.

Only events a person must notice get a message of their own (a plan to review, an approval to give, a pause to
decide, a budget warning, an outcome); progress and step transitions only re-render the run card, so the thread
stays readable during a 40-minute restore.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from pydantic import ValidationError

from bot.slack.blocks_kit import (
    PD_ACK,
    Block,
    actions,
    button,
    clip,
    code,
    context,
    esc,
    fit,
    hms,
    pointer,
    text_sections,
    who,
)
from runbooks.approvals import short_hash
from runbooks.models import Event, EventKind, Plan

LINE_CHARS = 3000
SUMMARY_STEPS = 40

_OUTCOMES: dict[str, str] = {
    EventKind.RUN_SUCCEEDED: ":white_check_mark: *Run succeeded*",
    EventKind.RUN_FAILED: ":x: *Run failed*",
    EventKind.RUN_CANCELLED: ":no_entry_sign: *Run cancelled*",
    EventKind.RUN_REJECTED: ":no_entry: *Plan rejected*",
    EventKind.RUN_EXPIRED: ":hourglass: *Approval expired*",
    EventKind.INCIDENT_RESTORED: ":white_check_mark: *Service restored*",
    EventKind.INCIDENT_RESOLVED: ":checkered_flag: *Incident resolved*",
    EventKind.RUN_REPORT: ":memo: *Report*",
    EventKind.RUN_NOTICE: ":loudspeaker: *Notice*",
    EventKind.RUN_CLEANUP: ":broom: *Clean-up*",
    EventKind.LEADER_TAKEOVER: ":arrows_counterclockwise: *Takeover*",
    EventKind.INCIDENT_SUGGESTED: ":bulb: *Suggested runbooks*",
    "pagerduty.acknowledged": ":eyes: *Acknowledged in PagerDuty*",
    "pagerduty.unacknowledged": ":bell: *Unacknowledged in PagerDuty*",
    "pagerduty.resolved": ":checkered_flag: *Resolved in PagerDuty*",
    "pagerduty.reopened": ":leftwards_arrow_with_hook: *Reopened in PagerDuty*",
    "pagerduty.annotated": ":memo: *PagerDuty note*",
    "pagerduty.priority_updated": ":arrow_up_down: *PagerDuty priority changed*",
    "pagerduty.escalated": ":arrow_double_up: *Escalated in PagerDuty*",
    "pagerduty.reassigned": ":busts_in_silhouette: *Reassigned in PagerDuty*",
    "pagerduty.delegated": ":busts_in_silhouette: *Delegated in PagerDuty*",
    EventKind.PAGERDUTY_FAILED: ":warning: *PagerDuty call failed*",
}
_RTO = {50: ":hourglass_flowing_sand: *RTO budget half used (50 %)*",
        75: ":warning: *RTO budget 75 % used*",
        100: ":rotating_light: *RTO budget exhausted (100 %)*"}


def people_in(event: Event) -> frozenset[str]:
    """Who the event itself names from Slack: its actor, who is told, who decided (`data["by"]`, the engine's
    comma-separated voters). Only these, and what the caller adds, may become mentions in its sentence."""
    named = [event.actor, str(event.data.get("tell") or ""), *str(event.data.get("by") or "").split(",")]
    return frozenset(n.strip() for n in named if n.strip())


def event_line(event: Event, *, people: Collection[str] = ()) -> str:
    """`04:51:12Z alice: text` on one line: the notification text and the fallback for clients without blocks."""
    text = clip(" ".join(event.text.split()), LINE_CHARS - 100)
    return f"`{hms(event.at)}` {who(event.actor)}: {esc(text, people=people_in(event) | set(people))}"


def event_message(event: Event, *, people: Collection[str] = ()) -> list[Block] | None:
    """The thread post for `event`, or None when the event only updates the run card or the header. `people`
    are more Slack ids the caller knows are involved (a request's approvers), to show as mentions."""
    render = _RENDERERS.get(event.kind)
    named = people_in(event) | set(people)
    if render is None:
        if event.kind not in _OUTCOMES:
            return None
        return _simple(event, _OUTCOMES[event.kind], people=named)
    return render(event, named)


def _footer(event: Event) -> Block:
    run = f" · {esc(event.run_id)}" if event.run_id else ""
    return context(f"{hms(event.at)} · {who(event.actor)} · {esc(event.incident_id)}{run}")


def _simple(event: Event, title: str, *, note: str = "", people: Collection[str] = ()) -> list[Block]:
    emoji, _, label = title.partition(" ")
    text = esc(event.text, people=people)
    plain_label = label.strip("*")
    # "Service restored: …" needs no "Service restored" heading above it.
    repeated = text.startswith(plain_label)
    head = f"{emoji} *{plain_label}*{text[len(plain_label):]}" if repeated else f"{title}\n{text}"
    body = text_sections(head + (f"\n{note}" if note else ""))
    return fit(body, tail=[_footer(event)], cut_note=pointer(event.incident_id, "text"))


def _planned(event: Event, people: Collection[str]) -> list[Block]:
    try:
        plan = Plan.model_validate(event.data.get("plan"))
    except ValidationError:
        return _simple(event, ":clipboard: *Plan ready*", people=people)
    run_id = esc(event.run_id or "")
    title = "Drill plan" if plan.drill else "Plan"
    lines = [f":clipboard: *{title} {code(short_hash(str(event.data.get('plan_hash', ''))))} for {run_id}* · "
             f"{esc(plan.runbook)} v{plan.runbook_version} on *{esc(plan.environment)}*"]
    # a drill's banner, what the run creates and what its clean-up deletes (runbooks.drills.plan_lines)
    notes = [str(n) for n in event.data.get("notes") or []]
    lines += [f":test_tube: *{esc(clip(line, 400))}*" if n == 0 and plan.drill else f":broom: {esc(clip(line, 400))}"
              for n, line in enumerate(notes)]
    # what to expect beside the plan: the RTO forecast and the data the chosen point loses (runbooks.outlook)
    ahead = event.data.get("ahead")
    ahead = [str(a) for a in ahead] if isinstance(ahead, list) else event.text.splitlines()[1:3]
    lines += [f":crystal_ball: {esc(clip(line, 400))}" for line in ahead]
    for number, step in enumerate(plan.steps[:SUMMARY_STEPS], start=1):
        window = step.details.get("restorable_window")
        extra = ""
        if isinstance(window, dict) and {"earliest", "latest"} <= set(window):
            extra = f" — restorable window {esc(str(window['earliest']))} → {esc(str(window['latest']))}"
        if step.skipped:  # the approver must see what will not be done, e.g. the restored data not checked
            extra = f" — :fast_forward: _will not run:_ {esc(clip(step.skipped, 300))}"
        lines.append(f"{number}. {esc(clip(step.title, 200))}{' :lock:' if step.guarded else ''}{extra}")
    hidden = len(plan.steps) - SUMMARY_STEPS
    if hidden > 0:
        lines.append(f"_… {hidden} more step{'' if hidden == 1 else 's'}_ {pointer(event.incident_id)}")
    lines.append(f"_Parameters and approvals are on the {run_id} card; :lock: steps need approval._")
    return fit(text_sections("\n".join(lines)), tail=[_footer(event)], cut_note=pointer(event.incident_id))


def _approval(event: Event, people: Collection[str]) -> list[Block]:
    request = str(event.data.get("request_id", ""))
    card = f"the {esc(event.run_id)} card" if event.run_id else "the run card"
    where = f"Approve or reject on {card}"
    plan_hash = str(event.data.get("plan_hash", ""))
    note = f"_{where} (request {code(request)}, plan {code(short_hash(plan_hash))})._"
    return _simple(event, ":raised_hand: *Approval needed*", note=note, people=people)


def _paused(event: Event, people: Collection[str]) -> list[Block]:
    step = str(event.data.get("step_id", ""))
    where = f"the {esc(event.run_id)} card" if event.run_id else "the run card"
    note = f"_Retry, skip or abort step {code(step)} on {where}._"
    return _simple(event, ":double_vertical_bar: *Run paused after a failed step*", note=note, people=people)


def _preflight_failed(event: Event, people: Collection[str]) -> list[Block]:
    problems = [str(p) for p in event.data.get("problems", []) if str(p)]
    if not problems:
        return _simple(event, ":x: *Pre-flight failed; nothing was changed*", people=people)
    lines = [":x: *Pre-flight failed; nothing was changed*", f"{esc(event.run_id or '')} cannot start:"]
    lines += [f"• {esc(clip(p, 1000))}" for p in problems]
    return fit(text_sections("\n".join(lines)), tail=[_footer(event)], cut_note=pointer(event.incident_id, "text"))


def _rto(event: Event, people: Collection[str]) -> list[Block]:
    raw = event.data.get("percent", 0)
    percent = int(raw) if isinstance(raw, int | float) else 0
    title = _RTO.get(percent, f":warning: *RTO budget {percent} % used*")
    return _simple(event, title, people=people)


def _paged(event: Event, people: Collection[str]) -> list[Block]:
    """The alert's first line in the thread, with the one button that saves a trip to PagerDuty."""
    body = _simple(event, ":pager: *Paged*", people=people)
    ack = button(text="Acknowledge in PagerDuty", action_id=PD_ACK, value=event.incident_id, style="primary")
    return body[:-1] + actions([ack]) + body[-1:]


def _sent(event: Event, people: Collection[str]) -> list[Block] | None:
    """Acknowledge and resolve are confirmed in the thread; mirrored notes only go to the timeline."""
    if event.data.get("action") == "note":
        return None
    return _simple(event, ":outbox_tray: *PagerDuty updated*", people=people)


_RENDERERS: dict[str, Callable[[Event, Collection[str]], list[Block] | None]] = {
    "pagerduty.triggered": _paged,
    EventKind.PAGERDUTY_SENT: _sent,
    EventKind.RUN_PLANNED: _planned,
    EventKind.APPROVAL_REQUESTED: _approval,
    EventKind.RUN_PAUSED: _paused,
    EventKind.RUN_PREFLIGHT_FAILED: _preflight_failed,
    EventKind.RTO_WARNING: _rto,
}
