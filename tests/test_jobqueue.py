"""The jobs table (`bot.jobqueue`) on SQLite and PostgreSQL: a job put before an ack waits for a leader, a replay
adds nothing, two leaders never claim one job, a fenced leader claims nothing, and a job a dead leader began is
reported, not run again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from bot.door import Delivery
from bot.jobqueue import INTERRUPTED, PENDING, JobQueue, jobs_table, jobs_url
from bot.leader import Fenced
from bot.slack.jobs import Mention, Publish, SlashCommand
from runbooks import grammar as g


@pytest.fixture
def queue(database_url: str) -> Iterator[JobQueue]:
    made = JobQueue(database_url, replica="front-a")
    yield made
    made.close()


def mention(n: int, *, signature: str | None = None) -> Mention:
    once = Delivery(signature=signature, timestamp=1) if signature else None
    return Mention(channel=f"C{n}", thread=None, once=once)


def command(text: str = "status") -> SlashCommand:
    return SlashCommand(command=g.parse(text, now=datetime(2026, 12, 3, tzinfo=UTC), environments=["prod"]),
                        text=text, user="U1", channel="C1", response_url=None,
                        once=Delivery(signature=f"v0={text}", timestamp=1))


def test_a_job_waits_until_a_leader_claims_it_in_order(queue: JobQueue) -> None:
    assert queue.put(mention(1)) and queue.put(mention(2)) and queue.put(command())
    assert queue.pending() == 3 and queue.counts() == {PENDING: 3}
    claimed = queue.claim(epoch=4)
    assert [c.kind for c in claimed] == ["Mention", "Mention", "SlashCommand"]
    assert [c.job.channel for c in claimed[:2]] == ["C1", "C2"]  # type: ignore[union-attr]
    assert isinstance(claimed[2].job, SlashCommand) and claimed[2].job.command == command().command
    assert claimed[2].job.once is None, "the replay claim is the table's; the job runs without a second one"
    assert all(c.front == "front-a" and c.epoch == 4 for c in claimed)
    assert queue.claim(epoch=4) == []
    queue.finish(claimed[0].id)
    queue.finish(claimed[1].id, error="boom")
    assert queue.counts() == {"done": 1, "failed": 1, "running": 1} and queue.pending() == 1


def test_a_replayed_request_adds_nothing(queue: JobQueue) -> None:
    assert queue.put(mention(1, signature="v0=aaa")) is True
    assert queue.put(mention(1, signature="v0=aaa")) is False
    assert queue.put(mention(1, signature="v0=bbb")) is True
    assert queue.put(mention(1)) and queue.put(mention(1)), "jobs without a Slack request are never replays"
    assert queue.pending() == 4


def test_two_claimers_never_take_the_same_job(database_url: str, queue: JobQueue) -> None:
    for n in range(200):
        queue.put(mention(n))
    other = JobQueue(database_url, replica="front-b")
    taken: list[list[int]] = [[], []]

    def claim(q: JobQueue, into: list[int]) -> None:
        while True:
            got = q.claim(epoch=1, limit=7)
            if not got:
                return
            into.extend(c.id for c in got)

    threads = [threading.Thread(target=claim, args=(q, into)) for q, into in ((queue, taken[0]), (other, taken[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    every = taken[0] + taken[1]
    assert len(every) == 200 and len(set(every)) == 200
    other.close()


def test_a_fenced_leader_claims_nothing(queue: JobQueue) -> None:
    queue.put(mention(1))

    def fenced(conn: sa.Connection) -> None:
        raise Fenced("epoch 3 has taken over")

    with pytest.raises(Fenced):
        queue.claim(epoch=2, fence=fenced)
    assert queue.counts() == {PENDING: 1}, "the claim was rolled back"
    assert [c.kind for c in queue.claim(epoch=3, fence=lambda conn: None)] == ["Mention"]


def test_jobs_a_dead_leader_began_are_reported_and_only_repeatable_ones_run_again(queue: JobQueue) -> None:
    queue.put(command("status"))
    queue.put(Publish(event={"kind": "x"}))
    queue.put(mention(1))
    began = queue.claim(epoch=1)
    queue.finish(began[2].id)  # the mention finished before the leader died
    lost = queue.interrupted(epoch=2)
    assert [c.kind for c in lost] == ["SlashCommand"]
    assert isinstance(lost[0].job, SlashCommand) and lost[0].job.text == "status" and lost[0].epoch == 1
    assert queue.counts() == {INTERRUPTED: 1, PENDING: 1, "done": 1}
    again = queue.claim(epoch=2)
    assert [c.kind for c in again] == ["Publish"], "showing a stored event is safe to repeat"
    assert queue.interrupted(epoch=2) == [], "a job of the current leader is not interrupted"


def test_an_unreadable_job_fails_visibly_and_is_never_guessed(queue: JobQueue) -> None:
    with queue.engine.begin() as conn:
        conn.execute(jobs_table.insert().values(kind="SlashCommand", payload=b"not a pickle", front="old",
                                                state=PENDING, created_at=time.time()))
    (claimed,) = queue.claim(epoch=1)
    assert claimed.job is None
    with queue.engine.connect() as conn:
        state, error = conn.execute(sa.select(jobs_table.c.state, jobs_table.c.error)).one()
    assert state == "failed" and "unreadable payload" in error


def test_sqlite_jobs_live_beside_the_database_and_postgres_in_it() -> None:
    assert jobs_url("sqlite:////var/lib/drbot/drbot.db") == "sqlite:////var/lib/drbot/drbot.jobs.db"
    assert jobs_url("postgresql+psycopg://u@h/drbot") == "postgresql+psycopg://u@h/drbot"


@pytest.mark.postgres
def test_a_put_wakes_a_waiting_leader_at_once_on_postgres(fresh_pg_url: str) -> None:
    leader, front = JobQueue(fresh_pg_url, replica="leader"), JobQueue(fresh_pg_url, replica="front")
    leader.wait(timeout=0.01)  # LISTEN before the put
    woke: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        leader.wait(timeout=10)
        woke.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    front.put(mention(1))
    waiter.join(timeout=15)
    assert woke and woke[0] < 5, f"the NOTIFY did not wake the leader ({woke})"
    leader.close()
    front.close()


def test_a_burst_of_puts_is_committed_together_and_each_replay_refused_once(queue: JobQueue) -> None:
    """50 acks at once, each request sent twice: every put returns only after its job is committed, exactly one
    of each pair is added, and the jobs are all there."""
    results: dict[int, list[bool]] = {n: [] for n in range(25)}
    barrier = threading.Barrier(50)

    def put(n: int) -> None:
        barrier.wait()
        results[n].append(queue.put(mention(n, signature=f"v0=burst-{n}")))

    threads = [threading.Thread(target=put, args=(n % 25,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(sorted(added) == [False, True] for added in results.values()), results
    assert queue.counts() == {PENDING: 25}
    with queue.engine.connect() as conn:
        onces = sorted(conn.execute(sa.select(jobs_table.c.once)).scalars())
    assert onces == sorted(f"v0=burst-{n}" for n in range(25))


def test_a_put_the_database_refuses_raises_to_its_caller(queue: JobQueue) -> None:
    """The ack's caller learns the job was not taken (the front then tells the person nothing was done)."""
    with queue.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE drbot_jobs"))
    with pytest.raises(Exception, match="drbot_jobs"):
        queue.put(mention(1))
    jobs_table.metadata.create_all(queue.engine)
    assert queue.put(mention(2)), "the writer goes on after a failed batch"
