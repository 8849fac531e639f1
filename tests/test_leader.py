"""Leadership on PostgreSQL (issue 11): one replica leads, a standby takes over when the leader stops, dies or
freezes, and the frozen one is fenced when it wakes. Each test gets a fresh database on the session's server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.leader import Fenced, Leadership, fence, fence_dbos, named_sessions, session_name
from tests.slack_harness import wait_until

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]


class Replica:
    def __init__(self, url: str, name: str, **kwargs: float) -> None:
        self.elected: list[int] = []
        self.lost: list[int] = []
        self.leadership = Leadership(url, replica=name, on_elected=self.elected.append, on_lost=self.lost.append,
                                     **{"poll": 0.1, "beat": 0.2, "stale": 1.5, **kwargs})
        self.thread = threading.Thread(target=self.leadership.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.leadership.stop()
        self.thread.join(timeout=10)


@pytest.fixture
def replicas(fresh_pg_url: str) -> Iterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for replica in made:
        replica.stop()


def test_one_leads_and_a_standby_takes_over_when_it_hands_over(fresh_pg_url: str, replicas: list[Replica]) -> None:
    a = Replica(fresh_pg_url, "a")
    replicas.append(a)
    wait_until(lambda: a.elected == [1], timeout=10)
    b = Replica(fresh_pg_url, "b")
    replicas.append(b)
    time.sleep(1.0)
    assert b.elected == [] and not b.leadership.leading, "two leaders"
    found = b.leadership.leader()
    assert found is not None and (found.replica, found.epoch) == ("a", 1) and found.age < 1.0

    handed = time.monotonic()
    a.stop()  # SIGTERM: release the lock
    wait_until(lambda: b.elected == [2], timeout=10)
    assert time.monotonic() - handed < 2.0
    assert a.lost == [] and b.leadership.leader().replica == "b"  # type: ignore[union-attr]


def test_a_frozen_leader_is_replaced_and_fenced_when_it_wakes(fresh_pg_url: str, replicas: list[Replica]) -> None:
    a = Replica(fresh_pg_url, "a")
    replicas.append(a)
    wait_until(lambda: a.elected == [1], timeout=10)
    b = Replica(fresh_pg_url, "b")
    replicas.append(b)
    time.sleep(0.5)
    assert b.elected == []

    a.leadership.paused.set()  # frozen: its session lives (the lock is held) but it beats no more
    frozen = time.monotonic()
    wait_until(lambda: b.elected == [2], timeout=15)
    assert time.monotonic() - frozen < 1.5 + 3.0, "the standby waits for a stale beat, then takes over at once"

    engine = sa.create_engine(fresh_pg_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:  # a write the ex-leader would make, fenced in its own transaction
            with pytest.raises(Fenced, match="epoch 2 has taken over"):
                fence(conn, epoch=1)
            fence(conn, epoch=2)
    finally:
        engine.dispose()

    a.leadership.paused.clear()  # it wakes: its session was ended, so it steps down by itself
    wait_until(lambda: a.lost == [1], timeout=10)
    time.sleep(0.5)
    assert not a.leadership.leading and a.elected == [1] and b.leadership.leading


HOLDER = """
import sys, time, threading
from bot.leader import Leadership
leadership = Leadership(sys.argv[1], replica="killed", on_elected=lambda e: print("elected", e, flush=True),
                        on_lost=lambda e: None, poll=0.1, beat=0.2)
leadership.run()
"""


def test_a_killed_leader_frees_the_lock_at_once(fresh_pg_url: str, replicas: list[Replica]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, fresh_pg_url], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "elected 1"
        b = Replica(fresh_pg_url, "b")
        replicas.append(b)
        time.sleep(0.5)
        assert b.elected == []
        killed = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        wait_until(lambda: b.elected == [2], timeout=10)
        assert time.monotonic() - killed < 2.0, "a dead process's session ends with it"
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_takeover_ends_every_session_of_the_frozen_worker_even_mid_write(fresh_pg_url: str,
                                                                         replicas: list[Replica]) -> None:
    """A worker frozen inside a fenced write holds the leader row FOR SHARE: the standby ends all of that worker's
    sessions (named by `application_name`), so the takeover is not blocked and the write never commits."""
    a = Replica(fresh_pg_url, "a")
    replicas.append(a)
    wait_until(lambda: a.elected == [1], timeout=10)
    worker = sa.create_engine(named_sessions(fresh_pg_url, replica="a"), poolclass=sa.NullPool)
    conn = worker.connect()
    tx = conn.begin()
    fence(conn, epoch=1)  # the frozen worker's write, half done: it holds the leader row FOR SHARE
    conn.execute(sa.text("CREATE TABLE IF NOT EXISTS probe (n int)"))
    assert conn.execute(sa.text("SELECT current_setting('application_name')")).scalar() == session_name("a")

    b = Replica(fresh_pg_url, "b")
    replicas.append(b)
    a.leadership.paused.set()
    wait_until(lambda: b.elected == [2], timeout=15)
    with pytest.raises(sa.exc.DBAPIError):  # its session was ended: the write cannot commit
        conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
        tx.commit()
    conn.invalidate()
    worker.dispose()
    engine = sa.create_engine(fresh_pg_url, poolclass=sa.NullPool)
    with engine.connect() as check:
        assert not check.execute(sa.text("SELECT to_regclass('probe') IS NOT NULL")).scalar()
    engine.dispose()


def test_a_fenced_write_and_a_takeover_are_ordered(fresh_pg_url: str, replicas: list[Replica]) -> None:
    """The epoch is read FOR SHARE: while a leader's write is open, a takeover's epoch bump waits for it."""
    a = Replica(fresh_pg_url, "a")
    replicas.append(a)
    wait_until(lambda: a.elected == [1], timeout=10)
    engine = sa.create_engine(fresh_pg_url, poolclass=sa.NullPool)
    bumped = threading.Event()

    def bump() -> None:
        with engine.begin() as other:
            other.execute(sa.text("UPDATE drbot_leader SET epoch = epoch + 1"))
        bumped.set()

    with engine.begin() as conn:
        fence(conn, epoch=1)
        thread = threading.Thread(target=bump)
        thread.start()
        time.sleep(0.5)
        assert not bumped.is_set(), "the epoch changed under an open fenced write"
    thread.join(timeout=10)
    assert bumped.is_set()
    with engine.begin() as conn, pytest.raises(Fenced):
        fence(conn, epoch=1)
    engine.dispose()


def test_dbos_writes_from_a_worker_that_no_longer_leads_are_refused_by_the_database(
        fresh_pg_url: str, replicas: list[Replica]) -> None:
    """The fence on DBOS's own tables: a woken ex-leader's checkpoint of a step is refused, the leader's and any
    other session's (drbot's CLI, an operator's psql) pass."""
    admin = sa.create_engine(fresh_pg_url, poolclass=sa.NullPool)
    assert fence_dbos(fresh_pg_url) is False, "no DBOS schema yet: nothing to fence"
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA dbos"))
        conn.execute(sa.text("CREATE TABLE dbos.operation_outputs (workflow_uuid text, function_id int)"))
        conn.execute(sa.text("CREATE TABLE dbos.dbos_migrations (version int)"))
    a = Replica(fresh_pg_url, "a")
    replicas.append(a)
    wait_until(lambda: a.elected == [1], timeout=10)
    assert fence_dbos(fresh_pg_url) is True and fence_dbos(fresh_pg_url) is True, "idempotent"

    def write(name: str, table: str = "operation_outputs") -> None:
        worker = sa.create_engine(named_sessions(fresh_pg_url, replica=name), poolclass=sa.NullPool)
        try:
            with worker.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO dbos.{table} VALUES ('R-1.x', 3)" if table == "operation_outputs"
                                     else f"INSERT INTO dbos.{table} VALUES (1)"))
        finally:
            worker.dispose()

    write("a")  # the leader checkpoints
    with pytest.raises(sa.exc.DBAPIError, match="drbot-worker:b no longer leads"):
        write("b")
    write("b", table="dbos_migrations")  # DBOS's own migrations table is left alone
    with admin.begin() as conn:  # not a worker's session: never fenced
        conn.execute(sa.text("UPDATE dbos.operation_outputs SET function_id = 4"))
    a.leadership.paused.set()  # a freezes; b takes over; a's checkpoint is now refused
    b = Replica(fresh_pg_url, "b")
    replicas.append(b)
    wait_until(lambda: b.elected == [2], timeout=15)
    with pytest.raises(sa.exc.DBAPIError, match="drbot-worker:a no longer leads"):
        write("a")
    write("b")
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dbos.operation_outputs")).scalar() == 2
    admin.dispose()
