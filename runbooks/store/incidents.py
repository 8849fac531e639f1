"""Incidents and their checklists. An incident's changes are written with the timeline event that explains them,
in one transaction, and return the event as stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runbooks.models import ChecklistItem, Event, Incident, IncidentStatus
from runbooks.store.base import StoreBase
from runbooks.store.events import seen, write_event
from runbooks.store.tables import checklist_items, incidents, parse_ts, required_ts, row_incident, ts


@dataclass(frozen=True)
class IncidentChange:
    """What an integration decided to do to an incident seen as it is now: the timeline line, keys to merge into
    `external`, and fields to set."""

    event: Event
    merge: Mapping[str, Any] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


class IncidentStore(StoreBase):
    def create_incident(self, *, title: str, severity: str, environment: str, tier: str, opened_by: str,
                        opened_at: datetime, detected_at: datetime, external: Mapping[str, Any] | None = None,
                        external_key: str | None = None, event_text: str,
                        checklist: Callable[[str], list[ChecklistItem]] | None = None,
                        also: Callable[[str], list[Event]] | None = None) -> tuple[Incident, bool, list[Event]]:
        """Create an incident, its `incident.opened` event and its checklist (made for the new id) in one
        transaction, with any events `also` makes for the new id; return the incident, True and the stored events.
        With an `external_key` already known (a PagerDuty incident id), return the existing incident, False and no
        events."""
        with self.tx() as conn:
            if external_key is not None:
                row = conn.execute(sa.select(incidents).where(incidents.c.external_key == external_key)).first()
                if row is not None:
                    return row_incident(row), False, []
            number = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(incidents.c.number), 0))).scalar_one())
            number += 1
            inc = Incident(id=f"INC-{number}", number=number, title=title, severity=severity,
                           environment=environment, tier=tier, opened_by=opened_by, opened_at=opened_at,
                           detected_at=detected_at, external=dict(external or {}))
            conn.execute(incidents.insert().values(
                id=inc.id, number=number, title=title, severity=severity, environment=environment, tier=tier,
                status=inc.status.value, opened_by=opened_by, opened_at=ts(opened_at), detected_at=ts(detected_at),
                resolution_note="", external=inc.external, external_key=external_key))
            opened = write_event(conn, Event(
                incident_id=inc.id, at=opened_at, actor=opened_by, kind="incident.opened", text=event_text,
                data={"detected_at": ts(detected_at)}), dedupe_key=None)
            _insert_checklist(conn, checklist(inc.id) if checklist else [])
            stored = [opened] + [write_event(conn, e, dedupe_key=None) for e in (also(inc.id) if also else [])]
            return inc, True, [e for e in stored if e is not None]

    def get_incident(self, incident_id: str) -> Incident | None:
        with self.engine.connect() as conn:
            if incident_id == "latest":
                row = conn.execute(sa.select(incidents).order_by(incidents.c.number.desc()).limit(1)).first()
            else:
                row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id.upper())).first()
        return None if row is None else row_incident(row)

    def incident_by_key(self, external_key: str) -> Incident | None:
        """The incident opened for an external id (`pagerduty:Q1ABC…`), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.external_key == external_key)).first()
        return None if row is None else row_incident(row)

    def list_incidents(self, *, open_only: bool = False) -> list[Incident]:
        q = sa.select(incidents).order_by(incidents.c.number)
        if open_only:
            q = q.where(incidents.c.status != IncidentStatus.RESOLVED.value)
        with self.engine.connect() as conn:
            return [row_incident(r) for r in conn.execute(q)]

    def change_incident(self, incident_id: str, *, event: Event, dedupe_key: str | None = None,
                        merge: Mapping[str, Any] | None = None, **fields: Any) -> Event | None:
        """Set `fields` (and merge keys into `external`) and append `event`, in one transaction; return the event
        as stored. A `dedupe_key` already seen (a redelivered webhook, a repeated "restored") changes nothing and
        returns None."""
        with self.tx() as conn:
            return _change(conn, incident_id, event=event, dedupe_key=dedupe_key, fields=fields, merge=merge)

    def update_incident(self, incident_id: str, *, event: Event | None = None, dedupe_key: str | None = None,
                        **fields: Any) -> Incident:
        """Like `change_incident`, but return the incident as it now is (use `change_incident` to publish the
        event)."""
        with self.tx() as conn:
            _change(conn, incident_id, event=event, dedupe_key=dedupe_key, fields=fields)
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one()
        return row_incident(row)

    def decide_external(self, incident_id: str, *, dedupe_key: str,
                        decide: Callable[[Incident], IncidentChange]) -> Event | None:
        """Read the incident and change it in one write transaction, so `decide` sees it as it is now even when
        other replicas take deliveries about it at the same moment (write transactions are serialized: SQLite has
        one writer, and on PostgreSQL each takes the audit chain's advisory lock). A `dedupe_key` already seen
        (a redelivered webhook) changes nothing and returns None without asking `decide`."""
        with self.tx() as conn:
            if seen(conn, dedupe_key=dedupe_key):
                return None
            current = row_incident(conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one())
            change = decide(current)
            return _change(conn, incident_id, event=change.event, dedupe_key=None, fields=change.fields,
                           merge=change.merge, external=current.external, dedupe=dedupe_key)

    def apply_external(self, incident_id: str, *, event: Event, dedupe_key: str,
                       merge: Mapping[str, Any] | None = None, **fields: Any) -> Event | None:
        """An integration's update: `change_incident` with the delivery's id as `dedupe_key`."""
        return self.change_incident(incident_id, event=event, dedupe_key=dedupe_key, merge=merge, **fields)

    def merge_external(self, incident_id: str, *, key: str, value: Any) -> Incident:
        """Record a surface's or integration's reference on the incident (a Slack thread, a PagerDuty id)."""
        with self.tx() as conn:
            row = conn.execute(sa.select(incidents.c.external).where(incidents.c.id == incident_id)).first()
            if row is None:
                raise KeyError(incident_id)
            external = dict(row.external or {})
            external[key] = value
            conn.execute(incidents.update().where(incidents.c.id == incident_id).values(external=external))
            found = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one()
        return row_incident(found)

    # ----------------------------------------------------------------------------------------- checklist

    def add_checklist(self, *, items: list[ChecklistItem]) -> None:
        if items:
            with self.tx() as conn:
                _insert_checklist(conn, items)

    def shift_checklist(self, *, incident_id: str, delta: timedelta) -> None:
        """Due times are offsets from detection: when detection is corrected, they move with it."""
        items = self.checklist(incident_id=incident_id)
        with self.tx() as conn:
            for item in items:
                conn.execute(checklist_items.update().where(
                    checklist_items.c.incident_id == incident_id, checklist_items.c.item_id == item.item_id,
                ).values(due_at=ts(item.due_at + delta)))

    def checklist(self, *, incident_id: str) -> list[ChecklistItem]:
        q = sa.select(checklist_items).where(checklist_items.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(checklist_items.c.position)).all()
        return [ChecklistItem(incident_id=r.incident_id, item_id=r.item_id, phase=r.phase, text=r.text,
                              due_at=required_ts(r.due_at), done_at=parse_ts(r.done_at), done_by=r.done_by)
                for r in rows]

    def tick(self, *, incident_id: str, item_id: str, actor: str, at: datetime, event: Event) -> Event | None:
        """Tick an item once and append `event`; return the event as stored, or None if the item was already
        ticked (nothing changes)."""
        with self.tx() as conn:
            res = conn.execute(checklist_items.update().where(
                checklist_items.c.incident_id == incident_id, checklist_items.c.item_id == item_id,
                checklist_items.c.done_at.is_(None)).values(done_at=ts(at), done_by=actor))
            if res.rowcount == 0:
                return None
            return write_event(conn, event, dedupe_key=None)


def _change(conn: Connection, incident_id: str, *, event: Event | None, dedupe_key: str | None,
            fields: Mapping[str, Any], merge: Mapping[str, Any] | None = None,
            external: Mapping[str, Any] | None = None, dedupe: str | None = None) -> Event | None:
    """Set `fields` (and merge keys into `external`) and append `event`, unless its `dedupe_key` was seen.
    `external`: the incident's current `external`, already read in this transaction; `dedupe`: a key already
    checked in this transaction, written with the event."""
    if event is not None and dedupe_key is not None and seen(conn, dedupe_key=dedupe_key):
        return None
    values = {k: (ts(v) if isinstance(v, datetime) else v.value if isinstance(v, IncidentStatus) else v)
              for k, v in fields.items()}
    if merge:
        if external is None:
            external = conn.execute(sa.select(incidents.c.external).where(incidents.c.id == incident_id)).one()[0]
        values["external"] = {**dict(external or {}), **merge}
    if values:
        conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))
    return None if event is None else write_event(conn, event, dedupe_key=dedupe_key or dedupe, checked=True)


def _insert_checklist(conn: Connection, items: list[ChecklistItem]) -> None:
    if items:
        conn.execute(checklist_items.insert(), [
            {"incident_id": item.incident_id, "item_id": item.item_id, "position": pos, "phase": item.phase,
             "text": item.text, "due_at": ts(item.due_at)} for pos, item in enumerate(items)])
