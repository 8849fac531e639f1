"""Button clicks and checklist ticks. The click's value only names what was clicked; the engine looks the
pending request up and applies the two-person rule, with approver groups resolved at click time."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.door import delivery_in
from bot.slack import blocks
from bot.slack.commands import run_command
from bot.slack.identity import groups_for_run
from bot.slack.jobs import Click
from runbooks.engine import Engine

if TYPE_CHECKING:
    from slack_bolt import App, BoltContext

    from bot.slack.app import Surface

BUTTONS = re.compile(r"^dr_(approve|reject|retry|skip|abort|cancel|pd_ack)(:.+)?$")


def register(app: App, engine: Engine, *, surface: Surface) -> None:
    @app.action(BUTTONS)
    def on_button(ack: Callable[..., None], body: dict[str, Any], context: BoltContext) -> None:
        with surface.metrics.timed_ack("button"):
            ack()
        surface.submit(Click("press", body, once=delivery_in(context)))

    @app.action(re.compile(r"^dr_tick"))
    def on_tick(ack: Callable[..., None], body: dict[str, Any], context: BoltContext) -> None:
        with surface.metrics.timed_ack("checklist"):
            ack()
        surface.submit(Click("tick", body, once=delivery_in(context)))

    @app.action(re.compile(r"^dr_choose_incident"))
    def on_choice(ack: Callable[..., None], body: dict[str, Any], context: BoltContext) -> None:
        with surface.metrics.timed_ack("choice"):
            ack()
        surface.submit(Click("choose", body, once=delivery_in(context)))


def _where(body: dict[str, Any]) -> tuple[str, str]:
    user = str(body["user"]["id"])
    channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")
    return user, channel


def press(surface: Surface, *, body: dict[str, Any]) -> None:
    action = body["actions"][0]
    user, channel = _where(body)
    what = blocks.engine_action(str(action["action_id"]))
    value = str(action.get("value", ""))[:64]
    reply = surface.engine.press(action=what, value=value, actor=user, groups=_groups(surface, what, value))
    if not reply.public or what == "cancel":
        surface.ephemeral(channel=channel, user=user, response_url=body.get("response_url"),
                          text=blocks.reply_text(reply.text))


def _groups(surface: Surface, action: str, value: str) -> dict[str, tuple[str, ...]]:
    """Members of the user groups allowed to approve this request's environment, resolved now."""
    request = surface.engine.queries.get_request(value) if action != "cancel" else None
    return groups_for_run(surface.engine, surface.groups, request.run_id if request else value)


def tick(surface: Surface, *, body: dict[str, Any]) -> None:
    action = body["actions"][0]
    user, channel = _where(body)
    if action.get("type") == "checkboxes":
        chosen = {str(o["value"]) for o in action.get("selected_options") or []}
    else:
        chosen = {str(action.get("value", ""))}
    incident_ids = {c.partition(":")[0] for c in chosen if ":" in c}
    done = {f"{i.incident_id}:{i.item_id}" for iid in incident_ids
            for i in surface.engine.queries.checklist(incident_id=iid) if i.done_at}
    new = sorted(chosen - done)
    if not new and action.get("type") == "checkboxes":
        surface.ephemeral(channel=channel, user=user, response_url=body.get("response_url"),
                          text="A ticked item stays ticked: the tick is a timestamped event on the "
                                               "timeline. Add a note with /dr incident resolve if it was wrong.")
        for iid in incident_ids:
            surface.notifier.update_checklist(iid)
        return
    for value in new:
        reply = surface.engine.press(action="tick", value=value, actor=user)
        if not reply.public:
            surface.ephemeral(channel=channel, user=user, response_url=body.get("response_url"),
                          text=blocks.reply_text(reply.text))


def choose(surface: Surface, *, body: dict[str, Any]) -> None:
    action = body["actions"][0]
    user, channel = _where(body)
    incident_id = str(action.get("value", ""))[:32]
    waiting = surface.take_choice(user=user, channel=channel)
    if waiting is None:
        surface.ephemeral(channel=channel, user=user, response_url=body.get("response_url"),
                          text="That choice has expired; type the /dr command again.")
        return
    if surface.engine.queries.get_incident(incident_id) is None:
        surface.ephemeral(channel=channel, user=user, response_url=body.get("response_url"),
                          text=f"{incident_id} does not exist any more; type the /dr command again.")
        return
    run_command(surface, waiting, incident_id=incident_id, response_url=body.get("response_url"))
