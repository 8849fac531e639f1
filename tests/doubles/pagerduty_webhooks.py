"""Builders for PagerDuty V3 webhook deliveries, shaped like PagerDuty's documented envelope, and their signature.

Pure functions, no server: a test builds a payload, serialises it once with `body`, signs those exact bytes with
`sign` (or does both with `signed_request`) and posts them to drbot's `/pagerduty/webhook`.

Envelope (PagerDuty developer docs, webhooks/01-Overview; APIS.md §6):
    {"event": {"id", "event_type", "resource_type": "incident", "occurred_at", "agent", "client", "data"}}
`data` is the incident for most incident.* events; an `incident_note` for `incident.annotated`; an
`incident_responder` for `incident.responder.*`; a `status_update` for `incident.status_update_published`.

Signature (webhooks/04-Signatures): header `X-PagerDuty-Signature: v1=<hex>`, HMAC-SHA256 of the raw body with the
subscription secret, hex encoded; several secrets (rotation) give comma-separated `v1=` entries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

INCIDENT_EVENT_TYPES: tuple[str, ...] = (
    "incident.acknowledged", "incident.annotated", "incident.delegated", "incident.escalated",
    "incident.priority_updated", "incident.reassigned", "incident.reopened", "incident.resolved",
    "incident.responder.added", "incident.responder.replied", "incident.status_update_published",
    "incident.triggered", "incident.unacknowledged",
)
STATUS_AFTER: dict[str, str] = {
    "incident.triggered": "triggered", "incident.acknowledged": "acknowledged", "incident.resolved": "resolved",
    "incident.unacknowledged": "triggered", "incident.reopened": "triggered",
}
"""The incident's status once the event happened; other event types leave the status as the test gives it."""
SIGNATURE_HEADER = "X-PagerDuty-Signature"
API = "https://api.pagerduty.com"
WEB = "https://acme.pagerduty.com"


def iso_ms(moment: datetime) -> str:
    """PagerDuty's webhook timestamps: UTC, milliseconds, `Z` (`2020-10-02T18:45:22.169Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def user_ref(user_id: str = "PLH1HKV", name: str = "Tenex Engineer") -> dict[str, Any]:
    return {"id": user_id, "type": "user_reference", "summary": name, "self": f"{API}/users/{user_id}",
            "html_url": f"{WEB}/users/{user_id}"}


def incident(*, incident_id: str = "Q1ABCDEFGHIJKL", number: int = 42, status: str = "triggered",
             title: str = "rag-engine-prod: database corruption detected", service_id: str = "PSVC1",
             service_name: str = "rag-engine", created_at: datetime | None = None, urgency: str = "high",
             priority: str | None = "P1", incident_key: str | None = None,
             assignees: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An incident as V3 webhooks carry it in `event.data`."""
    created = created_at or datetime.now(UTC)
    return {
        "id": incident_id, "type": "incident", "self": f"{API}/incidents/{incident_id}",
        "html_url": f"{WEB}/incidents/{incident_id}", "number": number, "status": status,
        "incident_key": incident_key or uuid.uuid5(uuid.NAMESPACE_URL, incident_id).hex,
        "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "title": title,
        "service": {"id": service_id, "type": "service_reference", "summary": service_name,
                    "self": f"{API}/services/{service_id}", "html_url": f"{WEB}/services/{service_id}"},
        "assignees": list(assignees) if assignees is not None else [user_ref()],
        "escalation_policy": {"id": "PEP0001", "type": "escalation_policy_reference", "summary": "SRE on-call",
                              "self": f"{API}/escalation_policies/PEP0001",
                              "html_url": f"{WEB}/escalation_policies/PEP0001"},
        "teams": [{"id": "PTEAM01", "type": "team_reference", "summary": "SRE", "self": f"{API}/teams/PTEAM01",
                   "html_url": f"{WEB}/teams/PTEAM01"}],
        "priority": None if priority is None else {"id": f"PPRI{priority}", "type": "priority_reference",
                                                   "summary": priority, "self": f"{API}/priorities/PPRI{priority}"},
        "urgency": urgency,
        "conference_bridge": {"conference_number": "+1 555-0100,,,123#", "conference_url": "https://meet.example/dr"},
        "resolve_reason": None,
    }


def incident_ref(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": data["id"], "type": "incident_reference", "self": data["self"], "html_url": data["html_url"]}


def note(*, of: dict[str, Any], content: str = "Restore started from drbot.", note_id: str = "PNOTE01",
         author: dict[str, Any] | None = None) -> dict[str, Any]:
    """`event.data` of `incident.annotated`."""
    return {"incident": incident_ref(of), "id": note_id, "content": content, "trimmed": False,
            "type": "incident_note", "user": author or user_ref()}


def event(event_type: str, *, data: dict[str, Any] | None = None, of: dict[str, Any] | None = None,
          occurred_at: datetime | None = None, event_id: str | None = None,
          agent: dict[str, Any] | None = None, client: str | None = None) -> dict[str, Any]:
    """The whole delivery for `event_type`. `of` is the incident (default: a fresh one); `data` overrides the
    data object entirely. The incident's status follows the event (`incident.resolved` → `resolved`)."""
    if event_type not in INCIDENT_EVENT_TYPES:
        raise ValueError(f"{event_type!r} is not a V3 incident event type; use one of {INCIDENT_EVENT_TYPES}")
    base = dict(of) if of is not None else incident()
    if event_type in STATUS_AFTER:
        base["status"] = STATUS_AFTER[event_type]
    if event_type == "incident.resolved":
        base["resolve_reason"] = None
    if data is None:
        data = _data_for(event_type, base)
    return {"event": {
        "id": event_id or f"01{uuid.uuid4().hex[:24].upper()}", "event_type": event_type,
        "resource_type": "incident", "occurred_at": iso_ms(occurred_at or datetime.now(UTC)),
        "agent": agent if agent is not None else (None if event_type == "incident.triggered" else user_ref()),
        "client": {"name": client} if client else None, "data": data}}


def _data_for(event_type: str, base: dict[str, Any]) -> dict[str, Any]:
    if event_type == "incident.annotated":
        return note(of=base)
    if event_type.startswith("incident.responder."):
        return {"incident": incident_ref(base), "user": user_ref("PRESP01", "Responder"), "escalation_policy": None,
                "message": "Please help with the database restore.", "type": "incident_responder",
                "state": "joined" if event_type.endswith("replied") else "pending"}
    if event_type == "incident.status_update_published":
        return {"id": "PSTATUS1", "message": "Restoring prod-db from 12:00Z; ETA 20 minutes.",
                "sender": user_ref(), "type": "status_update", "incident": incident_ref(base)}
    return base


def body(payload: dict[str, Any]) -> bytes:
    """The exact bytes PagerDuty would send (compact JSON); sign these, not a re-serialisation."""
    return json.dumps(payload, separators=(",", ":")).encode()


def sign(body: bytes, secrets: Sequence[str]) -> str:
    """`v1=<hex>` per secret, comma-joined, as PagerDuty sends while a secret is being rotated."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def signed_request(payload: dict[str, Any], *, secrets: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one delivery, as PagerDuty's V3 webhooks send them."""
    raw = body(payload)
    return raw, {"Content-Type": "application/json", "User-Agent": "PagerDuty-Webhook/V3.0",
                 SIGNATURE_HEADER: sign(raw, secrets), "X-Webhook-Id": str(payload["event"]["id"]),
                 "X-Webhook-Subscription": "PSUB001"}
