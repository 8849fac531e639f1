"""PagerDuty V3 webhooks: verify the signature, parse the envelope, hand the event to `runbooks.alerts`.

Answers: 401 when no configured secret signed the exact body (nothing is parsed, nothing stored); 400 for a body
that is not a V3 envelope, or not JSON, or JSON nested deeper than `bot.door.MAX_DEPTH` (refused before parsing,
never recursed into); 202 for everything accepted — including event types drbot does not act on
(`service.*`, future types) and services not routed in drbot.yml, which are logged and counted, not failed, so
PagerDuty does not retry them forever.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.door import loads
from runbooks.alerts import Alert, Outcome
from runbooks.engine import Engine
from runbooks.timeline import parse_iso

log = logging.getLogger("drbot.pagerduty")

SIGNATURE_HEADER = "x-pagerduty-signature"


class BadPayload(ValueError):
    """The body is not a PagerDuty V3 webhook envelope; the message says what is missing."""


def secrets_from(value: str | None) -> list[str]:
    """`PAGERDUTY_WEBHOOK_SECRETS` is comma-separated so a new secret can be added before the old one goes."""
    return [s.strip() for s in (value or "").split(",") if s.strip()]


def sign(body: bytes, secret: str) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True if any `v1=` signature in the header is the HMAC-SHA256 of the raw body under any secret.
    Every pair is compared in constant time."""
    if not header or not secrets:
        return False
    offered = [part.strip() for part in header.split(",") if part.strip().startswith("v1=")]
    matched = False
    for secret in secrets:
        expected = sign(body, secret)
        for candidate in offered:
            matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    return matched


def _ref_name(ref: Any) -> str:
    if isinstance(ref, Mapping):
        return str(ref.get("summary") or ref.get("name") or ref.get("email") or ref.get("id") or "")
    return ""


def parse(body: bytes) -> Alert | None:
    """The `Alert` for an `incident.*` event, None for event types drbot ignores; BadPayload if malformed.
    Call it on a verified body only (`PagerDutyWebhook.handle` verifies first)."""
    try:
        envelope = loads(body)
    except ValueError as exc:  # not UTF-8, not JSON, or nested too deep
        raise BadPayload(f"the body is not JSON ({exc})") from exc
    event = envelope.get("event") if isinstance(envelope, dict) else None
    if not isinstance(event, dict):
        raise BadPayload('expected a V3 envelope: {"event": {"id", "event_type", "occurred_at", "data"}}')
    missing = [k for k in ("id", "event_type", "occurred_at", "data") if not event.get(k)]
    if missing:
        raise BadPayload("the event has no " + ", ".join(missing))
    event_type = str(event["event_type"])
    if not event_type.startswith("incident."):
        return None
    data = event["data"]
    if not isinstance(data, dict):
        raise BadPayload("event.data must be an object")
    try:
        occurred = parse_iso(str(event["occurred_at"]))
    except ValueError as exc:
        raise BadPayload(f"event.occurred_at is not an ISO-8601 time: {event['occurred_at']!r}") from exc
    agent = _ref_name(event.get("agent"))
    if data.get("type", "incident") != "incident":
        # A note, a responder request, a status update…: about an incident, referenced as data.incident. A type
        # without that reference is one drbot has no use for (PagerDuty adds types; they must not bounce).
        ref = data.get("incident")
        if not isinstance(ref, Mapping) or not ref.get("id"):
            return None
        text = data.get("content") or data.get("message") or ""
        return Alert(event_id=str(event["id"]), event_type=event_type, occurred_at=occurred, incident=str(ref["id"]),
                     agent=agent, url=str(ref.get("html_url") or ""), note=str(text))
    if not data.get("id"):
        raise BadPayload("event.data.id (the PagerDuty incident id) is missing")
    found = data.get("service")
    service: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    created = data.get("created_at")
    try:
        created_at = parse_iso(str(created)) if created else None
    except ValueError as exc:
        raise BadPayload(f"data.created_at is not an ISO-8601 time: {created!r}") from exc
    assignees = tuple(_ref_name(a.get("assignee", a)) for a in data.get("assignees") or [] if isinstance(a, Mapping))
    return Alert(event_id=str(event["id"]), event_type=event_type, occurred_at=occurred, incident=str(data["id"]),
                 agent=agent, title=str(data["title"]) if data.get("title") else None,
                 service=str(service["id"]) if service.get("id") else None, service_name=_ref_name(service),
                 url=str(data.get("html_url") or ""), number=int(data["number"]) if data.get("number") else None,
                 status=str(data["status"]) if data.get("status") else None,
                 urgency=str(data["urgency"]) if data.get("urgency") else None,
                 priority=_ref_name(data.get("priority")) or None, assignees=tuple(a for a in assignees if a),
                 created_at=created_at)


@dataclass
class WebhookResult:
    status: int
    body: dict[str, Any]


class PagerDutyWebhook:
    """The route's logic, independent of the web framework (the shell's `:page` calls `deliver` directly)."""

    def __init__(self, *, engine: Engine, secrets: Sequence[str]) -> None:
        self.engine = engine
        self.secrets = list(secrets)
        self.counts: dict[str, int] = {}

    def handle(self, *, body: bytes, signature: str | None) -> WebhookResult:
        if not self.secrets:
            return WebhookResult(401, {"error": "PAGERDUTY_WEBHOOK_SECRETS is not set, so no webhook can be "
                                                "verified; set it to the subscription's secret"})
        if not verify(body, signature, self.secrets):
            self._count("forged")
            return WebhookResult(401, {"error": "signature does not match any configured secret"})
        return self.deliver(body)

    def deliver(self, body: bytes) -> WebhookResult:
        """A verified body: parse and apply it."""
        try:
            alert = parse(body)
        except BadPayload as exc:
            self._count("malformed")
            return WebhookResult(400, {"error": f"not a PagerDuty V3 webhook: {exc}"})
        if alert is None:
            self._count("ignored")
            return WebhookResult(202, {"status": "ignored", "reason": "drbot only acts on incident.* events"})
        outcome: Outcome = self.engine.ingest(alert)
        self._count(outcome.status)
        if outcome.status == "ignored":
            log.warning("pagerduty %s %s: %s", alert.event_type, alert.incident, outcome.message)
        return WebhookResult(202, {"status": outcome.status, "incident": outcome.incident_id,
                                   "message": outcome.message})

    def _count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


def simulated_page(*, title: str, service: str, service_name: str = "", urgency: str = "high",
                   now: datetime | None = None) -> bytes:
    """A V3 `incident.triggered` body as PagerDuty would send it, for `:page` in the shell (offline)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pd_id = "Q" + uuid.uuid4().hex[:13].upper()
    return json.dumps({"event": {
        "id": str(uuid.uuid4()), "event_type": "incident.triggered", "resource_type": "incident",
        "occurred_at": moment, "agent": None, "client": {"name": "drbot shell"},
        "data": {"id": pd_id, "type": "incident", "self": f"https://api.pagerduty.com/incidents/{pd_id}",
                 "html_url": f"https://sandbox.pagerduty.com/incidents/{pd_id}", "number": 1,
                 "status": "triggered", "incident_key": uuid.uuid4().hex, "created_at": moment, "title": title,
                 "service": {"id": service, "type": "service_reference", "summary": service_name or service},
                 "assignees": [], "escalation_policy": None, "teams": [], "priority": None, "urgency": urgency,
                 "conference_bridge": None, "resolve_reason": None}}}).encode()
