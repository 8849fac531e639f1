"""Answers to a person: command replies, the "which incident?" question and the export summary.

A reply can be anything from one line to a full status with twenty checklist buttons, so it is split into
sections and actions blocks by Slack's limits and cut, with a pointer to the export, only past 50 blocks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from bot.slack.blocks_kit import (
    BUTTON_TEXT,
    CHOOSE_INCIDENT,
    ID_LENGTH,
    Block,
    actions,
    button,
    button_action,
    clip,
    code,
    context,
    esc,
    fit,
    pointer,
    text_sections,
    unique_action_ids,
)
from runbooks.models import Incident
from runbooks.replies import Reply
from runbooks.timeline import iso

CHOICE_BLOCK = "dr_cmd"
"""Block id prefix of the incident choice: `dr_cmd:<command text>` keeps the command with the question."""


REPLY_TEXT = 3000


def reply_text(text: str) -> str:
    """The notification text of an answer to a person (`text=` of an ephemeral, an ack, a file's comment): the
    engine's reply or refusal quotes what was typed (`INC-1 opened: <title>`), so it is escaped like any text."""
    return esc(clip(text, REPLY_TEXT))


def reply_blocks(reply: Reply, *, people: Collection[str] = ()) -> list[Block]:
    """The reply's text and its buttons, within Slack's limits. `people`: Slack ids that may show as mentions
    (see `esc`); by default none, as a reply quotes typed text."""
    body = text_sections(esc(reply.text, people=people))
    elements = unique_action_ids(
        button(text=b.label, action_id=button_action(b), value=b.value, style=b.style) for b in reply.buttons)
    tail = actions(elements)
    note = pointer(reply.incident_id, "text")
    if len(tail) > 10:  # a reply is a message, not a dashboard: past 250 buttons, `/dr status` pages them
        tail = [*tail[:10], context(f"… {len(elements) - 250} more buttons not shown; `/dr status` lists them")]
    return fit(body, tail=tail, cut_note=note)


def choose_incident_blocks(*, incidents: Sequence[Incident], command_text: str) -> list[Block]:
    """Ask which open incident a command is for; the listener keeps the command and replays it on the click."""
    lines = [f"Several incidents are open in this channel — which one is {code(clip(command_text, 500))} for?"]
    for incident in incidents:
        lines.append(f"• *{esc(incident.id)}* {esc(clip(incident.title, 150))} — {esc(incident.environment)}, "
                     f"{esc(incident.severity)}, {incident.status.value}, detected {iso(incident.detected_at)}")
    elements: list[dict[str, Any]] = [
        button(text=f"{incident.id}: {incident.title}", action_id=f"{CHOOSE_INCIDENT}:{incident.id}",
               value=incident.id)
        for incident in incidents]
    tail = actions(elements)
    for n, block in enumerate(tail):  # block ids must differ: dr_cmd:…, dr_cmd1:…, dr_cmd2:…
        block["block_id"] = f"{CHOICE_BLOCK}{n or ''}:{command_text}"[:ID_LENGTH]
    return fit(text_sections("\n".join(lines)), tail=tail,
               cut_note="… (more incidents are open than fit here; name one: `/dr status`)")


def chosen_command(block_id: str) -> str:
    """The command text kept in a choice's block id (cut to fit 255 characters; prefer the server-side copy)."""
    prefix, sep, rest = block_id.partition(":")
    number = prefix.removeprefix(CHOICE_BLOCK)
    if not sep or not prefix.startswith(CHOICE_BLOCK) or (number and not number.isdigit()):
        raise ValueError(f"block id {block_id!r} is not an incident choice; expected `{CHOICE_BLOCK}:<command>`")
    return rest


def export_summary(*, record_summary: str, filename: str) -> list[Block]:
    """The message that goes with an uploaded export: the summary in the channel, the details in the file."""
    body = text_sections(f":page_facing_up: *Incident export*\n{esc(record_summary)}")
    note = f"Full record attached as {code(clip(filename, BUTTON_TEXT * 2))}."
    return fit(body, tail=[context(note)], cut_note=f"… (the rest is in {code(clip(filename, 150))})")

