"""The work after an ack, as typed jobs: what a listener hands over (to its thread pool, or down the pipe to the
worker process of `drbot serve`), each carrying plain, picklable values — the command already parsed once, at
the ack.

`once` is the Slack request a job answers (`bot.door.Delivery`): the job runs only if that delivery was never
claimed before, so a replay of the same signed bytes runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bot.door import Delivery
from runbooks.commands import Command

__all__ = ["Click", "Job", "Mention", "Publish", "SlashCommand", "asker"]


@dataclass(frozen=True)
class SlashCommand:
    """`/dr …`: parsed at the ack; `text` is what was typed (the timeline quotes it)."""

    command: Command
    text: str
    user: str
    channel: str
    response_url: str | None = None
    once: Delivery | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Click:
    """A button or checkbox: `press` (approve, reject, retry, skip, abort, cancel, acknowledge), `tick` (the
    checklist), `choose` (which incident a command in a busy channel is for). `body` is Slack's payload."""

    kind: Literal["press", "tick", "choose"]
    body: dict[str, Any]
    once: Delivery | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Mention:
    """The bot was mentioned: it answers with where the commands are."""

    channel: str
    thread: str | None
    once: Delivery | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Publish:
    """An event the HTTP front stored (a PagerDuty webhook), for the worker's notifiers to show."""

    event: dict[str, Any]
    once: Delivery | None = field(default=None, compare=False)


Job = SlashCommand | Click | Mention | Publish


def asker(job: Job) -> tuple[str, str, str | None] | None:
    """(channel, user, response_url) of the person a job answers, when it answers one."""
    if isinstance(job, SlashCommand):
        return job.channel, job.user, job.response_url
    if isinstance(job, Click):
        user, channel = job.body.get("user", {}).get("id"), job.body.get("channel", {}).get("id")
        if user and channel:
            return str(channel), str(user), job.body.get("response_url")
    return None
