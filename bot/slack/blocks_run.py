"""The run card: one message per run, updated in place, that holds the plan, each step's state, the approvals
and the only live buttons for that run.

Buttons live on the card and nowhere else in the thread, because the card is re-rendered at every event: a
button appears exactly while its question is open, and a decided question loses its buttons everywhere at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.slack.blocks_kit import (
    ABORT,
    APPROVE,
    CANCEL,
    REJECT,
    RETRY,
    SKIP,
    Block,
    actions,
    button,
    clip,
    code,
    confirm_dialog,
    context,
    esc,
    fit,
    hms,
    pointer,
    section,
    text_sections,
    unique_action_ids,
    who,
    with_note,
)
from runbooks.approvals import describe, short_hash, tally
from runbooks.models import Approval, ApprovalRequest, PlannedStep, Run, RunStatus, StepRun, StepStatus
from runbooks.timeline import format_duration

RUN_EMOJI: dict[RunStatus, str] = {
    RunStatus.PREFLIGHT: ":mag:",
    RunStatus.AWAITING_APPROVAL: ":raised_hand:",
    RunStatus.RUNNING: ":arrows_counterclockwise:",
    RunStatus.PAUSED: ":double_vertical_bar:",
    RunStatus.SUCCEEDED: ":white_check_mark:",
    RunStatus.FAILED: ":x:",
    RunStatus.REJECTED: ":no_entry:",
    RunStatus.EXPIRED: ":hourglass:",
    RunStatus.CANCELLED: ":no_entry_sign:",
}
STEP_EMOJI: dict[StepStatus, str] = {
    StepStatus.PENDING: ":white_circle:",
    StepStatus.RUNNING: ":arrows_counterclockwise:",
    StepStatus.SUCCEEDED: ":white_check_mark:",
    StepStatus.FAILED: ":x:",
    StepStatus.SKIPPED: ":fast_forward:",
    StepStatus.CANCELLED: ":no_entry_sign:",
}
_DECISIONS = {"retry": RETRY, "skip": SKIP, "abort": ABORT}

PLAN_CHARS = 12_000
"""About four screens: past that an approver cannot review the card anyway and needs the export."""
STEP_CHARS = 1_500
VALUE_CHARS = 300
COMMAND_CHARS = 500
APPROVAL_LINES = 8


def run_card(*, run: Run, steps: Sequence[StepRun], requests: Sequence[ApprovalRequest],
             votes: Sequence[Approval], now: datetime, confirm_on_approve: bool) -> list[Block]:
    """The whole card for `run` as it stands at `now`."""
    latest = _latest_attempts(steps)
    people = {run.requested_by, *(v.actor for v in votes),
              *(p for r in requests if r.run_id == run.id for p in (r.requested_by, *r.approvers))}
    body: list[Block] = [section(_summary(run, now, people))]
    plan_text, cut = plan_lines(run=run, steps=latest, now=now)
    plan_blocks = text_sections(plan_text)
    if cut:
        plan_blocks[-1] = with_note(plan_blocks[-1], pointer(run.incident_id))
    body += plan_blocks
    lines = _approval_lines(run, requests, votes, now, people)
    if lines:
        body.append(context("\n".join(lines)))
    tail = actions(unique_action_ids(_buttons(run, requests, votes, now, confirm_on_approve)))
    return fit(body, tail=tail, cut_note=pointer(run.incident_id))


def plan_lines(*, run: Run, steps: dict[str, StepRun], now: datetime,
               limit: int = PLAN_CHARS) -> tuple[str, bool]:
    """The plan as mrkdwn and whether anything was cut; shared with the `run.planned` thread message."""
    if run.plan is None:
        waiting = "pre-flight failed, no plan" if run.status is RunStatus.FAILED else "not ready (pre-flight running)"
        lines = [f"*Plan:* {waiting}"]
        lines += [_step_status(s, now) for s in steps.values()]
        return _bounded(lines, limit, total=len(lines))
    plan = run.plan
    guarded = sum(1 for s in plan.steps if s.guarded)
    head = (f"*Plan {code(short_hash(run.plan_hash))}* · {esc(plan.runbook)} v{plan.runbook_version} on "
            f"*{esc(plan.environment)}* · {len(plan.steps)} step{'' if len(plan.steps) == 1 else 's'}"
            f"{f', {guarded} need approval' if guarded else ''}")
    entries: list[str] = [head]
    cut = False
    for number, step in enumerate(plan.steps, start=1):
        entry, clipped = _step_entry(number, step, steps.get(step.id), now)
        cut = cut or clipped
        entries.append(entry)
    text, bounded = _bounded(entries, limit, total=len(plan.steps) + 1)
    return text, cut or bounded


def _bounded(entries: list[str], limit: int, *, total: int) -> tuple[str, bool]:
    kept: list[str] = []
    size = 0
    for entry in entries:
        if size + len(entry) + 1 > limit:
            missing = total - len(kept)
            kept.append(f"_… {missing} more step{'' if missing == 1 else 's'} not shown_")
            return "\n".join(kept), True
        kept.append(entry)
        size += len(entry) + 1
    return "\n".join(kept), False


def _latest_attempts(steps: Sequence[StepRun]) -> dict[str, StepRun]:
    latest: dict[str, StepRun] = {}
    for step in steps:
        if step.step_id not in latest or step.attempt >= latest[step.step_id].attempt:
            latest[step.step_id] = step
    return latest


def card_text(run: Run) -> str:
    """The card's notification text."""
    return esc(f"{run.id} {run.runbook} on {run.environment}: {run.status.value}")


def _summary(run: Run, now: datetime, people: set[str]) -> str:
    status = run.status.value.replace("_", " ")
    lines = [f"{RUN_EMOJI.get(run.status, '')} *{esc(run.id)}* · {code(run.runbook)} on *{esc(run.environment)}* "
             f"— *{status}*",
             f"Requested by {who(run.requested_by)} at {hms(run.requested_at)}: "
             f"{code(clip(run.command, COMMAND_CHARS))}"]
    if run.finished_at is not None:
        lines.append(f"Finished {hms(run.finished_at)} after {format_duration(run.finished_at - run.requested_at)}")
    if run.reason:
        lines.append(f"_{esc(clip(run.reason, 1000), people=people)}_")
    return "\n".join(lines)


def _step_entry(number: int, step: PlannedStep, state: StepRun | None, now: datetime) -> tuple[str, bool]:
    emoji = STEP_EMOJI[state.status] if state else STEP_EMOJI[StepStatus.PENDING]
    guard = " :lock: _needs approval_" if step.guarded else ""
    lines = [f"{emoji} *{number}. {esc(clip(step.title, 200))}*{guard}"]
    where = f"{code(step.provider)} · {code(step.action)}"
    if step.after:
        where += " · after " + ", ".join(code(a) for a in step.after)
    lines.append(f"      {where}")
    cut = False
    if step.skipped:
        lines.append(f"      :fast_forward: _will not run:_ {esc(clip(step.skipped, VALUE_CHARS))}")
    if step.params:
        shown = []
        for key, value in step.params.items():
            text = _value(value)
            cut = cut or len(text) > VALUE_CHARS
            shown.append(code(f"{key}={clip(text, VALUE_CHARS)}"))
        lines.append("      " + " ".join(shown))
    details = _details(step)
    if details:
        cut = cut or any(len(d) > VALUE_CHARS for d in details)
        lines.append("      " + " · ".join(esc(clip(d, VALUE_CHARS)) for d in details))
    if state is not None and state.status is not StepStatus.PENDING:
        lines.append("      " + _step_status(state, now, titled=False))
    entry = "\n".join(lines)
    if len(entry) > STEP_CHARS:
        return clip(entry, STEP_CHARS), True
    return entry, cut


def _details(step: PlannedStep) -> list[str]:
    """The provider's extras that add something to the params: the restorable window, the current value."""
    out: list[str] = []
    for key, value in step.details.items():
        if key in step.params and step.params[key] == value:
            continue
        if key == "restorable_window" and isinstance(value, dict) and {"earliest", "latest"} <= set(value):
            out.append(f"restorable window {value['earliest']} → {value['latest']}")
            continue
        out.append(f"{key.replace('_', ' ')}: {_value(value)}")
    return out


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _step_status(state: StepRun, now: datetime, *, titled: bool = True) -> str:
    parts = [f"{STEP_EMOJI[state.status]} {esc(clip(state.title, 200))}" if titled else state.status.value]
    if titled:
        parts.append(state.status.value)
    if state.started_at is not None:
        parts.append(f"started {hms(state.started_at)}")
        if state.finished_at is not None:
            parts.append(f"took {format_duration(state.finished_at - state.started_at)}")
        elif state.status is StepStatus.RUNNING:
            parts.append(f"running for {format_duration(now - state.started_at)}")
    if state.attempt > 1:
        parts.append(f"attempt {state.attempt}")
    line = " · ".join(parts)
    if state.error:
        line += f"\n      error: {esc(clip(state.error, 500))}"
    return line


def _approval_lines(run: Run, requests: Sequence[ApprovalRequest], votes: Sequence[Approval],
                    now: datetime, people: set[str]) -> list[str]:
    lines: list[str] = []
    for request in requests:
        if request.run_id != run.id:
            continue
        state = describe(request=request, votes=votes, now=now)
        if request.gate == "plan":
            lines.append(f"Approval of plan {code(short_hash(request.plan_hash))} ({esc(request.id)}): "
                         f"{esc(state, people=people)}")
        elif request.status in ("pending", "granted"):
            lines.append(f"{esc(request.option.capitalize())} step {code(request.step_id)} ({esc(request.id)}): "
                         f"{esc(state, people=people)}")
    return lines[-APPROVAL_LINES:]


def _buttons(run: Run, requests: Sequence[ApprovalRequest], votes: Sequence[Approval], now: datetime,
             confirm_on_approve: bool) -> list[dict[str, Any]]:
    pending = [r for r in requests if r.run_id == run.id and tally(request=r, votes=votes, now=now) == "pending"]
    out: list[dict[str, Any]] = []
    if run.status is RunStatus.AWAITING_APPROVAL:
        for request in (r for r in pending if r.gate == "plan"):
            short = short_hash(run.plan_hash or request.plan_hash)
            confirm = confirm_dialog(
                title=f"Approve on {run.environment}?",
                text=f"You approve plan {short} of {run.id} ({run.runbook}) on {run.environment}. Its guarded steps "
                     f"will change {run.environment} exactly as the card lists them.",
                confirm=f"Approve plan {short}", deny="Not yet", style="primary") if confirm_on_approve else None
            out.append(button(text=f"Approve plan {short}", action_id=APPROVE, value=request.id, style="primary",
                              confirm=confirm))
            out.append(button(text="Reject", action_id=REJECT, value=request.id, style="danger"))
    if run.status is RunStatus.PAUSED:
        newest: dict[str, ApprovalRequest] = {}
        for request in (r for r in pending if r.gate == "decision" and r.option in _DECISIONS):
            if request.option not in newest or request.requested_at >= newest[request.option].requested_at:
                newest[request.option] = request
        for option in _DECISIONS:
            if option in newest:
                request = newest[option]
                label = f"{option.capitalize()} {request.step_id}".strip()
                out.append(button(text=label, action_id=_DECISIONS[option], value=request.id,
                                  style="danger" if option == "abort" else ""))
    if run.status in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL):
        confirm = None
        if run.status is RunStatus.RUNNING:  # a misclick mid-restore is costly; before approval nothing ran yet
            confirm = confirm_dialog(title=f"Cancel {run.id}?",
                                     text=f"{run.id} stops; steps already finished are not undone.",
                                     confirm=f"Cancel {run.id}", deny="Keep running", style="danger")
        out.append(button(text=f"Cancel {run.id}", action_id=CANCEL, value=run.id, style="danger", confirm=confirm))
    return out
