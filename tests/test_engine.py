"""The engine on DBOS, in process: failures pause for a guarded decision, cancel, the two-person rule with
`required: 2`, expiry, tampered clicks, parallel steps, and the live RTO budget."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from integrations.sandbox.database import create_count
from runbooks.replies import describe_buttons
from tests.doubles.clock import FakeClock
from tests.engine_harness import Harness, harness_fixture, sandbox_config


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


def _fail(action: str, **spec: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        resource = "kubernetes" if action in {"set_env", "scale"} else "database"
        data["environments"]["prod"][resource]["failures"] = {action: {"message": "InsufficientDBInstanceCapacity: "
                                                                       "no db.r6g.large in us-west-2b", **spec}}
    return change


def _approve_plan(h: Harness) -> None:
    h.recorder.wait_for("approval.requested")
    reply = h.press("approval.requested", "Approve", actor="bob")
    assert reply.public, reply.text


def test_failed_step_pauses_and_retry_needs_a_second_person(harness: Callable[..., Harness]) -> None:
    h = harness(config=sandbox_config(f=_fail("restore_pitr", times=1, at="start")))
    h.say("/dr restore database prod -2h")
    _approve_plan(h)
    paused = h.recorder.wait_for("run.paused")
    assert "InsufficientDBInstanceCapacity" in paused.text
    assert h.engine.store.get_run("R-1").status.value == "paused"  # type: ignore[union-attr]

    refused = h.press("run.paused", "Retry", actor="alice")  # the requester cannot decide alone
    assert not refused.public and "two-person rule" in refused.text
    outsider = h.press("run.paused", "Retry", actor="mallory")
    assert not outsider.public and "not an approver" in outsider.text

    assert h.press("run.paused", "Retry", actor="carol").public
    h.recorder.wait_for("run.succeeded")
    steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
    assert steps["restore"].attempt == 2 and steps["restore"].status.value == "succeeded"
    assert create_count(h.engine.store, target="rag-engine-prod-pitr-r1") == 1
    kinds = h.recorder.kinds()
    assert kinds.index("step.failed") < kinds.index("run.paused") < kinds.index("approval.granted", kinds.index(
        "run.paused"))


def test_skip_and_abort_decisions(harness: Callable[..., Harness]) -> None:
    h = harness(config=sandbox_config(f=_fail("integrity_check", times=5, at="start")))
    h.say("/dr restore database prod -2h")
    _approve_plan(h)
    h.recorder.wait_for("run.paused")
    assert h.press("run.paused", "Skip", actor="bob").public
    h.recorder.wait_for("run.succeeded")
    steps = {s.step_id: s.status.value for s in h.engine.store.steps_for(run_id="R-1")}
    assert steps["integrity"] == "skipped" and steps["cutover"] == "succeeded"

    h.say("/dr run backup-verification prod")
    h.recorder.wait_for("approval.requested", count=2)
    assert h.press("approval.requested", "Approve", actor="carol").public
    h.recorder.wait_for("run.paused", count=2)
    assert h.press("run.paused", "Abort", actor="bob").public
    failed = h.recorder.wait_for("run.failed")
    assert "aborted after step integrity failed" in failed.text
    assert h.engine.store.get_run("R-2").status.value == "failed"  # type: ignore[union-attr]
    assert not any(s.step_id == "delete" and s.status.value == "succeeded"
                   for s in h.engine.store.steps_for(run_id="R-2")), "nothing after an abort runs"


def test_requester_cancels_while_waiting_for_approval(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr failover dns prod")
    h.recorder.wait_for("approval.requested")
    refused = h.engine.cancel(run_id="R-1", actor="mallory")
    assert not refused.public and "Only alice" in refused.text
    assert h.engine.cancel(run_id="R-1", actor="alice").public
    h.recorder.wait_for("run.cancelled")
    assert h.engine.store.get_run("R-1").status.value == "cancelled"  # type: ignore[union-attr]
    late = h.press("approval.requested", "Approve", actor="bob")
    assert not late.public and "cancelled" in late.text


def test_required_two_needs_two_distinct_others(harness: Callable[..., Harness]) -> None:
    def two(data: dict[str, Any]) -> None:
        data["environments"]["prod"]["approvals"]["required"] = 2

    h = harness(config=sandbox_config(two=two))
    h.say("/dr failover dns prod")
    h.recorder.wait_for("approval.requested")
    first = h.press("approval.requested", "Approve", actor="bob")
    assert "1 of 2" in first.text
    again = h.press("approval.requested", "Approve", actor="bob")
    assert not again.public and "already" in again.text
    own = h.press("approval.requested", "Approve", actor="alice")
    assert not own.public
    assert h.engine.store.get_run("R-1").status.value == "awaiting_approval"  # type: ignore[union-attr]
    assert h.press("approval.requested", "Approve", actor="carol").public
    h.recorder.wait_for("run.succeeded")
    votes = h.engine.store.votes(request_id="AR-1")
    assert sorted(v.actor for v in votes) == ["bob", "carol"]


def test_expired_request_refuses_late_approval_and_ends_the_run(harness: Callable[..., Harness]) -> None:
    clock = FakeClock()
    h = harness(clock=clock)
    h.say("/dr failover dns prod")
    h.recorder.wait_for("approval.requested")
    clock.advance(31 * 60)
    late = h.press("approval.requested", "Approve", actor="bob")
    assert not late.public and "expired" in late.text
    h.recorder.wait_for("run.expired")
    assert h.engine.store.get_run("R-1").status.value == "expired"  # type: ignore[union-attr]
    refusal = h.recorder.last("approval.refused")
    assert refusal.data["reason"] == "expired"


def test_tampered_and_stale_clicks_are_refused_and_audited(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr failover dns prod")
    h.recorder.wait_for("approval.requested")
    before = h.engine.store.verify_audit()[0]
    forged = h.engine.press(action="approve", value="AR-999", actor="bob")
    assert not forged.public and "AR-999" in forged.text
    assert h.engine.store.verify_audit() == (before + 1, None), "the refusal is on the audit chain"
    stale = h.press("approval.requested", "Approve", actor="bob", plan_hash="0" * 64)
    assert not stale.public and "current plan" in stale.text
    assert h.engine.store.votes(request_id="AR-1") == []
    assert h.recorder.last("approval.refused").data["reason"] == "plan_changed"


def test_independent_steps_run_concurrently(harness: Callable[..., Harness]) -> None:
    h = harness(speed=3000)
    h.say("/dr failover region staging")
    h.recorder.wait_for("run.succeeded", timeout=60)
    steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
    promote, scale = steps["promote"], steps["scale"]
    assert promote.started_at and scale.started_at and promote.finished_at and scale.finished_at
    assert promote.started_at < scale.finished_at and scale.started_at < promote.finished_at, "they overlapped"
    assert steps["dns"].started_at >= max(promote.finished_at, scale.finished_at)  # type: ignore[operator]
    lag = h.recorder.last("rpo.replica_lag")
    assert 0 < lag.data["replica_lag_seconds"] < 60
    record = h.engine.record("INC-1")
    assert record.replica_lag == timedelta(seconds=lag.data["replica_lag_seconds"])


def test_rto_budget_warns_once_at_each_threshold(harness: Callable[..., Harness]) -> None:
    clock = FakeClock()
    h = harness(clock=clock)
    h.say("/dr incident open checkout is down sev1 prod")  # critical tier: RTO target 1 h
    h.engine.tick()
    assert "rto.warning" not in h.recorder.kinds()
    clock.advance(31 * 60)
    h.engine.tick()
    h.engine.tick()
    assert [e.data["percent"] for e in h.recorder.events if e.kind == "rto.warning"] == [50]
    clock.advance(15 * 60)
    h.engine.tick()
    assert [e.data["percent"] for e in h.recorder.events if e.kind == "rto.warning"] == [50, 75]
    h.say("/dr incident restored", actor="bob")
    clock.advance(60 * 60)
    h.engine.tick()
    assert [e.data["percent"] for e in h.recorder.events if e.kind == "rto.warning"] == [50, 75]


def test_transient_errors_are_retried_without_bothering_anyone(harness: Callable[..., Harness]) -> None:
    h = harness(config=sandbox_config(f=_fail("restore_pitr", times=2, at="start", transient=True)))
    h.say("/dr restore database prod -2h")
    _approve_plan(h)
    h.recorder.wait_for("run.succeeded")
    assert "run.paused" not in h.recorder.kinds() and "step.failed" not in h.recorder.kinds()
    assert create_count(h.engine.store, target="rag-engine-prod-pitr-r1") == 1


def test_secrets_in_provider_errors_never_reach_the_timeline(harness: Callable[..., Harness]) -> None:
    secret = "postgres://admin:hunter2@10.0.0.5:5432/docs password=s3cr3t xoxb-1234567890-abcdef"
    h = harness(config=sandbox_config(f=_fail("restore_pitr", times=1, at="start", message=secret)))
    h.say("/dr restore database prod -2h")
    _approve_plan(h)
    paused = h.recorder.wait_for("run.paused")
    assert "admin:«redacted»@10.0.0.5" in paused.text
    h.press("run.paused", "Abort", actor="bob")
    h.recorder.wait_for("run.failed")
    everything = h.engine.export_text(incident_id="INC-1", fmt="json") + h.engine.export_text(
        incident_id="INC-1", fmt="md") + "".join(e.text + str(e.data) for e in h.recorder.events)
    for leaked in ("hunter2", "s3cr3t", "xoxb-1234567890"):
        assert leaked not in everything
    import sqlalchemy as sa

    with h.engine.store.engine.connect() as conn:
        dumped = "".join(str(conn.execute(sa.text(f"SELECT * FROM {table}")).all())
                         for table in ("events", "audit", "steps", "runs"))
    assert "hunter2" not in dumped and "s3cr3t" not in dumped


@pytest.mark.postgres
def test_a_run_on_postgresql_shares_the_database_with_dbos(tmp_path: Path, fresh_pg_url: str) -> None:
    import sqlalchemy as sa

    from bot.config import SANDBOX_CONFIG, Settings, build_config
    from bot.wiring import build_engine, dbos_url, start_engine
    from runbooks.engine import PollPolicy
    from tests.engine_harness import Recorder

    assert dbos_url(fresh_pg_url) == fresh_pg_url
    settings = Settings(drbot_database_url=fresh_pg_url, drbot_sandbox_speed=1e5)
    recorder = Recorder()
    engine = build_engine(settings=settings, config=build_config(SANDBOX_CONFIG, source="test"),
                          notifiers=[recorder], poll=PollPolicy(initial=0.005, factor=1.5, maximum=0.02))
    start_engine(engine, settings=settings, budget_ticker=False)
    try:
        engine.handle(command=engine.parse("/dr restore database prod -1h"), actor="alice")
        recorder.wait_for("approval.requested")
        assert engine.press(action="approve", value="AR-1", actor="bob").public
        recorder.wait_for("run.succeeded", timeout=60)
        with engine.store.engine.connect() as conn:
            schemas = {r[0] for r in conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata"))}
        assert "dbos" in schemas, "DBOS keeps its checkpoints in the same PostgreSQL database"
        assert create_count(engine.store, target="rag-engine-prod-pitr-r1") == 1
        assert engine.store.verify_audit()[1] is None
    finally:
        engine.stop()


def test_every_help_example_of_run_is_accepted(harness: Callable[..., Harness]) -> None:
    from runbooks.grammar import COMMANDS, RunRunbook

    h = harness()
    examples = [e for spec in COMMANDS if spec.command is RunRunbook for e in spec.examples]
    assert examples
    for n, example in enumerate(examples, 1):
        reply = h.say(example.replace(" prod", " staging"))
        assert reply.public, f"{example}: {reply.text}"
        h.settle()
        run = h.engine.store.get_run(f"R-{n}")
        assert run is not None and run.status.value == "succeeded", (example, run)


def test_requester_cancels_a_running_step(harness: Callable[..., Harness]) -> None:
    clock = FakeClock(sleep_step=1.0)
    h = harness(clock=clock, speed=2)  # a ten-minute sandbox restore, polled once a (fake) second
    h.say("/dr restore database prod -2h")
    _approve_plan(h)
    h.recorder.wait_for("step.operation")
    running = next(e for e in h.recorder.events if e.kind == "run.running")
    assert [b.label for b in describe_buttons(running)] == ["Cancel R-1"]
    assert h.engine.press(action="cancel", value="R-1", actor="alice").public
    cancelled = h.recorder.wait_for("run.cancelled", timeout=60)
    assert "cancelled by alice" in cancelled.text
    step = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}["restore"]
    assert step.status.value == "cancelled" and "not stopped" in step.error
    assert not any(s.step_id == "cutover" for s in h.engine.store.steps_for(run_id="R-1")), "nothing after it ran"
    again = h.engine.press(action="cancel", value="R-1", actor="alice")
    assert not again.public and "already ended" in again.text
