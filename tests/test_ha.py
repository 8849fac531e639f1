"""High availability (issue 11), with several real `drbot serve` processes on the suite's PostgreSQL: a request on
one replica and its approval on another; the leader killed -9 in the middle of a restore (sandbox, and RDS on moto
behind a proxy that keeps the restore `creating` for 6 s); a frozen leader replaced and fenced; a job accepted
while no replica leads; a graceful hand-over and a rolling restart."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.door import Delivery
from bot.jobqueue import JobQueue
from bot.leader import LOCK_KEY
from bot.slack.jobs import SlashCommand
from integrations.sandbox.records import TARGETS_KIND
from runbooks import grammar as g
from runbooks.models import EventKind
from runbooks.store import Store
from tests.doubles.fake_kube import TOKEN as KUBE_TOKEN
from tests.doubles.fake_kube import FakeKube
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.moto_server import moto_server, seed_rds_source
from tests.doubles.timed_aws_proxy import timed_aws_proxy
from tests.doubles.timing import OperationTimer
from tests.ha_harness import Replica, leader_of, replicas, run_status, thread_posts
from tests.pg import PgServer, start_server, stop_server
from tests.slack_harness import ALICE, BOB, CHANNEL, newest_button, slack_config, wait_until
from tests.test_pitr_clouds_e2e import DEPLOYMENT, NAMESPACE, SOURCE, TARGET
from tests.test_pitr_clouds_e2e import config as pitr_config
from tests.test_sql_integrity import URL_ENV, make_restored_db

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def store(fresh_pg_url: str) -> Iterator[Store]:
    made = Store(fresh_pg_url)
    yield made
    made.close()


def creates(store: Store) -> dict[str, int]:
    return {key: int(value.get("creates", 0)) for key, value in store.list_state(kind=TARGETS_KIND).items()}


def once_each(store: Store) -> None:
    """Every cloud operation of the run was created exactly once, the restore among them."""
    made = creates(store)
    assert made.get("database.restore_pitr:rag-engine-prod-pitr-r1") == 1 and set(made.values()) == {1}, made


def story(store: Store) -> str:
    return "\n".join(f"{e.kind}: {e.text}" for e in store.events_for(incident_id="INC-1"))


def request_and_approve(asked: Replica, approver: Replica, fake: FakeSlack, store: Store,
                        text: str = "restore database prod 10:00Z") -> None:
    answer = asked.command(text)
    assert answer.status_code == 200 and "On it" in answer.text
    try:
        wait_until(lambda: bool(newest_button(fake, "dr_approve")), timeout=60)
    except AssertionError:
        raise AssertionError(f"no approval was asked; the timeline:\n{story(store)}") from None
    assert approver.click("dr_approve", newest_button(fake, "dr_approve"), user=BOB).status_code == 200
    wait_until(lambda: run_status(store, "R-1") in {"running", "succeeded", "failed", "paused"}, timeout=60)


def restoring(store: Store) -> bool:
    return any(s.step_id == "restore" and s.status.value == "running" for s in store.steps_for(run_id="R-1"))


def no_duplicate_posts(fake: FakeSlack) -> None:
    counts = collections.Counter(thread_posts(fake))
    doubled = {text[:120]: n for text, n in counts.items() if n > 1}
    assert not doubled, f"thread posts made more than once: {doubled}"


def every_event_posted(store: Store) -> None:
    """Every event that has a thread message was posted (its `slack.posted` mark exists)."""
    from bot.slack import blocks

    def missing() -> list[str]:
        posted = store.list_state(kind="slack.posted", prefix="INC-1:")
        return [f"{e.seq} {e.kind}" for e in store.events_for(incident_id="INC-1")
                if blocks.event_message(e) is not None and f"INC-1:{e.seq}" not in posted]

    try:  # a post is marked just after Slack has it: give the last one its moment
        wait_until(lambda: not missing(), timeout=30)
    except AssertionError:
        raise AssertionError(f"events never posted to the thread: {missing()}") from None


def test_request_on_one_replica_and_approval_on_another_run_once_on_the_leader(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    with replicas(["alpha", "beta"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path,
                  env={"DRBOT_SANDBOX_SPEED": "100000"}) as group:
        leader = leader_of(group)
        standby = next(r for r in group if r is not leader)
        assert standby.health() == {"ok": True, "replica": standby.name, "role": "standby", "leader": leader.name}
        assert standby.http.get("/readyz").json()["ready"] is True, "a standby's front takes traffic too"
        request_and_approve(standby, leader, fake, store)
        wait_until(lambda: run_status(store, "R-1") == "succeeded", timeout=60)
        once_each(store)
        wait_until(lambda: any("Run succeeded" in p for p in thread_posts(fake)), timeout=30)
        no_duplicate_posts(fake)
        assert leader.metrics()["drbot_leader"] == 1 and standby.metrics()["drbot_leader"] == 0
        assert standby.metrics()["drbot_jobs_pending"] == 0
        assert "no leader" not in standby.log()


def test_kill_9_of_the_leader_mid_restore_the_standby_finishes_it_once(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    with replicas(["alpha", "beta"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path) as group:
        leader = leader_of(group)
        standby = next(r for r in group if r is not leader)
        request_and_approve(standby, leader, fake, store)
        wait_until(lambda: restoring(store), timeout=60)
        updates_before = len(fake.calls("chat.update"))
        leader.signal(signal.SIGKILL)
        killed = time.monotonic()
        assert leader_of([standby], timeout=30) is standby
        took = time.monotonic() - killed
        wait_until(lambda: run_status(store, "R-1") == "succeeded", timeout=90)
        once_each(store)
        takeovers = [e for e in store.events_for(incident_id="INC-1") if e.kind == EventKind.LEADER_TAKEOVER]
        assert len(takeovers) == 1 and takeovers[0].run_id == "R-1", takeovers
        assert takeovers[0].text == f"Replica {standby.name} took over from {leader.name}; R-1 resumed at step restore."
        wait_until(lambda: any("Run succeeded" in p for p in thread_posts(fake)), timeout=30)
        standby_metrics = standby.metrics()
        assert standby_metrics["drbot_takeovers_total"] == 1 and standby_metrics["drbot_leader"] == 1
        no_duplicate_posts(fake)
        every_event_posted(store)
        assert took < 15, f"the standby took {took:.1f} s to lead"
        # the thread goes on in the same messages: the run card posted before the kill is the one updated after it
        card = store.load_state(kind="slack.card", key="R-1")
        assert card is not None
        later = [c for c in fake.calls("chat.update")[updates_before:] if c.params.get("ts") == card["ts"]]
        assert later and "succeeded" in str(later[-1].params.get("text")).lower(), [c.params for c in later[-1:]]
        cards = [c for c in fake.calls("chat.postMessage") if "R-1" in str(c.params.get("text"))
                 and c.params.get("thread_ts") and str(c.params.get("text")) == str(later[-1].params.get("text"))]
        assert not cards, "the run card was posted again instead of updated"


def test_a_frozen_leader_is_replaced_and_when_it_wakes_it_advances_nothing(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    with replicas(["alpha", "beta"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path) as group:
        leader = leader_of(group)
        standby = next(r for r in group if r is not leader)
        request_and_approve(standby, standby, fake, store)
        wait_until(lambda: restoring(store), timeout=60)
        leader.signal(signal.SIGSTOP)  # keeps its session (and the lock): only the stale heartbeat shows it
        assert leader_of([standby], timeout=30) is standby
        seen = len(store.events_for(incident_id="INC-1"))
        leader.signal(signal.SIGCONT)
        wait_until(lambda: "stepping down" in leader.log(), timeout=30)
        wait_until(lambda: leader.role() == "standby", timeout=60)
        assert leader.health() == {"ok": True, "replica": leader.name, "role": "standby", "leader": standby.name}
        wait_until(lambda: run_status(store, "R-1") == "succeeded", timeout=90)
        once_each(store)
        events = store.events_for(incident_id="INC-1")
        assert len(events) > seen
        steps = collections.Counter((e.kind, e.data.get("step_id"), e.data.get("attempt")) for e in events
                                    if e.kind in (EventKind.STEP_STARTED, EventKind.STEP_COMPLETED))
        assert len(steps) == 8, steps  # restore, integrity, cutover, report: each started and completed
        assert all(n == 1 for n in steps.values()), f"a step event written twice: {steps}"
        wait_until(lambda: any("Run succeeded" in p for p in thread_posts(fake)), timeout=30)
        no_duplicate_posts(fake)
        every_event_posted(store)


def test_a_job_accepted_while_no_replica_leads_runs_once_a_leader_appears(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    holder = sa.create_engine(fresh_pg_url, poolclass=sa.NullPool)
    with holder.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
        conn.commit()
        with replicas(["alpha"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path,
                      env={"DRBOT_SANDBOX_SPEED": "100000"}) as (alone,):
            wait_until(lambda: alone.health() is not None, timeout=60)
            assert alone.health() == {"ok": True, "replica": "alpha", "role": "standby", "leader": None}
            answer = alone.command("incident open Nobody leads sev2 prod")
            assert answer.status_code == 200 and "On it" in answer.text
            time.sleep(1.0)
            assert store.list_incidents() == [], "a standby ran a job"
            assert alone.metrics()["drbot_jobs_pending"] == 1
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            conn.commit()
            wait_until(lambda: alone.role() == "leader", timeout=30)
            wait_until(lambda: len(store.list_incidents()) == 1, timeout=30)
            assert "WARNING [alpha] drbot.leader: replica alpha leads (epoch 1)" in alone.log(), "logs name the replica"
            time.sleep(0.5)
            assert [i.title for i in store.list_incidents()] == ["Nobody leads"]
            wait_until(lambda: alone.metrics()["drbot_jobs_pending"] == 0, timeout=30)
    holder.dispose()


def test_sigterm_hands_over_and_a_rolling_restart_loses_no_run(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    with replicas(["alpha", "beta"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path,
                  env={"DRBOT_SANDBOX_SPEED": "100"}) as group:
        first = leader_of(group)
        second = next(r for r in group if r is not first)
        request_and_approve(second, first, fake, store)
        wait_until(lambda: restoring(store), timeout=60)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
        assert leader_of([second], timeout=30) is second
        assert "stepping down" not in first.log() and "hands over" in first.log()
        # the rest of a rolling restart: a new replica in the first one's place, then the second one restarted
        third = Replica("gamma", database_url=fresh_pg_url, fake=fake, tmp=tmp_path, config=tmp_path / "drbot.yml",
                        env={"DRBOT_SANDBOX_SPEED": "100"})
        group.append(third)
        wait_until(lambda: third.health() is not None, timeout=60)
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=30) == 0
        assert leader_of([third], timeout=30) is third
        wait_until(lambda: run_status(store, "R-1") == "succeeded", timeout=120)
        once_each(store)
        wait_until(lambda: any("Run succeeded" in p for p in thread_posts(fake)), timeout=30)
        no_duplicate_posts(fake)
        every_event_posted(store)


class CountingTimer(OperationTimer):
    """The proxy calls `begin` for every creating request it passes to moto: the create calls, counted."""

    def __init__(self, *, duration: float) -> None:
        super().__init__(duration=duration)
        self.begins: collections.Counter[str] = collections.Counter()

    def begin(self, name: str) -> float:
        self.begins[name] += 1
        return super().begin(name)


def test_kill_9_of_the_leader_mid_restore_on_aws_rds_makes_one_create_call(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store, pg_server: PgServer) -> None:
    restored = make_restored_db(pg_server)
    timer = CountingTimer(duration=6.0)
    with moto_server() as moto, timed_aws_proxy(upstream=moto.url, timer=timer) as proxy, FakeKube() as kube:
        kube.add_deployment(NAMESPACE, DEPLOYMENT, replicas=2,
                            containers={DEPLOYMENT: {"DB_HOST": "prod-pg.internal", "LOG_LEVEL": "info"}})
        seed_rds_source(moto, SOURCE)
        data = pitr_config(database={"provider": "aws-rds", "instance": SOURCE, "region": "us-east-1",
                                     "endpoint_url": proxy.url}, kube=kube, db=restored)
        data["slack"] = slack_config()["slack"]
        data["environments"]["prod"]["approvals"] = slack_config()["environments"]["prod"]["approvals"]
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               URL_ENV: restored.readonly_url(), "DRBOT_TEST_KUBE_TOKEN": KUBE_TOKEN}
        with replicas(["alpha", "beta"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path, config=data,
                      env=env) as group:
            leader = leader_of(group)
            standby = next(r for r in group if r is not leader)
            request_and_approve(standby, leader, fake, store, text="restore database prod latest")
            wait_until(lambda: restoring(store), timeout=60)
            wait_until(lambda: timer.begins[TARGET] == 1, timeout=30)
            leader.signal(signal.SIGKILL)
            assert leader_of([standby], timeout=30) is standby
            wait_until(lambda: run_status(store, "R-1") in {"succeeded", "failed", "paused"}, timeout=120)
            assert run_status(store, "R-1") == "succeeded", [e.text for e in store.events_for(incident_id="INC-1")]
        assert timer.begins == {TARGET: 1}, f"RDS create calls: {dict(timer.begins)}"
        instances = moto.client("rds").describe_db_instances()["DBInstances"]
        assert sorted(i["DBInstanceIdentifier"] for i in instances) == [SOURCE, TARGET]
        takeovers = [e for e in store.events_for(incident_id="INC-1") if e.kind == EventKind.LEADER_TAKEOVER]
        assert [e.data["step"] for e in takeovers] == ["restore"]
        no_duplicate_posts(fake)
        every_event_posted(store)


def test_a_command_a_dead_leader_was_carrying_out_is_reported_and_not_run_again(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    text = "incident open Half done sev2 prod"
    queue = JobQueue(fresh_pg_url, replica="gone")
    queue.put(SlashCommand(command=g.parse(text, now=datetime.now(UTC), environments=["prod", "staging"]), text=text,
                           user=ALICE, channel=CHANNEL, once=Delivery(signature="v0=half", timestamp=1)))
    assert [c.kind for c in queue.claim(epoch=None)] == ["SlashCommand"]  # a leader began it, then died
    with replicas(["alpha"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path) as (alone,):
        wait_until(lambda: alone.role() == "leader", timeout=60)

        def told() -> list[str]:
            return [str(c.params.get("text")) for c in fake.calls("chat.postEphemeral")
                    if c.params.get("user") == ALICE and c.params.get("channel") == CHANNEL]

        wait_until(lambda: bool(told()), timeout=30)
        assert told() == [f":warning: drbot's leader stopped while it was carrying out `/dr {text}`, and replica "
                          f"alpha took over. It may or may not have taken effect: check `/dr status` before you try "
                          f"again."]
        assert store.list_incidents() == [], "a half-done command was run again"
        assert queue.counts() == {"interrupted": 1}
    queue.close()


def test_a_database_outage_keeps_the_replica_alive_unready_and_it_leads_again_after(
        tmp_path: Path, fake: FakeSlack) -> None:
    """Its own PostgreSQL, stopped and started again under a serving replica: liveness holds (restarting every
    replica would not bring the database back), readiness fails, and once the database is back the replica leads
    again and runs what it is asked."""
    server = start_server()
    try:
        url = server.create_database("outage")
        with replicas(["alpha"], database_url=url, fake=fake, tmp=tmp_path,
                      env={"DRBOT_SANDBOX_SPEED": "100000"}) as (alone,):
            wait_until(lambda: alone.role() == "leader", timeout=60)
            server.stop()
            wait_until(lambda: alone.http.get("/readyz").status_code == 503, timeout=30)
            ready = alone.http.get("/readyz").json()
            assert ready["ok"] is False and ready["ready"] is False and ready["database"], ready
            live = alone.http.get("/healthz")
            assert live.status_code == 200 and live.json()["database"] and live.json()["replica"] == "alpha"
            wait_until(lambda: "stepping down" in alone.log(), timeout=30)
            time.sleep(2)
            assert alone.proc.poll() is None, "the replica exited during the outage"
            assert alone.http.get("/healthz").status_code == 200
            server.start()
            wait_until(lambda: alone.role() == "leader", timeout=90)
            answer = alone.command("incident open After the outage sev3 prod")
            assert answer.status_code == 200 and "On it" in answer.text
            store = Store(url)
            try:
                wait_until(lambda: [i.title for i in store.list_incidents()] == ["After the outage"], timeout=60)
            finally:
                store.close()
    finally:
        stop_server(server)


def test_a_schedule_fires_once_per_cron_time_with_two_replicas(
        tmp_path: Path, fresh_pg_url: str, fake: FakeSlack, store: Store) -> None:
    """Issue 12: `schedules:` run from the leader's DBOS tick; each cron time starts one drill, across replicas."""
    config = slack_config()
    config["schedules"] = {"every-minute": {"cron": "* * * * *", "drill": "backup-verification staging"}}
    with replicas(["alpha", "beta"], database_url=fresh_pg_url, fake=fake, tmp=tmp_path, config=config,
                  env={"DRBOT_SANDBOX_SPEED": "100000"}):
        wait_until(lambda: len(store.list_state(kind="schedule.fired")) >= 2, timeout=200)
        wait_until(lambda: all(run_status(store, f"R-{n}") == "succeeded" for n in (1, 2)), timeout=60)
        fired = store.list_state(kind="schedule.fired")
        scheduled = [r for i in store.list_incidents() for r in store.runs_for(incident_id=i.id)
                     if r.requested_by == "schedule:every-minute"]
        assert len(scheduled) in (len(fired), len(fired) - 1), "one drill per cron time (the newest may be starting)"
        assert len({r.id for r in scheduled}) == len(scheduled)
        assert all(r.drill for r in scheduled)
        def passed() -> list[str]:
            return [str(c.params.get("text")) for c in fake.calls("chat.postMessage")
                    if "Scheduled drill every-minute passed" in str(c.params.get("text"))]

        wait_until(lambda: len(passed()) >= 2, timeout=60)
        assert len(set(passed())) == len(passed()), "each said once"
