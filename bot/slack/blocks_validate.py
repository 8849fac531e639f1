"""Check a message against Slack's Block Kit limits before it is sent.

slack_sdk validates a block but not what is inside an actions block, not the 50-block limit and not that
action ids are unique, and Slack answers any of those with `invalid_blocks` for the whole message. Tests run
every renderer's output through `validate_message`, so a limit is found by a test rather than by an approver
staring at a card without buttons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block, BlockElement, ConfirmObject, Option

from bot.slack.blocks_kit import CHECKBOX_OPTIONS, FIELD_TEXT, MAX_BLOCKS, OPTION_TEXT, SECTION_TEXT

_ELEMENT_HOLDERS = ("elements", "accessory", "element")


def validate_message(blocks: Sequence[Mapping[str, Any]]) -> None:
    """Raise ValueError naming the first block or element Slack would refuse, and the limit it breaks."""
    if len(blocks) > MAX_BLOCKS:
        raise ValueError(f"the message has {len(blocks)} blocks; Slack allows at most {MAX_BLOCKS} per message")
    action_ids: dict[str, str] = {}
    block_ids: dict[str, str] = {}
    for index, raw in enumerate(blocks):
        where = f"block {index} ({raw.get('type')!r})"
        _validate_block(raw, where)
        block_id = raw.get("block_id")
        if block_id is not None:
            if block_id in block_ids:
                raise ValueError(f"{where}: block_id {block_id!r} is already used by {block_ids[block_id]}; "
                                 f"block ids must be unique within a message")
            block_ids[str(block_id)] = where
        for n, element in enumerate(_elements(raw)):
            spot = f"{where}, element {n} ({element.get('type')!r})"
            if raw.get("type") != "context":
                _validate_element(element, spot)
            action_id = element.get("action_id")
            if action_id is not None:
                if action_id in action_ids:
                    raise ValueError(f"{spot}: action_id {action_id!r} is already used by {action_ids[action_id]}; "
                                     f"action ids must be unique within a message (add a `:suffix`)")
                action_ids[str(action_id)] = spot


def _validate_block(raw: Mapping[str, Any], where: str) -> None:
    try:
        parsed = Block.parse(dict(raw))
    except (TypeError, ValueError, KeyError, AttributeError, SlackObjectFormationError) as exc:
        raise ValueError(f"{where} is malformed: {exc}") from exc
    if parsed is None:
        raise ValueError(f"{where} is not a Block Kit block: it needs a known `type` (section, actions, context, …)")
    _run(parsed.validate_json, where)
    if raw.get("type") == "section":
        text = raw.get("text")
        if isinstance(text, Mapping) and len(str(text.get("text", ""))) > SECTION_TEXT:
            raise ValueError(f"{where}: section text is {len(str(text['text']))} characters; "
                             f"Slack allows at most {SECTION_TEXT}")
        for n, field in enumerate(raw.get("fields") or []):
            if len(str(field.get("text", ""))) > FIELD_TEXT:
                raise ValueError(f"{where}: field {n} is {len(str(field['text']))} characters; "
                                 f"Slack allows at most {FIELD_TEXT}")


def _elements(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    for key in _ELEMENT_HOLDERS:
        value = raw.get(key)
        if isinstance(value, Mapping):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, Mapping))
    return found


def _validate_element(element: Mapping[str, Any], where: str) -> None:
    try:
        parsed = BlockElement.parse(dict(element))
    except (TypeError, ValueError, KeyError, AttributeError, SlackObjectFormationError) as exc:
        raise ValueError(f"{where} is malformed: {exc}") from exc
    if parsed is None:
        raise ValueError(f"{where} is not a Block Kit element: it needs a known `type` (button, checkboxes, …)")
    _run(parsed.validate_json, where)
    confirm = element.get("confirm")
    if confirm is not None:
        try:
            dialog = ConfirmObject.parse(dict(confirm))
        except (TypeError, ValueError, KeyError, AttributeError, SlackObjectFormationError) as exc:
            raise ValueError(f"{where}: confirm dialog is malformed: {exc}") from exc
        if dialog is not None:
            _run(dialog.validate_json, f"{where}, confirm dialog")
    options = list(element.get("options") or [])
    if element.get("type") in ("checkboxes", "radio_buttons") and len(options) > CHECKBOX_OPTIONS:
        raise ValueError(f"{where}: {len(options)} options; Slack allows at most {CHECKBOX_OPTIONS} per "
                         f"{element.get('type')} element (split them across elements)")
    values: set[str] = set()
    for n, option in enumerate(options):
        _validate_option(option, f"{where}, option {n}")
        values.add(str(option.get("value")))
    for n, chosen in enumerate(element.get("initial_options") or []):
        if str(chosen.get("value")) not in values:
            raise ValueError(f"{where}: initial option {n} ({chosen.get('value')!r}) is not one of the options")
        if chosen not in options:
            raise ValueError(f"{where}: initial option {n} ({chosen.get('value')!r}) must be identical to its "
                             f"option (same text and description)")


def _validate_option(option: Mapping[str, Any], where: str) -> None:
    try:
        parsed = Option(**dict(option))
    except (TypeError, ValueError, KeyError, AttributeError, SlackObjectFormationError) as exc:
        raise ValueError(f"{where} is malformed: {exc}") from exc
    _run(parsed.validate_json, where)
    description = option.get("description")
    if isinstance(description, Mapping) and len(str(description.get("text", ""))) > OPTION_TEXT:
        raise ValueError(f"{where}: description is {len(str(description['text']))} characters; "
                         f"Slack allows at most {OPTION_TEXT}")


def _run(check: Callable[[], object], where: str) -> None:
    try:
        check()
    except SlackObjectFormationError as exc:
        raise ValueError(f"{where}: {exc}") from exc
