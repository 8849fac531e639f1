"""Events API: a mention of the bot gets a pointer to the commands (the events that matter arrive as /dr)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.door import delivery_in
from bot.slack.jobs import Mention
from runbooks.engine import Engine

if TYPE_CHECKING:
    from slack_bolt import App, BoltContext

    from bot.slack.app import Surface

HINT = "I run disaster-recovery runbooks: type `/dr help` for the commands, `/dr status` for the open incident."


def register(app: App, engine: Engine, *, surface: Surface) -> None:
    @app.event("app_mention")
    def mentioned(event: dict[str, Any], ack: Any, context: BoltContext) -> None:
        ack()
        channel = str(event.get("channel", ""))
        thread = event.get("thread_ts") or event.get("ts")
        surface.submit(Mention(channel=channel, thread=thread, once=delivery_in(context)))


def hint(surface: Surface, *, channel: str, thread: str | None) -> None:
    surface.client.chat_postMessage(channel=channel, thread_ts=thread, text=HINT)
