"""The timeline: each incident's events, numbered by a global `seq`, each written with its audit row.

Writes elsewhere in the store that carry an event (an incident update, a vote, a checklist tick) call
`write_event` inside their own transaction and return what it stored, so a caller publishes the stored event
instead of reading the timeline back. Appending costs the same for an incident's 50,000th event as for its 100th:
nothing here reads more than the newest event.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runbooks.models import Event
from runbooks.store.audit import AuditStore, write_audit
from runbooks.store.tables import EVENT_COLUMNS, event_data, events, required_ts, row_event, ts


def write_event(conn: Connection, event: Event, *, dedupe_key: str | None, checked: bool = False) -> Event | None:
    """Store `event` and its audit row in the caller's write transaction; return it with its `seq`, or None when
    `dedupe_key` was already seen. `checked`: the caller already looked for `dedupe_key` in this transaction."""
    if dedupe_key is not None and not checked and seen(conn, dedupe_key=dedupe_key):
        return None
    # Steps running in parallel read the clock before they queue for the write lock, so two events can arrive a
    # few milliseconds out of order; the timeline stays monotonic by never stepping back in time. Because every
    # event is written here, the newest one carries the incident's latest time.
    at = ts(event.at)  # refuses a naive time before anything is written
    last = conn.execute(_newest(events.c.at, incident_id=event.incident_id)).scalar()
    if last is not None and at < last:
        at = last
    result = conn.execute(events.insert(), {
        "incident_id": event.incident_id, "run_id": event.run_id, "at": at, "actor": event.actor,
        "kind": event.kind, "text": event.text, "data": event.data, "dedupe_key": dedupe_key})
    seq = int(result.inserted_primary_key[0])  # type: ignore[index]
    payload = json.dumps({"event": seq, "incident": event.incident_id, "run": event.run_id, "kind": event.kind,
                          "text": event.text, "data": event.data}, sort_keys=True, default=str)
    write_audit(conn, at=at, actor=event.actor, action=event.kind,
                subject=event.run_id or event.incident_id, data=payload)
    # Exactly what reading it back would give (UTC time, JSON data), so a caller can publish it instead.
    return event.model_copy(update={"seq": seq, "at": required_ts(at), "data": json.loads(json.dumps(event.data))})


def seen(conn: Connection, *, dedupe_key: str) -> bool:
    return conn.execute(sa.select(events.c.seq).where(events.c.dedupe_key == dedupe_key)).first() is not None


def _newest(*columns: Any, incident_id: str, run_id: str | None = None) -> sa.Select[Any]:
    """The newest event of an incident (or of one of its runs): one step down the (incident_id, seq) index."""
    q = sa.select(*columns).where(events.c.incident_id == incident_id)
    if run_id is not None:
        q = q.where(events.c.run_id == run_id)
    return q.order_by(events.c.seq.desc()).limit(1)


class EventRow:
    """One stored event, as a long timeline is read: a few slots instead of an `Event` (a tenth of the cost),
    its `data` parsed only when asked for (the Markdown and CSV exports never ask)."""

    __slots__ = ("_data", "actor", "at", "incident_id", "kind", "run_id", "seq", "text")

    def __init__(self, row: Sequence[Any]) -> None:
        seq, incident_id, run_id, at, actor, kind, text, data = row
        self.seq: int = seq
        self.incident_id: str = sys.intern(incident_id)
        self.run_id: str | None = sys.intern(run_id) if run_id else None
        self.at: datetime = required_ts(at)
        self.actor: str = sys.intern(actor)
        self.kind: str = sys.intern(kind)
        self.text: str = text
        self._data: Any = data

    @property
    def data(self) -> dict[str, Any]:
        if not isinstance(self._data, dict):
            self._data = event_data(self._data)
        return self._data


class EventLog:
    """An incident's events in append order, read `page` rows at a time each time it is iterated: an export
    walks a 100,000-event incident without holding it (see `runbooks.export.Timeline`)."""

    def __init__(self, engine: sa.Engine, *, incident_id: str, page: int = 2000) -> None:
        self.engine = engine
        self.incident_id = incident_id
        self.page = page

    def __iter__(self) -> Iterator[EventRow]:
        after = 0
        while True:
            q = (sa.select(*EVENT_COLUMNS).where(events.c.incident_id == self.incident_id, events.c.seq > after)
                 .order_by(events.c.seq).limit(self.page))
            with self.engine.connect() as conn:
                rows = [EventRow(r) for r in conn.execute(q)]
            yield from rows
            if len(rows) < self.page:
                return
            after = rows[-1].seq

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events)
                                    .where(events.c.incident_id == self.incident_id)).scalar_one())

    def of_kind(self, kind: str) -> list[EventRow]:
        q = (sa.select(*EVENT_COLUMNS).where(events.c.incident_id == self.incident_id, events.c.kind == kind)
             .order_by(events.c.seq))
        with self.engine.connect() as conn:
            return [EventRow(r) for r in conn.execute(q)]


class EventStore(AuditStore):
    def append(self, event: Event, *, dedupe_key: str | None = None) -> Event | None:
        """Store an event and its audit row; return it as stored (with its `seq`, and its time never before the
        incident's previous event). With a `dedupe_key` already seen, store nothing and return None (a step re-run
        after a crash must not write its line twice)."""
        with self.tx() as conn:
            return write_event(conn, event, dedupe_key=dedupe_key)

    def append_event(self, event: Event, *, dedupe_key: str | None = None) -> Event | None:
        """The older name of `append`."""
        return self.append(event, dedupe_key=dedupe_key)

    def last_event(self, *, incident_id: str, run_id: str | None = None) -> Event | None:
        """The incident's (or one of its runs') newest event, without reading the rest of its timeline."""
        with self.engine.connect() as conn:
            row = conn.execute(_newest(*EVENT_COLUMNS, incident_id=incident_id, run_id=run_id)).first()
        return None if row is None else row_event(row)

    def events_for(self, *, incident_id: str, run_id: str | None = None, after_seq: int = 0) -> list[Event]:
        q = sa.select(*EVENT_COLUMNS).where(events.c.incident_id == incident_id, events.c.seq > after_seq)
        if run_id is not None:
            q = q.where(events.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [row_event(r) for r in conn.execute(q.order_by(events.c.seq))]

    def timeline(self, *, incident_id: str) -> EventLog:
        """The incident's events, read a page at a time whenever they are walked (exports of long incidents)."""
        return EventLog(self.engine, incident_id=incident_id)

    def events_after(self, *, after_seq: int, limit: int = 500) -> list[Event]:
        """Every incident's events after `after_seq`, oldest first: an outbox for integrations that mirror them."""
        q = sa.select(*EVENT_COLUMNS).where(events.c.seq > after_seq).order_by(events.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [row_event(r) for r in conn.execute(q)]

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))).scalar_one())

    def has_event(self, *, dedupe_key: str) -> bool:
        with self.engine.connect() as conn:
            return seen(conn, dedupe_key=dedupe_key)
