"""Slack Web API calls for the thread notifier, and posts made exactly once under Slack's ambiguous failures.

**Exactly once.** Slack can store a message and still answer 500, or drop the connection after storing it, so
"post again" would show it twice (a run card appeared four times). Every post carries its identity in the
message's metadata, `{"event_type": "drbot_post", "event_payload": {"key": KEY}}`, KEY being
`<incident>:<event seq>` for a thread post, `card:<run id>`, `checklist:<incident>` or `header:<incident>` (the
header's payload also holds the incident's `opened` time, so an incident id reused by another database in the same
channel never matches). A post that may already be stored — after a 5xx, a dropped connection or a timeout, or
when an earlier attempt, maybe in a process that died, never recorded its ts (kind `slack.sending`) — is first
looked for: `conversations.replies` on the thread (`conversations.history` on the channel for a header) with
`include_all_metadata`. Found, its ts is recorded and nothing is posted; when Slack cannot answer the look-up
either, nothing is posted and the next attempt looks again. Only a 429 (Slack did nothing) is retried blindly.
If Slack refuses the look-up itself (e.g. `missing_scope`: it needs `channels:history`/`groups:history`), the
post is made anyway and a warning says it may show twice. Ephemerals cannot be looked up, so they are repeated
only after a 429.
"""

from __future__ import annotations

import copy
import http.client
import logging
from collections.abc import Callable
from typing import Any, Literal

from runbooks.queries import Marks

log = logging.getLogger("drbot.slack")

__all__ = ["ATTEMPTS", "POST_TYPE", "SENDING", "Poster", "error_of", "looking_client"]

ATTEMPTS = 4
POST_TYPE = "drbot_post"  # message metadata event_type of every post
SENDING = "slack.sending"  # provider_state kind: metadata keys of posts attempted at least once
LOOKUP_PAGE = 200
THREAD_PAGES = 25  # conversations.replies pages searched (a thread of 5,000 messages)
CHANNEL_PAGES = 3  # conversations.history pages searched for a header: it is among the newest

Failure = Literal["rate", "unsure", "final"]


class Poster:
    """The notifier's Web API calls: `call` retries what is safe to repeat, `post` posts once under a key."""

    def __init__(self, *, client: Any, marks: Marks, sleep: Callable[[float], None]) -> None:
        self.client = client
        self.marks = marks
        self.sleep = sleep

    def call(self, method: str, *, repeatable: bool = True, **kwargs: Any) -> Any:
        """A Web API call, retried with backoff on rate limits and, when repeating it is harmless (`chat.update`
        sets the same content again), on server errors and dropped connections. Posts go through `post`."""
        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return getattr(self.client, method)(**kwargs)
            except Exception as exc:
                failure = _failure(exc)
                if failure == "final" or (failure == "unsure" and not repeatable) or attempt == ATTEMPTS:
                    raise
                delay = self._pause(exc, delay)
        raise AssertionError("unreachable")

    def _pause(self, exc: Exception, delay: float) -> float:
        """Wait before the next attempt (Slack's `Retry-After` when it gave one); the next delay."""
        retry_after = getattr(getattr(exc, "response", None), "headers", {}).get("Retry-After")
        self.sleep(float(retry_after) if retry_after else delay)
        return min(delay * 2, 30.0)

    def post(self, key: str, *, channel: str, thread_ts: str | None, blocks: list[dict[str, Any]], text: str,
              extra: dict[str, str] | None = None) -> tuple[str, str]:
        """`chat.postMessage` exactly once under `key`: (channel id, ts) of the message Slack holds. A post that
        may already be stored is looked for before it is made again (see the module docstring)."""
        payload = {"key": key, **(extra or {})}
        unsure = not self.marks.claim_once(kind=SENDING, key=key, value={"channel": channel})
        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if unsure:
                    found = self._find(payload, channel=channel, thread_ts=thread_ts)
                    if found is not None:
                        log.warning("Slack already had %s (ts %s) from an attempt that seemed to fail: "
                                    "recorded, not posted again", key, found)
                        return channel, found
                posted = self.client.chat_postMessage(
                    channel=channel, thread_ts=thread_ts, blocks=blocks, text=text,
                    metadata={"event_type": POST_TYPE, "event_payload": payload})
                return str(posted.get("channel") or channel), str(posted["ts"])
            except Exception as exc:
                failure = _failure(exc)
                if failure == "final" or attempt == ATTEMPTS:
                    raise
                unsure = unsure or failure == "unsure"
                delay = self._pause(exc, delay)
        raise AssertionError("unreachable")

    def _find(self, payload: dict[str, str], *, channel: str, thread_ts: str | None) -> str | None:
        """The ts of the message drbot posted with this metadata payload, if Slack holds it. A look-up Slack
        cannot answer (5xx, dropped) raises, so nothing is posted; one it refuses returns None (post anyway)."""
        cursor: str | None = None
        for _ in range(THREAD_PAGES if thread_ts else CHANNEL_PAGES):
            try:
                if thread_ts:
                    page = self.client.conversations_replies(channel=channel, ts=thread_ts, cursor=cursor,
                                                             include_all_metadata=True, limit=LOOKUP_PAGE)
                else:
                    page = self.client.conversations_history(channel=channel, cursor=cursor,
                                                             include_all_metadata=True, limit=LOOKUP_PAGE)
            except Exception as exc:
                if _failure(exc) != "final":
                    raise
                log.warning("cannot look in Slack for an earlier copy of %s (%s): posting it, it may show twice",
                            payload["key"], error_of(exc))
                return None
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == POST_TYPE and metadata.get("event_payload") == payload:
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None
        return None



def _failure(exc: Exception) -> Failure:
    """`rate`: Slack did nothing (429). `unsure`: it may have done it — a 5xx, a dropped connection, a timeout.
    `final`: it answered and refused (`ok: false`), or the error is not Slack's."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 429:
        return "rate"
    if isinstance(status, int):
        return "unsure" if status >= 500 else "final"
    return "unsure" if isinstance(exc, OSError | http.client.HTTPException) else "final"


def error_of(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response.get("error")) if response is not None else type(exc).__name__
    except (AttributeError, TypeError):
        return type(exc).__name__


def looking_client(client: Any) -> Any:
    """The client without slack_sdk's default retry on a dropped connection, which sends a post again after
    Slack may have stored it: `Poster.post` looks before it posts again. (Rate-limit retries stay: a 429 stored
    nothing.) A client that is not a slack_sdk one is used as it is."""
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler

    handlers = getattr(client, "retry_handlers", None)
    if not isinstance(handlers, list) or not any(isinstance(h, ConnectionErrorRetryHandler) for h in handlers):
        return client
    clone = copy.copy(client)
    clone.retry_handlers = [h for h in handlers if not isinstance(h, ConnectionErrorRetryHandler)]
    return clone
