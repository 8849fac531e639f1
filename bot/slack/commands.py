"""`/dr …` from Slack: parse, ack within 3 s, let the engine decide, show the outcome in the incident thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.door import delivery_in
from bot.slack import blocks
from bot.slack.identity import groups_for_run
from bot.slack.jobs import SlashCommand
from runbooks import grammar as g
from runbooks.engine import Engine
from runbooks.errors import CommandError
from runbooks.replies import Reply

if TYPE_CHECKING:
    from slack_bolt import App, BoltContext

    from bot.slack.app import Surface

NEEDS_NO_INCIDENT = (g.Help, g.ListRunbooks, g.IncidentOpen, g.CancelRun, g.RetryRun)
"""Commands that name what they act on (a run id), or need no incident at all."""


def register(app: App, engine: Engine, *, surface: Surface) -> None:
    @app.command("/dr")
    def dr(ack: Callable[..., None], command: dict[str, Any], context: BoltContext) -> None:
        text = str(command.get("text") or "").strip()
        user = str(command["user_id"])
        channel = str(command["channel_id"])
        with surface.metrics.timed_ack("command"):
            try:
                parsed = engine.parse(text)
            except CommandError as exc:
                ack(text=blocks.reply_text(exc.message))
                return
            if isinstance(parsed, g.Help | g.ListRunbooks):
                reply = engine.handle(command=parsed, actor=user, text=f"/dr {text}")
                ack(blocks=blocks.reply_blocks(reply), text=blocks.reply_text(reply.text))
                return
            ack(text=blocks.reply_text(f"On it: `/dr {text}`"))
        surface.submit(SlashCommand(command=parsed, text=text, user=user, channel=channel,
                                    response_url=command.get("response_url"), once=delivery_in(context)))


def route(surface: Surface, job: SlashCommand) -> None:
    """Find the incident the command is about (the channel's one open incident), or ask which one — after the
    ack, so that Slack's 3 s never depend on the database."""
    incident_id: str | None = None
    if not isinstance(job.command, NEEDS_NO_INCIDENT):
        here = surface.open_incidents_in(job.channel)
        if len(here) > 1:
            surface.remember_choice(job)
            surface.ephemeral(
                channel=job.channel, user=job.user, response_url=job.response_url,
                text="Several incidents are open in this channel: which one?",
                blocks=blocks.choose_incident_blocks(incidents=here, command_text=f"/dr {job.text}"))
            return
        if here:
            incident_id = here[0].id
    run_command(surface, job, incident_id=incident_id, response_url=job.response_url)


def run_command(surface: Surface, job: SlashCommand, *, incident_id: str | None,
                response_url: str | None = None) -> None:
    """The slow part, off the ack path: the engine call and the posts it leads to."""
    groups = None
    if isinstance(job.command, g.CancelRun):  # a member of an approver group may cancel; membership is asked now
        groups = groups_for_run(surface.engine, surface.groups, job.command.run_id)
    reply = surface.engine.handle(command=job.command, actor=job.user, incident_id=incident_id,
                                  text=f"/dr {job.text}", groups=groups, channel=job.channel)
    show(surface, reply, user=job.user, channel=job.channel, response_url=response_url)


def show(surface: Surface, reply: Reply, *, user: str, channel: str, response_url: str | None = None) -> None:
    """Refusals and status are for the person who asked; files go to the incident's thread."""
    thread_ts: str | None = None
    if reply.incident_id is not None:
        incident = surface.engine.queries.get_incident(reply.incident_id)
        if incident is not None:
            found = surface.notifier.ensure_thread(incident, channel=channel)
            if found is not None:
                channel, thread_ts = found
    if reply.attachment is not None and reply.public:
        surface.client.files_upload_v2(channel=channel, thread_ts=thread_ts, content=reply.attachment.content,
                                       filename=reply.attachment.filename, title=reply.attachment.filename,
                                       initial_comment=blocks.reply_text(reply.text))
        return
    surface.ephemeral(channel=channel, user=user, blocks=blocks.reply_blocks(reply), text=blocks.reply_text(reply.text),
                      thread_ts=thread_ts, response_url=response_url)
