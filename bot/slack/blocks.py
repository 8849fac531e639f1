"""Pure Block Kit renderers: domain objects in, JSON-ready Slack blocks out.

No I/O and no clock: the caller passes `now`, so the notifier, the listeners and the tests render the same
message for the same moment. Every renderer keeps within Slack's limits by itself (see `blocks_kit`), and
`validate_message` proves it in the tests. The code lives in `blocks_*` modules by subject; this module is the
one name the rest of drbot imports.
"""

from __future__ import annotations

from bot.slack.blocks_events import event_line, event_message, people_in
from bot.slack.blocks_incident import (
    checklist_blocks,
    checklist_text,
    header_text,
    incident_header,
    rto_text,
    tick_value,
)
from bot.slack.blocks_kit import (
    ABORT,
    APPROVE,
    CANCEL,
    CHOOSE_INCIDENT,
    MAX_BLOCKS,
    REJECT,
    RETRY,
    SKIP,
    TICK,
    button_action,
    engine_action,
    esc,
)
from bot.slack.blocks_replies import (
    CHOICE_BLOCK,
    choose_incident_blocks,
    chosen_command,
    export_summary,
    reply_blocks,
    reply_text,
)
from bot.slack.blocks_run import card_text, run_card
from bot.slack.blocks_validate import validate_message

__all__ = [
    "ABORT",
    "APPROVE",
    "CANCEL",
    "CHOICE_BLOCK",
    "CHOOSE_INCIDENT",
    "MAX_BLOCKS",
    "REJECT",
    "RETRY",
    "SKIP",
    "TICK",
    "button_action",
    "card_text",
    "checklist_blocks",
    "checklist_text",
    "choose_incident_blocks",
    "chosen_command",
    "engine_action",
    "esc",
    "event_line",
    "event_message",
    "export_summary",
    "header_text",
    "incident_header",
    "people_in",
    "reply_blocks",
    "reply_text",
    "rto_text",
    "run_card",
    "tick_value",
    "validate_message",
]
