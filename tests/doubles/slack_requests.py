"""Requests exactly as Slack sends them to an app: slash commands, button and checkbox clicks, Events API
callbacks, all signed with the app's signing secret.

Why build the bytes by hand: drbot's HTTP surface must accept what Slack really sends (form bodies with every
field, `payload=<json>` for interactivity, JSON for events, `X-Slack-Retry-Num` on retries) and refuse what it
must refuse (bad or stale signatures). A test sends these with `post()` to a served app, so the path under test
is the one production uses. The field sets follow Slack's documented payloads
(docs.slack.dev/interactivity/implementing-slash-commands, reference/interaction-payloads/block_actions-payload,
apis/events-api).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

TEAM_ID = "T0TEAM"
TEAM_DOMAIN = "drbot-test"
API_APP_ID = "A0DRBOT"
BOT_USER_ID = "U0DRBOT"
VERIFICATION_TOKEN = "legacy-verification-token"  # Slack still sends the deprecated token; apps must not rely on it
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The two signature headers: `v0=` HMAC-SHA256 of `v0:{ts}:{body}` keyed with the signing secret.

    Pass an old `timestamp` (more than 300 s ago) to build a request Slack's verifier must reject as a replay.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def retry_headers(num: int, reason: str = "http_timeout") -> dict[str, str]:
    """What Slack adds when it re-sends an event it thinks was not acknowledged (num 1..3)."""
    return {"X-Slack-Retry-Num": str(num), "X-Slack-Retry-Reason": reason}


def slash_command(text: str, *, user_id: str, channel_id: str, user_name: str = "alice", team_id: str = TEAM_ID,
                  trigger_id: str | None = None, command: str = "/dr",
                  channel_name: str = "incident",
                  response_url: str = "https://hooks.slack.com/commands/T0TEAM/1234/abcd") -> bytes:
    """A slash command's form body, every field Slack sends. There is no thread_ts: Slack never says which
    thread a command was typed in."""
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": API_APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
    }
    return urlencode(fields).encode()


def block_action(*, action_id: str, value: str, user_id: str, channel_id: str, message_ts: str,
                 block_id: str = "b", thread_ts: str | None = None, user_name: str = "bob",
                 text: str = "Approve", style: str | None = None, team_id: str = TEAM_ID,
                 message_blocks: Sequence[Mapping[str, Any]] = (), is_ephemeral: bool = False,
                 response_url: str = "https://hooks.slack.com/actions/T0TEAM/1234/abcd",
                 trigger_id: str | None = None) -> bytes:
    """A button click (`block_actions`) as `payload=<json>`. `value` is what the button carried: a test that
    tampers with it is testing that the server does not trust it."""
    action: dict[str, Any] = {"action_id": action_id, "block_id": block_id,
                              "text": {"type": "plain_text", "text": text, "emoji": True}, "value": value,
                              "type": "button", "action_ts": _action_ts()}
    if style is not None:
        action["style"] = style
    return _interaction(action=action, user_id=user_id, user_name=user_name, team_id=team_id,
                        channel_id=channel_id, message_ts=message_ts, thread_ts=thread_ts,
                        message_blocks=message_blocks, is_ephemeral=is_ephemeral, response_url=response_url,
                        trigger_id=trigger_id or _trigger_id())


def checkbox_action(*, action_id: str, values: Sequence[str | tuple[str, str]], user_id: str, channel_id: str,
                    message_ts: str, block_id: str = "b", thread_ts: str | None = None, user_name: str = "bob",
                    team_id: str = TEAM_ID, message_blocks: Sequence[Mapping[str, Any]] = (),
                    response_url: str = "https://hooks.slack.com/actions/T0TEAM/1234/abcd",
                    trigger_id: str | None = None) -> bytes:
    """A checkboxes change. Slack sends *every* option now ticked (not the one clicked), so un-ticking is a
    payload without it. `values` holds option values or (value, label) pairs."""
    options = [{"text": {"type": "mrkdwn", "text": item if isinstance(item, str) else item[1], "verbatim": False},
                "value": item if isinstance(item, str) else item[0]} for item in values]
    action = {"type": "checkboxes", "action_id": action_id, "block_id": block_id, "selected_options": options,
              "action_ts": _action_ts()}
    return _interaction(action=action, user_id=user_id, user_name=user_name, team_id=team_id,
                        channel_id=channel_id, message_ts=message_ts, thread_ts=thread_ts,
                        message_blocks=message_blocks, is_ephemeral=False, response_url=response_url,
                        trigger_id=trigger_id or _trigger_id())


def event_callback(event: Mapping[str, Any], *, event_id: str, team_id: str = TEAM_ID,
                   event_time: int | None = None) -> bytes:
    """An Events API envelope (JSON). Dedupe on `event_id`: Slack re-sends the same id on retries."""
    envelope = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": API_APP_ID,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": BOT_USER_ID, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
        "event_context": f"4-{event_id}",
    }
    return json.dumps(envelope).encode()


def app_mention(text: str, *, user_id: str, channel_id: str, ts: str, thread_ts: str | None = None) -> dict[str, Any]:
    """The `event` of an app_mention (wrap it with `event_callback`)."""
    event: dict[str, Any] = {"type": "app_mention", "user": user_id, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
                             "channel": channel_id, "event_ts": ts, "team": TEAM_ID,
                             "client_msg_id": f"msg-{ts}"}
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def url_verification(challenge: str) -> bytes:
    """The handshake Slack sends when a Request URL is saved; the app must echo the challenge."""
    return json.dumps({"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}).encode()


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float = 10) -> tuple[int, str, dict[str, str]]:
    """POST like Slack does and return (status, body, lower-cased headers) for every status, 4xx/5xx included.
    Content-Type is inferred from the body (JSON for events, form otherwise) unless given."""
    sent = {"User-Agent": USER_AGENT, **headers}
    if not any(k.lower() == "content-type" for k in sent):
        sent["Content-Type"] = JSON if body.lstrip().startswith(b"{") else FORM
    request = urllib.request.Request(url, data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8"), _lower(response.headers.items())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8"), _lower(exc.headers.items())


def send(url: str, body: bytes, *, secret: str, timestamp: int | None = None,
         retry: int | None = None) -> tuple[int, str, dict[str, str]]:
    """Sign and post in one step; `retry=n` adds Slack's retry headers."""
    headers = sign(body, secret, timestamp=timestamp)
    if retry is not None:
        headers.update(retry_headers(retry))
    return post(url, body, headers)


def _interaction(*, action: dict[str, Any], user_id: str, user_name: str, team_id: str, channel_id: str,
                 message_ts: str, thread_ts: str | None, message_blocks: Sequence[Mapping[str, Any]],
                 is_ephemeral: bool, response_url: str, trigger_id: str) -> bytes:
    container: dict[str, Any] = {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                                 "is_ephemeral": is_ephemeral}
    message: dict[str, Any] = {"type": "message", "subtype": "bot_message", "user": BOT_USER_ID,
                               "bot_id": "B0DRBOT", "ts": message_ts, "text": "",
                               "blocks": [dict(b) for b in message_blocks]}
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
        message["thread_ts"] = thread_ts
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "incident"},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    if is_ephemeral:
        del payload["message"]  # Slack does not echo an ephemeral message back
    return urlencode({"payload": json.dumps(payload)}).encode()


def _action_ts() -> str:
    return f"{time.time():.6f}"


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


_triggers = itertools.count(1)


def _trigger_id() -> str:
    """A fresh trigger id per request, as Slack sends: identical signed bytes are a replay, which drbot refuses."""
    return f"13345224609.738474920.{next(_triggers):031x}"
