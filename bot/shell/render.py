"""Plain-text rendering for the shell: replies, events and numbered buttons."""

from __future__ import annotations

import json
from typing import Any

from runbooks.models import Event, EventKind
from runbooks.replies import Button, Reply

_QUIET = {EventKind.APPROVAL_VOTE}  # the reply to the click already says it


def clock(event: Event) -> str:
    return event.at.strftime("%H:%M:%SZ")


def plan_lines(plan: dict[str, Any], plan_hash: str) -> list[str]:
    lines = [f"  Plan {plan_hash[:8]} — {plan['runbook']} v{plan['runbook_version']} on {plan['environment']}:"]
    for n, step in enumerate(plan["steps"], 1):
        guard = " [needs approval]" if step["guarded"] else ""
        after = f" (after {', '.join(step['after'])})" if step["after"] else ""
        lines.append(f"   {n}. {step['title']}{guard}{after}")
        if step.get("skipped"):
            lines.append(f"      will not run: {step['skipped']}")
        elif step["provider"] != "builtin":
            params = ", ".join(f"{k}={_short(v)}" for k, v in step["params"].items())
            lines.append(f"      {step['provider']} {step['action']}: {params}")
        for key, value in step.get("details", {}).items():
            lines.append(f"      {key}: {_short(value)}")
    return lines


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 160 else text[:157] + "…"


def event_lines(event: Event) -> list[str]:
    if event.kind in _QUIET:
        return []
    head = f"{clock(event)} {event.actor:<8} {event.text}"
    if event.kind == EventKind.RUN_PLANNED:
        return [head, *plan_lines(event.data["plan"], str(event.data["plan_hash"]))]
    return [head]


def reply_lines(reply: Reply) -> list[str]:
    lines = reply.text.splitlines() or [""]
    if reply.attachment is not None:
        lines += ["", f"----- {reply.attachment.filename} -----", reply.attachment.content.rstrip("\n"),
                  f"----- end of {reply.attachment.filename} -----"]
    return lines


def button_line(numbered: list[tuple[int, Button]]) -> list[str]:
    if not numbered:
        return []
    if all(len(b.label) < 20 for _, b in numbered):
        return ["  " + "  ".join(f"[{n}] {b.label}" for n, b in numbered)]
    return [f"  [{n}] {b.label}" for n, b in numbered]
