"""Alerts from PagerDuty: an `incident.triggered` opens a drbot incident (detected when PagerDuty created it) in
the environment and Slack channel its service is routed to; every later event becomes a timeline line and moves
the header.

Deliveries are at-least-once and unordered. So each event is applied once (keyed by its event id, in the same
transaction that writes it), the incident is keyed by PagerDuty's incident id, and any event that carries the
incident (they all do, except notes) can open it: an `acknowledged` that overtakes its `triggered` still yields
exactly one incident. A note whose incident is not known yet is parked and replayed when the incident opens. The
PagerDuty status shown is the one from the newest `occurred_at`, never the last delivery.

This module is the domain side (no HTTP, no SDK); `bot/pagerduty.py` verifies and parses webhooks into `Alert`s,
and the shell's `:page` builds one offline through the same path.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runbooks.catalog import Catalog
from runbooks.incidents import CHANNEL, Incidents
from runbooks.models import Event, EventKind, Incident, IncidentStatus
from runbooks.ports import Clock
from runbooks.redact import redact_text
from runbooks.settings import AlertRoute, EngineSettings
from runbooks.sink import EventSink
from runbooks.store import Store
from runbooks.store.incidents import IncidentChange
from runbooks.timeline import iso, parse_iso

__all__ = ["Alert", "AlertIntake", "AlertRoute", "Outcome", "describe", "pagerduty_id", "severity_of", "snapshot"]

KEY_PREFIX = "pagerduty:"  # Incident.external_key
PD = "pagerduty"  # Incident.external key: the PagerDuty snapshot shown in the header
PARKED = "pagerduty.parked"  # provider_state kind: notes that arrived before their incident
ACTOR = "PagerDuty"
PARK_FOR = timedelta(days=7)



@dataclass(frozen=True)
class Alert:
    """One PagerDuty V3 incident event, reduced to what drbot uses."""

    event_id: str
    event_type: str
    occurred_at: datetime
    incident: str
    agent: str = ""
    title: str | None = None
    service: str | None = None
    service_name: str = ""
    url: str = ""
    number: int | None = None
    status: str | None = None
    urgency: str | None = None
    priority: str | None = None
    assignees: tuple[str, ...] = ()
    created_at: datetime | None = None
    note: str = ""

    @property
    def kind(self) -> str:
        return self.event_type.removeprefix("incident.")

    @property
    def carries_incident(self) -> bool:
        return self.title is not None and self.service is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["occurred_at"] = iso(self.occurred_at)
        data["created_at"] = iso(self.created_at) if self.created_at else None
        data["assignees"] = list(self.assignees)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        values = dict(data)
        values["occurred_at"] = parse_iso(str(values["occurred_at"]))
        values["created_at"] = parse_iso(str(values["created_at"])) if values.get("created_at") else None
        values["assignees"] = tuple(values.get("assignees") or ())
        return cls(**values)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery. `status`: created, updated, duplicate, parked or ignored."""

    status: str
    incident_id: str | None = None
    message: str = ""
    events: list[Event] = field(default_factory=list)


def severity_of(alert: Alert) -> str:
    """P1 → sev1, P2 → sev2, P3 and below → sev3; without a priority, urgency decides (high → sev2, low → sev3)."""
    if alert.priority:
        digits = "".join(ch for ch in alert.priority if ch.isdigit())
        if digits:
            return "sev1" if int(digits) <= 1 else "sev2" if int(digits) == 2 else "sev3"
    return "sev3" if (alert.urgency or "").lower() == "low" else "sev2"


def snapshot(alert: Alert, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PagerDuty facts the header shows, taken from the newest event that carries the incident."""
    snap = dict(previous or {})
    snap.update(id=alert.incident, url=alert.url or snap.get("url", ""), as_of=iso(alert.occurred_at))
    for key in ("title", "status", "urgency", "priority", "number", "service", "service_name"):
        value = getattr(alert, key)
        if value not in (None, ""):
            snap[key] = value
    if alert.carries_incident:  # a full incident: what it lacks, it no longer has
        snap["assignees"] = list(alert.assignees)
        snap["priority"] = alert.priority
    return snap


def pagerduty_id(incident: Incident) -> str | None:
    snap = incident.external.get(PD)
    return str(snap["id"]) if isinstance(snap, dict) and snap.get("id") else None


def _names(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "nobody"


def describe(alert: Alert) -> str:
    """The timeline line for a PagerDuty event."""
    who = alert.agent or "PagerDuty"
    number = f"#{alert.number} " if alert.number else ""
    texts = {
        "triggered": f"PagerDuty {number}triggered: {alert.title} ({alert.urgency or 'unknown'} urgency"
                     f"{', ' + alert.priority if alert.priority else ''}; service "
                     f"{alert.service_name or alert.service}; assigned to {_names(alert.assignees)}).",
        "acknowledged": f"{who} acknowledged it in PagerDuty.",
        "unacknowledged": "PagerDuty unacknowledged it (the acknowledgement timed out); it is triggered again.",
        "resolved": f"{who} resolved it in PagerDuty.",
        "reopened": f"{who} reopened it in PagerDuty.",
        "annotated": f"{who} added a note in PagerDuty: {alert.note}",
        "priority_updated": f"{who} set the PagerDuty priority to {alert.priority or 'none'}.",
        "escalated": f"PagerDuty escalated it; now assigned to {_names(alert.assignees)}.",
        "reassigned": f"{who} reassigned it in PagerDuty to {_names(alert.assignees)}.",
        "delegated": f"{who} delegated it in PagerDuty; now assigned to {_names(alert.assignees)}.",
    }
    return texts.get(alert.kind, f"PagerDuty: {alert.kind.replace('_', ' ').replace('.', ' ')}"
                                 f"{' by ' + who if alert.agent else ''}{': ' + alert.note if alert.note else '.'}")


class AlertIntake:
    """Applies PagerDuty deliveries (see the module docstring): opens, updates and parks."""

    def __init__(self, *, store: Store, catalog: Catalog, clock: Clock, settings: EngineSettings,
                 events: EventSink, incidents: Incidents) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.events = events
        self.incidents = incidents
        self._locks = [threading.Lock() for _ in range(64)]
        """This process's deliveries of one PagerDuty incident, one at a time (other replicas' are serialized by
        the database: `Store.decide_external`)."""

    def _lock(self, pd_id: str) -> threading.Lock:
        return self._locks[zlib.crc32(pd_id.encode()) % len(self._locks)]

    def ingest(self, alert: Alert) -> Outcome:
        """Apply one delivery. Safe to call again with the same event (it changes nothing the second time)."""
        dedupe = f"pd:{alert.event_id}"
        with self._lock(alert.incident):
            incident = self.store.incident_by_key(KEY_PREFIX + alert.incident)
            created = False
            if incident is None:
                if not alert.carries_incident:
                    self._prune_parked()
                    self.store.save_state(kind=PARKED, key=f"{alert.incident}/{alert.event_id}",
                                          value=alert.to_json())
                    # Another replica may have opened the incident (and replayed what was parked then) between
                    # the look above and the park: look again, and replay it here if so (the replay is keyed by
                    # the event, so a note replayed by both is stored once).
                    opened = self.store.incident_by_key(KEY_PREFIX + alert.incident)
                    if opened is None:
                        return Outcome("parked", message=f"{alert.event_type} for {alert.incident} arrived before "
                                                         f"the incident itself; kept until it does")
                    late = self._replay_parked(opened)
                    for event in late:
                        self.events.publish(event)
                    return Outcome("updated" if late else "duplicate", incident_id=opened.id, events=late)
                route = self.settings.alert_routes.get(str(alert.service))
                if route is None:
                    return Outcome("ignored", message=f"PagerDuty service {alert.service} ({alert.service_name}) "
                                                      f"is not routed: add it under `pagerduty.services` in "
                                                      f"drbot.yml, e.g. `{alert.service}: {{channel: C0INCIDENT, "
                                                      f"environment: prod}}`")
                incident, created = self._open(alert, route)
            stored = [e for e in [self._apply(incident, alert, dedupe=dedupe)] if e is not None]
            if created:
                stored.extend(self._replay_parked(incident))
        for event in stored:
            self.events.publish(event)
        return Outcome("created" if created else "updated" if stored else "duplicate", incident_id=incident.id,
                       events=stored)

    def _open(self, alert: Alert, route: AlertRoute) -> tuple[Incident, bool]:
        env = self.settings.environment(route.environment)
        detected = alert.created_at or alert.occurred_at
        lines = [f"• {name}: {self._hint(name, env.name)}" for name in route.runbooks]

        def suggestions(incident_id: str) -> list[Event]:
            if not lines:
                return []
            return [Event(incident_id=incident_id, at=self.clock.now(), actor="drbot",
                          kind=EventKind.INCIDENT_SUGGESTED,
                          text="Suggested runbooks for this service:\n" + "\n".join(lines),
                          data={"runbooks": list(route.runbooks)})]

        incident, created = self.incidents.create(
            title=str(alert.title), severity=severity_of(alert), env=env, actor=ACTOR, detected_at=detected,
            tier=route.tier,
            external={PD: snapshot(alert), "pagerduty_url": alert.url, CHANNEL: route.channel},
            external_key=KEY_PREFIX + alert.incident, also=suggestions)
        return incident, created

    def _hint(self, runbook: str, env: str) -> str:
        found = self.catalog.runbooks.get(runbook)
        if found is None:
            return f"(not in the catalog; `/dr runbooks` lists them) `/dr run {runbook} {env}`"
        required = " ".join(f"<{p.name}>" for p in found.params if p.required)
        return f"{found.title} — `/dr run {runbook} {env}{' ' + required if required else ''}`"

    def _prune_parked(self) -> None:
        """A note whose incident never reaches drbot (its service is not routed) is kept for `PARK_FOR`."""
        cutoff = iso(self.clock.now() - PARK_FOR)
        for key, data in self.store.list_state(kind=PARKED).items():
            if str(data.get("occurred_at", "")) < cutoff:
                self.store.delete_state(kind=PARKED, key=key)

    def _replay_parked(self, incident: Incident) -> list[Event]:
        pd_id = pagerduty_id(incident) or ""
        stored: list[Event] = []
        parked = sorted(self.store.list_state(kind=PARKED, prefix=pd_id + "/").items(),
                        key=lambda kv: str(kv[1].get("occurred_at")))
        for key, data in parked:
            alert = Alert.from_json(data)
            incident = self.store.get_incident(incident.id) or incident
            event = self._apply(incident, alert, dedupe=f"pd:{alert.event_id}")
            if event is not None:
                stored.append(event)
            self.store.delete_state(kind=PARKED, key=key)
        return stored

    def _apply(self, incident: Incident, alert: Alert, *, dedupe: str) -> Event | None:
        """One event → one timeline line, the PagerDuty snapshot (if newer) and the incident's status, decided
        on the incident as it is inside the write (`Store.decide_external`): another replica may have applied a
        newer event of the same incident a moment ago."""
        active = [r.id for r in self.store.runs_for(incident_id=incident.id) if not r.status.finished] \
            if alert.kind == "resolved" else []
        now = self.clock.now()

        def decide(current: Incident) -> IncidentChange:
            found = current.external.get(PD)
            previous: dict[str, Any] = found if isinstance(found, dict) else {}
            newer = str(previous.get("as_of", "")) <= iso(alert.occurred_at)
            merge = {PD: snapshot(alert, previous)} if newer and (alert.carries_incident or alert.status) else None
            fields: dict[str, Any] = {}
            text = describe(alert)
            if newer and alert.kind == "resolved" and current.status is not IncidentStatus.RESOLVED:
                if active:
                    text += (f" {current.id} stays open while {', '.join(active)} is still running; "
                             f"`/dr incident resolve` when it is done.")
                else:
                    fields = {"status": IncidentStatus.RESOLVED, "resolved_at": now,
                              "resolution_note": f"Resolved in PagerDuty by {alert.agent or 'PagerDuty'}."}
                    if current.restored_at is None:
                        fields["restored_at"] = now
                    text += f" drbot marked {current.id} resolved."
            elif newer and alert.kind == "reopened" and current.status is IncidentStatus.RESOLVED:
                fields = {"status": IncidentStatus.RESTORED if current.restored_at else IncidentStatus.OPEN,
                          "resolved_at": None}
                text += f" drbot reopened {current.id}."
            event = Event(incident_id=current.id, at=now,
                          actor=f"{ACTOR} ({alert.agent})" if alert.agent else ACTOR,
                          kind=f"pagerduty.{alert.kind}", text=redact_text(text),
                          data={"pagerduty_event": alert.event_id, "occurred_at": iso(alert.occurred_at),
                                "pagerduty_incident": alert.incident, "stale": not newer})
            return IncidentChange(event=event, merge=merge, fields=fields)

        return self.store.decide_external(incident.id, dedupe_key=dedupe, decide=decide)
