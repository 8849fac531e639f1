"""At the door: cap, verify, then parse (STYLE rule 13).

A request body is read as bytes under a size cap and a deadline, its signature is checked on those bytes, and
only then is it decoded and parsed — JSON with a nesting limit found without recursing, so a hostile body costs
at most one capped read and one HMAC. Every refusal is a `Refused`: the HTTP status and the reason that goes to
the log (one line, never the body). Signed Slack requests are also refused when their signature was already
seen: `SeenSignatures` keeps them in the database for Slack's 5-minute window, across restarts and replicas.
The check is made where the request's work runs, not on the ack path (see `Delivery`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from starlette.requests import Request

    from runbooks.queries import Marks

__all__ = ["BODY_TIMEOUT", "DELIVERY", "MAX_BODY", "MAX_DEPTH", "SEEN_KIND", "WINDOW", "Delivery", "Refused",
           "SeenSignatures", "check_slack_body", "delivery_in", "loads", "read_body", "verify_slack"]

MAX_BODY = 1024 * 1024
"""Largest body taken at /slack/events and /pagerduty/webhook (Slack's and PagerDuty's are a few KiB)."""
BODY_TIMEOUT = 10.0
"""Seconds a client gets to send the whole body once its headers are in (Slack waits 3 s for the whole answer)."""
MAX_DEPTH = 64
"""Deepest JSON nesting accepted (Slack's block payloads nest about 10 levels)."""
WINDOW = 300
"""Slack's replay window, seconds: a request timestamped further from now is refused."""
DELIVERY = "drbot_delivery"
"""Key of the request's `Delivery` in Bolt's context (set by the HTTP route; absent in Socket Mode)."""
SEEN_KIND = "slack.seen"
"""provider_state kind: signatures of Slack requests already answered (key: the signature; value: its timestamp)."""

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class Refused(Exception):
    """A request answered with `status` and nothing done; `reason` names what was wrong (for the log)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: Request, *, limit: int | None = None, timeout: float | None = None) -> bytes:
    """The raw body, read as it streams in: 413 once it passes `limit` (MAX_BODY; at once when Content-Length
    says so, without reading any of it), 408 when it takes longer than `timeout` (BODY_TIMEOUT)."""
    import anyio
    from starlette.requests import ClientDisconnect

    limit = MAX_BODY if limit is None else limit
    timeout = BODY_TIMEOUT if timeout is None else timeout

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"Content-Length is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"the body passed the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, f"the body was not complete after {timeout:g} s ({size} bytes read)") from None
    except ClientDisconnect:
        raise Refused(400, f"the client disconnected after {size} bytes of the body") from None
    return b"".join(chunks)


def verify_slack(body: bytes, *, timestamp: str | None, signature: str | None, secret: str | None,
                 now: float | None = None) -> int:
    """The request's timestamp, once `X-Slack-Signature` is the HMAC-SHA256 of `v0:{timestamp}:{body}` (the raw
    bytes) under the signing secret and the timestamp is within 5 minutes of now; Refused(401) otherwise."""
    if not secret:
        raise Refused(401, "SLACK_SIGNING_SECRET is not set, so no Slack request over HTTP can be verified")
    if not timestamp:
        raise Refused(401, "there is no X-Slack-Request-Timestamp header")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Refused(401, "X-Slack-Request-Timestamp is not a Unix time in seconds")
    sent = int(timestamp)
    off = (time.time() if now is None else now) - sent
    if abs(off) > WINDOW:
        raise Refused(401, f"X-Slack-Request-Timestamp is {abs(off):.0f} s {'old' if off > 0 else 'ahead'} "
                           f"(Slack's window is {WINDOW} s)")
    if not signature:
        raise Refused(401, "there is no X-Slack-Signature header")
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise Refused(401, "X-Slack-Signature does not match the body")
    return sent


def loads(data: str | bytes, *, limit: int = MAX_DEPTH) -> Any:
    """`json.loads` for bytes from outside: UTF-8 only, and nesting deeper than `limit` is refused before parsing
    (ValueError), so a 50,000-deep array is never recursed into."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    _check_nesting(text, limit)
    try:
        return json.loads(text)
    except RecursionError:  # not reached after the check; kept so that no nesting can ever become a 500
        raise ValueError(f"nested deeper than {limit} levels") from None


def _check_nesting(text: str, limit: int) -> None:
    """Brackets outside strings (escapes removed first, so `\\"` does not end one) are peeled off innermost pair
    first: each pass removes at least one level, so valid JSON no deeper than `limit` is empty after `limit`
    passes. Leftovers that do not peel are brackets that do not match: not JSON at all."""
    if text.count("[") + text.count("{") <= limit:
        return
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    for _ in range(limit):
        if not brackets:
            return
        peeled = brackets.replace("[]", "").replace("{}", "")
        if peeled == brackets:
            raise ValueError("its brackets do not match")
        brackets = peeled
    if brackets:
        raise ValueError(f"nested deeper than {limit} levels")


def check_slack_body(body: bytes, *, content_type: str | None) -> str:
    """The body as text, once Bolt can parse it: Bolt parses in `BoltRequest(...)` with the same rules (JSON when
    the type says so or it starts with `{`, else a form whose `payload` field may hold JSON), and its exceptions
    there would be 500s. Refused(400) for bytes that are not UTF-8, JSON that is not an object, or is too deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(400, f"the body is not UTF-8 (byte {exc.start})") from None
    if not text:
        return text
    if (content_type or "").split(";")[0] == "application/json" or text.startswith("{"):
        _json_object(text, "the body")
    elif "payload" in text:
        payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
        if payload is not None:
            _json_object(payload, "the payload field")
    return text


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = loads(text)
    except ValueError as exc:
        reason = str(exc).split(":")[0] if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise Refused(400, f"{what} is not JSON ({reason})") from None
    if not isinstance(data, dict):
        raise Refused(400, f"{what} is JSON but not an object")
    return data


class Delivery(NamedTuple):
    """One verified Slack request, as its work carries it: a replay of the same bytes has the same signature.

    The door verifies and acks; the work (a job, possibly in another process) claims the delivery before it runs
    and does nothing if it was claimed before. So a replay is answered as the first delivery was — Slack expects
    an answer either way — and runs nothing, while the ack path never waits for a database write."""

    signature: str
    timestamp: int


def delivery_in(context: Mapping[str, Any]) -> Delivery | None:
    """The delivery a listener's Bolt context carries, for the work it submits (None in Socket Mode, whose
    envelopes are not signed and whose retries say so)."""
    found = context.get(DELIVERY)
    return found if isinstance(found, Delivery) else None


class SeenSignatures:
    """Signatures of Slack requests already answered. A replay — the same signed bytes sent again within the
    window — carries the same signature; Slack's own retries are signed anew (and handled by `drop_retries`).
    Claimed in the database (atomic across processes, kept across restarts); entries older than the window are
    pruned at most once every `prune_every` seconds, since the timestamp check refuses those anyway."""

    def __init__(self, marks: Marks, *, prune_every: float = 60.0) -> None:
        self.marks = marks
        self.prune_every = prune_every
        self._pruned = 0.0
        self._lock = threading.Lock()

    def first_time(self, delivery: Delivery) -> bool:
        """Claim `delivery`: True the first time, False for a replay (in any process, since any restart)."""
        fresh = self.marks.claim_once(kind=SEEN_KIND, key=delivery.signature, value={"at": delivery.timestamp})
        self._prune()
        return fresh

    def _prune(self) -> None:
        now = time.time()
        with self._lock:
            if now - self._pruned < self.prune_every:
                return
            self._pruned = now
        expired = now - WINDOW - 60  # from `at` + WINDOW on, the timestamp check refuses it (+1 min for clocks)
        for key, value in self.marks.list_state(kind=SEEN_KIND).items():
            if float(value.get("at", 0)) < expired:
                self.marks.delete_state(kind=SEEN_KIND, key=key)
