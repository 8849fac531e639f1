"""What the engine hands back to surfaces: replies to commands and clicks, their buttons and attachments.
Surfaces render these; the same button set appears in the shell as `[1] Approve` and in Slack as Block Kit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from runbooks.errors import CommandError
from runbooks.models import Event, EventKind

ButtonAction = Literal["approve", "reject", "retry", "skip", "abort", "cancel", "tick", "pd_ack"]
"""What a button does, as `Engine.press` takes it (each surface maps it to its own ids: `dr_approve`, `[1]`)."""
BUTTON_ACTIONS: frozenset[str] = frozenset(get_args(ButtonAction))


def button_action(name: str) -> ButtonAction:
    """`name` as a `ButtonAction` (a decision's option read back from an event, a surface's id); ValueError if it
    is none."""
    if name not in BUTTON_ACTIONS:
        raise ValueError(f"{name!r} is not a button action; expected one of {', '.join(sorted(BUTTON_ACTIONS))}")
    return cast(ButtonAction, name)


@dataclass(frozen=True)
class Button:
    label: str
    action: ButtonAction
    value: str  # a request id, a checklist item id, a run id
    style: str = ""  # primary | danger


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: str
    mimetype: str


@dataclass(frozen=True)
class Reply:
    """What a surface shows in answer to a command or a click."""

    text: str
    buttons: tuple[Button, ...] = ()
    incident_id: str | None = None
    run_id: str | None = None
    attachment: Attachment | None = None
    public: bool = True
    """False for refusals and errors: Slack shows those to the actor only."""


def refusal(error: CommandError) -> Reply:
    return Reply(text=error.message, public=False)


def describe_buttons(event: Event) -> tuple[Button, ...]:
    """The buttons an event carries, the same for every surface."""
    if event.kind == EventKind.APPROVAL_REQUESTED:
        rid = str(event.data["request_id"])
        return (Button("Approve", "approve", rid, "primary"), Button("Reject", "reject", rid, "danger"))
    if event.kind == EventKind.RUN_RUNNING and event.run_id:
        return (Button(f"Cancel {event.run_id}", "cancel", event.run_id, "danger"),)
    if event.kind == EventKind.RUN_PAUSED:
        requests: dict[str, Any] = dict(event.data.get("requests", {}))
        return tuple(Button(opt.capitalize(), button_action(opt), str(rid), "danger" if opt == "abort" else "")
                     for opt, rid in requests.items())
    if event.kind == "pagerduty.triggered":
        return (Button("Acknowledge in PagerDuty", "pd_ack", event.incident_id, "primary"),)
    return ()
