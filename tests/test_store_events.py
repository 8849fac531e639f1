"""Writes that carry an event return it as stored, so callers publish it without reading the timeline back; and
appending to a long timeline costs what appending to a short one does.

The `store` fixture (tests/conftest.py) runs each test on SQLite and PostgreSQL, on empty tables.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runbooks.models import Approval, ChecklistItem, Decision, Event, Incident, IncidentStatus
from runbooks.store import Store
from runbooks.store.tables import events, ts

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def open_incident(store: Store) -> Incident:
    incident, *_ = store.create_incident(title="db corrupted", severity="sev1", environment="prod", tier="critical",
                                        opened_by="alice", opened_at=T0, detected_at=T0, event_text="opened")
    return incident


def note(incident_id: str, n: int, *, run_id: str | None = None, at: datetime = T0) -> Event:
    return Event(incident_id=incident_id, run_id=run_id, at=at + timedelta(seconds=n), actor="alice", kind="note",
                 text=f"note {n}")


def test_append_returns_the_event_as_stored_and_the_old_name_still_works(store: Store) -> None:
    incident = open_incident(store)
    first = store.append(note(incident.id, 1))
    second = store.append_event(note(incident.id, 2), dedupe_key="once")
    assert first is not None and second is not None and first.seq < second.seq
    assert store.events_for(incident_id=incident.id)[-2:] == [first, second]
    assert store.append(note(incident.id, 3), dedupe_key="once") is None


def test_the_returned_event_is_what_reading_it_back_gives(store: Store) -> None:
    incident = open_incident(store)
    cest = timezone(timedelta(hours=2))
    stored = store.append(Event(incident_id=incident.id, at=datetime(2026, 11, 24, 12, 0, 1, tzinfo=cest),
                                actor="alice", kind="note", text="x", data={"hosts": ("a", "b")}))
    assert stored is not None
    back = store.events_for(incident_id=incident.id)[-1]
    assert stored.model_dump() == back.model_dump()
    assert (stored.at.utcoffset(), stored.data) == (timedelta(0), {"hosts": ["a", "b"]})


def test_last_event_is_the_newest_of_the_incident_or_of_one_run(store: Store) -> None:
    incident = open_incident(store)
    assert store.last_event(incident_id="INC-404") is None
    assert store.last_event(incident_id=incident.id, run_id="R-1") is None
    store.append(note(incident.id, 1, run_id="R-1"))
    store.append(note(incident.id, 2, run_id="R-2"))
    timeline = store.events_for(incident_id=incident.id)
    assert store.last_event(incident_id=incident.id) == timeline[-1]
    assert store.last_event(incident_id=incident.id, run_id="R-1") == timeline[-2]


def test_a_late_clock_reading_never_moves_the_timeline_back(store: Store) -> None:
    incident = open_incident(store)
    later = store.append(note(incident.id, 60))
    earlier = store.append(note(incident.id, 1))  # read the clock before `later`, queued behind it for the lock
    assert later is not None and earlier is not None
    assert earlier.at == later.at == T0 + timedelta(seconds=60)
    assert [e.at for e in store.events_for(incident_id=incident.id)][-1] == later.at


def test_changing_an_incident_returns_its_event_and_a_repeat_changes_nothing(store: Store) -> None:
    incident = open_incident(store)
    restored = Event(incident_id=incident.id, at=T0, actor="drbot", kind="incident.restored", text="restored")
    stored = store.change_incident(incident.id, event=restored, dedupe_key="INC-1:restored",
                                   status=IncidentStatus.RESTORED, restored_at=T0)
    assert stored is not None and stored == store.last_event(incident_id=incident.id)
    assert store.change_incident(incident.id, event=restored, dedupe_key="INC-1:restored",
                                 status=IncidentStatus.OPEN) is None
    back = store.get_incident(incident.id)
    assert back is not None and (back.status, back.restored_at) == (IncidentStatus.RESTORED, T0)

    resolved = Event(incident_id=incident.id, at=T0, actor="alice", kind="incident.resolved", text="resolved")
    updated = store.update_incident(incident.id, event=resolved, status=IncidentStatus.RESOLVED)
    assert updated.status is IncidentStatus.RESOLVED  # the older form still returns the incident
    assert store.apply_external(incident.id, event=resolved, dedupe_key="pd:1", merge={"pd": "Q1"}) is not None
    assert store.apply_external(incident.id, event=resolved, dedupe_key="pd:1") is None


def test_a_vote_and_a_tick_return_their_events(store: Store) -> None:
    incident = open_incident(store)
    run = store.create_run(incident_id=incident.id, runbook="database-pitr", environment="prod", command="/dr x",
                           requested_by="alice", requested_at=T0, params={})
    request = store.create_request(run_id=run.id, gate="plan", option="", step_id="", plan_hash="h" * 64,
                                   requested_by="alice", requested_at=T0, expires_at=T0, required=1,
                                   approvers=("bob",), dedupe_key="k")
    vote = Approval(request_id=request.id, actor="bob", decision=Decision.APPROVE, plan_hash="h" * 64, at=T0)
    voted = store.add_vote(vote, event=note(incident.id, 1, run_id=run.id))
    assert voted is not None and voted == store.last_event(incident_id=incident.id, run_id=run.id)
    assert store.add_vote(vote, event=note(incident.id, 2, run_id=run.id)) is None

    store.add_checklist(items=[ChecklistItem(incident_id=incident.id, item_id="page", phase="detect",
                                             text="Page the on-call", due_at=T0)])
    ticked = store.tick(incident_id=incident.id, item_id="page", actor="bob", at=T0, event=note(incident.id, 3))
    assert ticked is not None and ticked == store.last_event(incident_id=incident.id)
    assert store.tick(incident_id=incident.id, item_id="page", actor="bob", at=T0, event=note(incident.id, 4)) is None


# ---------------------------------------------------------------------------------------------- cost of a long timeline


def sqlite_steps(store: Store, work: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions `work` runs: a count that grows with every row read, and does not
    depend on how busy the machine is."""
    count = 0

    def step() -> int:
        nonlocal count
        count += 1
        return 0

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.set_progress_handler(step, 1)

    def on_checkin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(None, 1)

    sa.event.listen(store.engine, "checkout", on_checkout)
    sa.event.listen(store.engine, "checkin", on_checkin)
    try:
        work()
    finally:
        sa.event.remove(store.engine, "checkout", on_checkout)
        sa.event.remove(store.engine, "checkin", on_checkin)
    return count


def test_appending_the_50000th_event_reads_no_more_than_the_100th(tmp_path: Path) -> None:
    """A day-long restore reporting progress: each append reads the incident's newest event, not its timeline."""
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    try:
        incident = open_incident(store)
        for n in range(98):
            store.append(note(incident.id, n))

        def append(n: int) -> Callable[[], object]:
            return lambda: store.append(note(incident.id, n), dedupe_key=f"progress:{n}")

        at_100 = sqlite_steps(store, append(100))
        with store.tx() as conn:  # the rest of the day, written in bulk (their audit rows do not matter here)
            conn.execute(events.insert(), [
                {"incident_id": incident.id, "run_id": None, "at": ts(T0 + timedelta(seconds=n)), "actor": "bot",
                 "kind": "note", "text": f"progress {n}", "data": {}, "dedupe_key": None}
                for n in range(101, 50_000)])
        assert len(store.events_for(incident_id=incident.id)) == 49_999
        at_50000 = sqlite_steps(store, append(50_000))
        assert at_50000 <= 1.2 * at_100, (at_100, at_50000)
        assert store.last_event(incident_id=incident.id) == store.events_for(incident_id=incident.id)[-1]
    finally:
        store.close()


def test_a_database_made_before_the_newest_event_index_gets_it(database_url: str) -> None:
    store = Store(database_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_events_incident_seq"))
    store.close()
    store = Store(database_url)
    try:
        assert "ix_events_incident_seq" in {ix["name"] for ix in sa.inspect(store.engine).get_indexes("events")}
    finally:
        store.close()


# ------------------------------------------------------------------------------- a long timeline, walked in pages


def test_the_timeline_reader_walks_every_event_in_pages_and_exports_exactly_as_the_record_does(store: Store) -> None:
    from runbooks.export import export
    from runbooks.models import SEED_TIERS, IncidentRecord
    from runbooks.store.events import EventLog

    incident = open_incident(store)
    for n in range(1, 12):
        store.append(note(incident.id, n, run_id="R-1" if n % 2 else None))
    store.append(Event(incident_id=incident.id, run_id="R-1", at=T0 + timedelta(seconds=20), actor="drbot",
                       kind="step.skipped", text="Check data: not run — no integrity settings",
                       data={"reason": "not_configured", "why": "no integrity settings", "pipe": "a|b"}))
    other = store.create_incident(title="other", severity="sev3", environment="prod", tier="critical",
                                  opened_by="bob", opened_at=T0, detected_at=T0, event_text="opened")[0]
    store.append(note(other.id, 99))

    log = EventLog(store.engine, incident_id=incident.id, page=5)  # 13 events: pages of 5, 5 and 3
    held = store.events_for(incident_id=incident.id)
    assert len(log) == 13 and [e.seq for e in log] == [e.seq for e in held]
    def fields(e: Any) -> tuple[Any, ...]:
        return e.seq, e.incident_id, e.run_id, e.at, e.actor, e.kind, e.text, e.data

    assert [fields(e) for e in log] == [fields(e) for e in held]
    assert [e.text for e in log.of_kind("step.skipped")] == ["Check data: not run — no integrity settings"]

    tier = SEED_TIERS["critical"]
    full = IncidentRecord(incident=incident, tier=tier, events=held)
    bare = IncidentRecord(incident=incident, tier=tier, events=[])
    now = T0 + timedelta(hours=1)
    for fmt in ("md", "json", "csv"):
        assert export(bare, fmt=fmt, now=now, timeline=log) == export(full, fmt=fmt, now=now), fmt
    assert "NOT DONE: Check data (R-1) did not run: no integrity settings" in export(bare, fmt="md", now=now,
                                                                                     timeline=log)
