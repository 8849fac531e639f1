"""Block Kit building bricks shared by every renderer: action ids, escaping, clipping and fitting to Slack's limits.

Slack rejects a whole message when one limit is broken (a 3001-character section, a 51st block), and at 3 a.m. a
rejected plan card is a missing approval button. So every brick here clips to its limit itself, and `fit`
cuts a too-long message at a block boundary and says where the full text is, instead of letting Slack refuse it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from runbooks.replies import Button, ButtonAction
from runbooks.timeline import as_utc

Block = dict[str, Any]

APPROVE = "dr_approve"
REJECT = "dr_reject"
RETRY = "dr_retry"
SKIP = "dr_skip"
ABORT = "dr_abort"
CANCEL = "dr_cancel"
TICK = "dr_tick"
CHOOSE_INCIDENT = "dr_choose_incident"
PD_ACK = "dr_pd_ack"

_BY_ENGINE: dict[ButtonAction, str] = {
    "approve": APPROVE, "reject": REJECT, "retry": RETRY, "skip": SKIP, "abort": ABORT, "cancel": CANCEL,
    "tick": TICK, "pd_ack": PD_ACK,
}
_BY_SLACK: dict[str, ButtonAction] = {slack: engine for engine, slack in _BY_ENGINE.items()}

MAX_BLOCKS = 50
SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
ID_LENGTH = 255
ACTIONS_ELEMENTS = 25
CONTEXT_ELEMENTS = 10
CHECKBOX_OPTIONS = 10
OPTION_TEXT = 75
OPTION_VALUE = 150
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_URL_UNSAFE = {ord(c): f"%{ord(c):02X}" for c in "|<> \t\r\n"}


# --------------------------------------------------------------------------------------------- action ids


def button_action(button: Button) -> str:
    """The Slack action id for an engine button; an action the engine invented later must not become a dead
    button, so an unknown one is an error here rather than in front of the approver."""
    try:
        return _BY_ENGINE[button.action]
    except KeyError:
        raise ValueError(f"no Slack action id for button action {button.action!r}; "
                         f"known: {', '.join(sorted(_BY_ENGINE))}") from None


def engine_action(action_id: str) -> ButtonAction:
    """The engine action for a Slack action id. Suffixes after `:` (`dr_tick:immediate`, `dr_approve:2`) only
    keep ids unique within a message, so they are ignored."""
    base = action_id.partition(":")[0]
    try:
        return _BY_SLACK[base]
    except KeyError:
        raise ValueError(f"unknown action id {action_id!r}; expected one of {', '.join(sorted(_BY_SLACK))} "
                         f"(optionally followed by `:suffix`)") from None


# --------------------------------------------------------------------------------------------- text


_USER_IN_TEXT = re.compile(r"(?<![\w@/.-])([UW](?=[A-Z0-9]*\d)[A-Z0-9]{4,11})(?![\w.-])")


def esc(text: str, *, people: Collection[str] = ()) -> str:
    """The one escape for text that reaches mrkdwn or a message's `text`: titles, notes, commands, parameters,
    provider errors, PagerDuty fields, and the engine's sentences that quote them. Slack needs only `&`, `<` and
    `>` escaped; without it a typed `<!channel>` pings everyone and `<https://evil.example|click me>` hides a link.

    `people` are Slack user ids drbot knows from Slack itself for this message (the event's actor, the requester,
    voters, a request's approvers), never from typed text: where one stands as a word (`U0BOB approved R-1`) it
    becomes a mention, which shows the name. Any other id-shaped word stays as typed, so typing `U0BOSS` in a
    title pings nobody."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    known = {p for p in people if _SLACK_USER.match(p)}
    if not known:
        return escaped
    return _USER_IN_TEXT.sub(lambda m: f"<@{m[1]}>" if m[1] in known else m[0], escaped)


def who(actor: str) -> str:
    """A Slack user id becomes a mention (shows the person's name); shell names and `drbot` stay as they are.
    An actor is the id Slack put in the request, not something the person typed."""
    return f"<@{actor}>" if _SLACK_USER.match(actor) else esc(actor)


def code(text: str) -> str:
    """Inline code that a backtick in the value cannot break out of."""
    return "`" + esc(text).replace("`", "ˋ") + "`"


def link(url: str, label: str) -> str:
    """`<url|label>` for a URL drbot was given (PagerDuty's), or just the label when it is not http(s): a `|` or
    `>` in the URL cannot end the link early and the label is escaped like any text."""
    if not url.startswith(("https://", "http://")):
        return esc(label)
    return f"<{esc(url.translate(_URL_UNSAFE))}|{esc(label)}>"


def clip(text: str, limit: int, *, tail: str = "…") -> str:
    """Cut at a word boundary when one is near, so a clipped title still reads as words."""
    if len(text) <= limit:
        return text
    room = max(limit - len(tail), 0)
    cut = text[:room]
    space = cut.rfind(" ")
    if space > room * 0.6:
        cut = cut[:space]
    return cut.rstrip() + tail


def hms(moment: datetime) -> str:
    return as_utc(moment).strftime("%H:%M:%SZ")


def hm(moment: datetime, now: datetime) -> str:
    """`10:42Z` today and `Nov 23 10:42Z` otherwise, so yesterday is never mistaken for today."""
    moment, today = as_utc(moment), as_utc(now)
    return moment.strftime("%H:%MZ") if moment.date() == today.date() else moment.strftime("%b %d %H:%MZ")


def pointer(incident_id: str | None, what: str = "plan") -> str:
    """Where the whole text lives when a message had to be cut."""
    return f"… (full {what}: `/dr timeline md` or `drbot export {incident_id or 'latest'}`)"


# --------------------------------------------------------------------------------------------- bricks


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def plain(text: str, limit: int | None = None) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit) if limit else text, "emoji": True}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text or "-", HEADER_TEXT)}


def section(text: str) -> Block:
    return {"type": "section", "text": mrkdwn(clip(text or " ", SECTION_TEXT))}


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(clip(t or " ", SECTION_TEXT)) for t in texts[:CONTEXT_ELEMENTS]]}


def divider() -> Block:
    return {"type": "divider"}


def button(*, text: str, action_id: str, value: str, style: str = "",
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "button", "text": plain(text, BUTTON_TEXT), "action_id": action_id[:ID_LENGTH],
                               "value": value[:BUTTON_VALUE]}
    if style in ("primary", "danger"):
        element["style"] = style
    if confirm is not None:
        element["confirm"] = confirm
    return element


def confirm_dialog(*, title: str, text: str, confirm: str, deny: str, style: str = "") -> dict[str, Any]:
    dialog: dict[str, Any] = {"title": plain(title, CONFIRM_TITLE), "text": plain(text, CONFIRM_TEXT),
                              "confirm": plain(confirm, CONFIRM_BUTTON), "deny": plain(deny, CONFIRM_BUTTON)}
    if style in ("primary", "danger"):
        dialog["style"] = style
    return dialog


def actions(elements: Sequence[dict[str, Any]], *, block_id: str | None = None) -> list[Block]:
    """One actions block per 25 elements (Slack's limit), with distinct block ids when one is asked for."""
    out: list[Block] = []
    for n, start in enumerate(range(0, len(elements), ACTIONS_ELEMENTS)):
        block: Block = {"type": "actions", "elements": list(elements[start:start + ACTIONS_ELEMENTS])}
        if block_id is not None:
            block["block_id"] = (block_id if n == 0 else f"{block_id}:{n}")[:ID_LENGTH]
        out.append(block)
    return out


def unique_action_ids(elements: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Slack tells clicks apart by action id, so a second `dr_approve` in one message becomes `dr_approve:2`;
    `engine_action` strips the suffix again."""
    seen: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for element in elements:
        base = str(element["action_id"])
        seen[base] = seen.get(base, 0) + 1
        out.append(element if seen[base] == 1 else {**element, "action_id": f"{base}:{seen[base]}"[:ID_LENGTH]})
    return out


def split_text(text: str, limit: int = SECTION_TEXT) -> list[str]:
    """Chunks of at most `limit` characters, broken between lines where possible so a list item stays whole."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current or not chunks:
        chunks.append(current)
    return chunks


def text_sections(text: str, *, limit: int = SECTION_TEXT) -> list[Block]:
    return [section(chunk) for chunk in split_text(text, limit) if chunk.strip()] or [section(" ")]


def fit(body: Sequence[Block], *, tail: Sequence[Block] = (), cut_note: str, limit: int = MAX_BLOCKS) -> list[Block]:
    """`body` then `tail` (the buttons), within `limit` blocks. When the body is too long it is cut at a block
    boundary and its last kept section ends with `cut_note`, so the reader sees the cut where it happened."""
    tail = list(tail)[: limit - 1]
    room = limit - len(tail)
    if len(body) <= room:
        return [*body, *tail]
    kept = list(body[: max(room, 1)])
    kept = [*kept[:-1], with_note(kept[-1], cut_note)]
    return [*kept, *tail]


def with_note(block: Block, note: str) -> Block:
    """The block with `note` appended to its text, or a section holding the note when it has no text."""
    if block.get("type") == "section" and isinstance(block.get("text"), dict):
        body = str(block["text"]["text"])
        room = SECTION_TEXT - len(note) - 1
        return {**block, "text": mrkdwn(f"{clip(body, room)}\n{note}")}
    return section(note)
