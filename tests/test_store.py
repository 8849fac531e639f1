"""The store on SQLite and PostgreSQL: numbering, idempotency, once-only writes under concurrency, UTC times,
and an audit chain that names the first row someone edited, deleted or re-linked.

Every test runs twice through the parametrized `store` fixture (tests/conftest.py), each on empty tables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from runbooks.models import Approval, ChecklistItem, Decision, Event, Incident
from runbooks.store import GENESIS, Store, audit_hash

T = TypeVar("T")

T0 = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))


def open_incident(store: Store, *, title: str = "db corrupted", external_key: str | None = None) -> Incident:
    incident, *_ = store.create_incident(title=title, severity="sev1", environment="prod", tier="critical",
                                        opened_by="alice", opened_at=T0, detected_at=T0 - timedelta(minutes=5),
                                        external_key=external_key, event_text=f"alice opened {title}")
    return incident


def event(incident_id: str, n: int, *, actor: str = "alice", at: datetime = T0) -> Event:
    return Event(incident_id=incident_id, at=at + timedelta(seconds=n), actor=actor, kind="note",
                 text=f"note {n}", data={"n": n})


def make_request(store: Store, *, dedupe_key: str = "R-1:plan:1") -> tuple[str, str]:
    """An incident, a run and an approval request on it; returns (incident id, request id)."""
    incident = open_incident(store)
    run = store.create_run(incident_id=incident.id, runbook="database-pitr", environment="prod",
                           command="/dr restore database prod 10:00Z", requested_by="alice", requested_at=T0,
                           params={"time": T0})
    request = store.create_request(run_id=run.id, gate="plan", option="", step_id="restore", plan_hash="h" * 64,
                                   requested_by="alice", requested_at=T0, expires_at=T0 + timedelta(minutes=30),
                                   required=1, approvers=("bob", "carol"), dedupe_key=dedupe_key)
    return incident.id, request.id


def vote(request_id: str, actor: str) -> Approval:
    return Approval(request_id=request_id, actor=actor, decision=Decision.APPROVE, plan_hash="h" * 64, at=T0)


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(i)` in `count` threads released at the same moment; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]


def raw(store: Store, sql: str, **params: Any) -> None:
    """Tamper with the database the way someone with a SQL prompt would, bypassing the Store."""
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


# ------------------------------------------------------------------------------------------------- incidents


def test_incidents_are_numbered_in_order(store: Store) -> None:
    first, second = open_incident(store, title="one"), open_incident(store, title="two")
    assert (first.id, second.id) == ("INC-1", "INC-2")
    assert [i.id for i in store.list_incidents()] == ["INC-1", "INC-2"]
    latest = store.get_incident("latest")
    assert latest is not None and latest.title == "two"
    lower = store.get_incident("inc-1")
    assert lower is not None and lower.title == "one"


def test_create_incident_is_idempotent_on_external_key(store: Store) -> None:
    first = open_incident(store, title="PD alert", external_key="PD-Q1ABC")
    again, created, _ = store.create_incident(title="PD alert (redelivered)", severity="sev1", environment="prod",
                                           tier="critical", opened_by="pagerduty", opened_at=T0, detected_at=T0,
                                           external_key="PD-Q1ABC", event_text="redelivered")
    assert created is False
    assert again == first
    assert [i.id for i in store.list_incidents()] == ["INC-1"]
    assert [e.kind for e in store.events_for(incident_id="INC-1")] == ["incident.opened"]
    other = open_incident(store, external_key="PD-OTHER")
    assert other.id == "INC-2"


# ------------------------------------------------------------------------------------------------- events


def test_events_get_increasing_seq_and_dedupe_keys_store_nothing_twice(store: Store) -> None:
    incident = open_incident(store)
    stored = [store.append_event(event(incident.id, n), dedupe_key=f"step:{n}") for n in range(5)]
    seqs = [e.seq for e in stored if e is not None]
    assert len(seqs) == 5 and seqs == sorted(seqs) and len(set(seqs)) == 5
    rows_before = store.verify_audit()[0]

    assert store.append_event(event(incident.id, 99), dedupe_key="step:2") is None

    timeline = store.events_for(incident_id=incident.id)
    assert [e.text for e in timeline] == ["alice opened db corrupted", *(f"note {n}" for n in range(5))]
    assert [e.seq for e in timeline][1:] == seqs
    assert store.verify_audit() == (rows_before, None)  # no audit row for the refused duplicate either
    assert store.has_event(dedupe_key="step:2") and not store.has_event(dedupe_key="step:99")
    assert [e.text for e in store.events_for(incident_id=incident.id, after_seq=seqs[2])] == ["note 3", "note 4"]


def test_times_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    local = datetime(2026, 11, 24, 12, 0, 0, 654321, tzinfo=CEST)  # 10:00:00.654321Z
    incident, *_ = store.create_incident(title="t", severity="sev2", environment="prod", tier="standard",
                                        opened_by="alice", opened_at=local, detected_at=local, event_text="t")
    back = store.get_incident(incident.id)
    assert back is not None
    for value in (back.opened_at, back.detected_at, store.events_for(incident_id=incident.id)[0].at):
        assert value == local
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert value.isoformat() == "2026-11-24T10:00:00.654321+00:00"


def test_naive_times_are_refused(store: Store) -> None:
    incident = open_incident(store)
    naive = Event(incident_id=incident.id, at=datetime(2026, 11, 24, 10, 0), actor="alice", kind="note", text="x")
    with pytest.raises(ValueError, match="naive datetime"):
        store.append_event(naive)
    assert len(store.events_for(incident_id=incident.id)) == 1


# ------------------------------------------------------------------------------------------------- approvals


def test_create_request_is_idempotent_on_dedupe_key(store: Store) -> None:
    _, request_id = make_request(store, dedupe_key="R-1:plan:1")
    again = store.create_request(run_id="R-1", gate="plan", option="", step_id="restore", plan_hash="x" * 64,
                                 requested_by="alice", requested_at=T0 + timedelta(minutes=1),
                                 expires_at=T0 + timedelta(hours=1), required=2, approvers=("dave",),
                                 dedupe_key="R-1:plan:1")
    assert again.id == request_id == "AR-1"
    assert (again.plan_hash, again.required, again.approvers) == ("h" * 64, 1, ("bob", "carol"))
    assert again.expires_at == T0 + timedelta(minutes=30)
    assert [r.id for r in store.requests_for(run_id="R-1")] == ["AR-1"]
    fresh = store.create_request(run_id="R-1", gate="decision", option="retry", step_id="restore",
                                 plan_hash="h" * 64, requested_by="alice", requested_at=T0, expires_at=T0,
                                 required=1, approvers=("bob",), dedupe_key="R-1:decision:1")
    assert fresh.id == "AR-2"


def test_a_second_vote_by_the_same_person_is_refused(store: Store) -> None:
    incident_id, request_id = make_request(store)
    stored = store.add_vote(vote(request_id, "bob"), event=event(incident_id, 1, actor="bob"))
    assert stored is not None and stored == store.events_for(incident_id=incident_id)[-1]
    rows = store.verify_audit()[0]
    assert store.add_vote(vote(request_id, "bob"), event=event(incident_id, 2, actor="bob")) is None
    assert [v.actor for v in store.votes(request_id=request_id)] == ["bob"]
    assert store.verify_audit() == (rows, None)  # the refused vote's event was rolled back with it
    assert store.add_vote(vote(request_id, "carol"), event=event(incident_id, 3, actor="carol")) is not None
    assert [v.actor for v in store.votes(incident_id=incident_id)] == ["bob", "carol"]


def test_ten_people_voting_at_once_each_land_exactly_once(store: Store) -> None:
    incident_id, request_id = make_request(store)
    people = [f"U{i:02d}" for i in range(10)]
    results = in_threads(10, lambda i: store.add_vote(vote(request_id, people[i]),
                                                      event=event(incident_id, i, actor=people[i])))
    assert [stored is not None for stored in results] == [True] * 10
    assert sorted(v.actor for v in store.votes(request_id=request_id)) == people
    assert store.verify_audit()[1] is None


def test_one_person_double_clicking_from_ten_threads_lands_once(store: Store) -> None:
    incident_id, request_id = make_request(store)
    results = in_threads(10, lambda i: store.add_vote(vote(request_id, "bob"), event=event(incident_id, i)))
    assert sorted(stored is not None for stored in results) == [False] * 9 + [True]
    assert [v.actor for v in store.votes(request_id=request_id)] == ["bob"]


# ------------------------------------------------------------------------------------------------- checklist


def test_a_checklist_item_is_ticked_once(store: Store) -> None:
    incident = open_incident(store)
    store.add_checklist(items=[
        ChecklistItem(incident_id=incident.id, item_id="page", phase="detect", text="Page the on-call", due_at=T0),
        ChecklistItem(incident_id=incident.id, item_id="status", phase="comms", text="Post status", due_at=T0),
    ])
    done = T0 + timedelta(minutes=3)
    ticked = store.tick(incident_id=incident.id, item_id="page", actor="bob", at=done,
                        event=event(incident.id, 1, actor="bob"))
    assert ticked is not None and ticked == store.events_for(incident_id=incident.id)[-1]
    assert store.tick(incident_id=incident.id, item_id="page", actor="carol", at=done + timedelta(minutes=1),
                      event=event(incident.id, 2, actor="carol")) is None
    items = {i.item_id: i for i in store.checklist(incident_id=incident.id)}
    assert [i.item_id for i in store.checklist(incident_id=incident.id)] == ["page", "status"]
    assert (items["page"].done_by, items["page"].done_at) == ("bob", done)
    assert items["status"].done_at is None
    assert [e.actor for e in store.events_for(incident_id=incident.id)] == ["alice", "bob"]


# ------------------------------------------------------------------------------------------------- provider state


def test_provider_state_round_trips_json(store: Store) -> None:
    value = {"status": "available", "size_gb": 20.5, "tags": ["a", "ü"], "nested": {"ok": True, "none": None}}
    assert store.load_state(kind="rds", key="db-1") is None
    store.save_state(kind="rds", key="db-1", value=value)
    store.save_state(kind="rds", key="db-2", value={"status": "creating"})
    store.save_state(kind="dns", key="db-1", value={"ttl": 60})
    assert store.load_state(kind="rds", key="db-1") == value
    store.save_state(kind="rds", key="db-2", value={"status": "available", "at": T0})
    assert store.list_state(kind="rds") == {
        "db-1": value, "db-2": {"status": "available", "at": "2026-11-24T10:00:00Z"}}
    assert store.list_state(kind="dns") == {"db-1": {"ttl": 60}}
    assert store.list_state(kind="s3") == {}


# ------------------------------------------------------------------------------------------------- audit chain


def fill_audit(store: Store, *, notes: int) -> str:
    """One incident plus `notes` events and one refusal: 2 + notes audit rows."""
    incident = open_incident(store)
    for n in range(notes):
        store.append_event(event(incident.id, n))
    store.audit_refusal(at=T0, actor="mallory", action="approval.refused", subject="AR-9",
                        data={"why": "unknown request"})
    return incident.id


def test_the_audit_chain_verifies_after_many_writes(store: Store) -> None:
    fill_audit(store, notes=40)
    assert store.verify_audit() == (42, None)
    with store.engine.connect() as conn:
        first = conn.execute(sa.text("SELECT prev_hash FROM audit WHERE seq = 1")).scalar_one()
    assert first == GENESIS


def test_the_audit_chain_stays_whole_under_concurrent_writers(store: Store) -> None:
    """Threads of one process sharing one Store (the bot's own worker threads)."""
    incident = open_incident(store)

    def write(i: int) -> None:
        for n in range(15):
            store.append_event(event(incident.id, n, actor=f"w{i}"))
            if n % 5 == 0:
                store.audit_refusal(at=T0, actor=f"w{i}", action="refused", subject="AR-1", data={"n": n})

    in_threads(6, write)
    assert store.verify_audit() == (1 + 6 * 15 + 6 * 3, None)
    assert len(store.events_for(incident_id=incident.id)) == 1 + 6 * 15


def test_separate_stores_appending_events_at_once_keep_one_chain(store: Store) -> None:
    """Each thread has its own Store, as separate processes would: on PostgreSQL nothing but the advisory lock
    orders them, on SQLite nothing but SQLite's own write lock."""
    incident = open_incident(store)
    writers = [Store(store.url) for _ in range(6)]
    try:
        in_threads(6, lambda i: [writers[i].append_event(event(incident.id, n, actor=f"w{i}")) for n in range(20)])
    finally:
        for w in writers:
            w.close()
    assert store.verify_audit() == (1 + 6 * 20, None)
    assert len(store.events_for(incident_id=incident.id)) == 1 + 6 * 20


@pytest.mark.parametrize("operation", ["audit_refusal", "create_incident"])
def test_a_write_waits_for_another_process_writing_at_the_same_moment(
        store: Store, operation: str) -> None:
    """Another Store (another drbot process) is inside a write transaction when this one starts the same kind
    of write; this one must wait and then build on the other's row, not collide with it."""
    open_incident(store)  # INC-1 and audit row 1
    other = Store(store.url)
    errors: list[BaseException] = []

    def contender() -> None:
        try:
            if operation == "audit_refusal":
                store.audit_refusal(at=T0, actor="bob", action="refused", subject="AR-1", data={})
            else:
                open_incident(store, title="second")
        except BaseException as exc:
            errors.append(exc)

    try:
        with other.tx() as conn:  # the other process's write, holding the write lock until it commits
            if operation == "audit_refusal":
                prev = conn.execute(sa.text("SELECT hash FROM audit WHERE seq = 1")).scalar_one()
                digest = audit_hash(prev_hash=prev, seq=2, at="x", actor="o", action="a", subject="s", data="d")
                conn.execute(sa.text("INSERT INTO audit VALUES (2, 'x', 'o', 'a', 's', 'd', :p, :h)"),
                             {"p": prev, "h": digest})
            else:
                conn.execute(sa.text(
                    "INSERT INTO incidents (id, number, title, severity, environment, tier, status, opened_by, "
                    "opened_at, detected_at, resolution_note, external) VALUES ('INC-2', 2, 'other', 'sev1', "
                    "'prod', 'critical', 'open', 'o', :t, :t, '', '{}')"), {"t": "2026-11-24T10:00:00.000000Z"})
            thread = threading.Thread(target=contender)
            thread.start()
            time.sleep(1.0)  # the contender reads now; on a correct store it blocks before reading
        thread.join(timeout=60)
    finally:
        other.close()
    if errors:
        raise errors[0]
    if operation == "audit_refusal":
        assert store.verify_audit() == (3, None)
    else:
        assert [i.title for i in store.list_incidents()] == ["db corrupted", "other", "second"]


@pytest.mark.parametrize(("tamper", "row", "reason"), [
    ("UPDATE audit SET data = replace(data, 'note 5', 'note 6') WHERE seq = 7", 7, "content does not match"),
    ("UPDATE audit SET actor = 'bob' WHERE seq = 1", 1, "content does not match"),
    ("DELETE FROM audit WHERE seq = 9", 9, "row 9 is missing (next row is 10)"),
    ("DELETE FROM audit WHERE seq = 1", 1, "row 1 is missing (next row is 2)"),
    (f"UPDATE audit SET prev_hash = '{'f' * 64}' WHERE seq = 4", 4, "prev_hash does not match"),
    ("UPDATE audit SET prev_hash = (SELECT hash FROM audit WHERE seq = 2) WHERE seq = 4", 4, "prev_hash"),
])
def test_verify_audit_names_the_first_row_tampered_with(store: Store, tamper: str, row: int, reason: str) -> None:
    fill_audit(store, notes=10)  # 12 rows; row n + 2 holds "note n"
    assert store.verify_audit() == (12, None)
    raw(store, tamper)
    _, problem = store.verify_audit()
    assert problem is not None
    assert problem.seq == row
    assert reason in problem.reason


def test_rewriting_a_row_and_its_hash_is_caught_at_the_next_row(store: Store) -> None:
    """Someone who recomputes the edited row's hash still breaks the link to it."""
    fill_audit(store, notes=10)
    with store.engine.connect() as conn:
        r = conn.execute(sa.text("SELECT * FROM audit WHERE seq = 5")).one()
    forged = r.data.replace("note 3", "nothing happened")
    digest = audit_hash(prev_hash=r.prev_hash, seq=5, at=r.at, actor=r.actor, action=r.action, subject=r.subject,
                        data=forged)
    raw(store, "UPDATE audit SET data = :d, hash = :h WHERE seq = 5", d=forged, h=digest)
    _, problem = store.verify_audit()
    assert problem is not None and problem.seq == 6


def test_verify_audit_notices_rows_cut_off_the_end(store: Store) -> None:
    incident = open_incident(store)
    for n in range(3):
        store.append_event(Event(incident_id=incident.id, at=T0, actor="bob", kind="note", text=f"note {n}"))
    count, problem = store.verify_audit()
    assert (count, problem) == (4, None)
    head = store.audit_head()
    assert head[0] == 4 and len(head[1]) == 64
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit WHERE seq = 4"))
    count, problem = store.verify_audit()
    assert problem is not None and problem.seq == 4
    assert "event 4 has no audit row" in problem.reason
