"""The Cloud SQL provider through the real discovery client (`sqladmin v1`) against a local HTTP double."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.gcp import build_gcp_provider
from runbooks.errors import ConfigError, PermanentError, TransientError
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_cloudsql import CloudSqlWorld, fake_cloudsql
from tests.test_sandbox import MemoryState

PROJECT, SRC, REPLICA = "demo-proj", "prod-db", "prod-db-replica"
TARGET = f"{SRC}-pitr-r7"
RUN = "R-7"


class Rig:
    def __init__(self, world: CloudSqlWorld, url: str, clock: FakeClock) -> None:
        self.world, self.url, self.clock = world, url, clock
        self.state = MemoryState()

    def provider(self, **extra: Any) -> Provider:
        settings = {"project": PROJECT, "instance": SRC, "region": "us-central1", "replica": {"instance": REPLICA},
                    "endpoint_url": self.url, "credentials": "anonymous", **extra}
        return build_gcp_provider(environment="prod", resource="database", settings=settings, state=self.state,
                                  clock=self.clock)

    def finish(self, provider: Provider, op: Operation) -> tuple[OperationStatus, list[str]]:
        seen: list[str] = []
        for _ in range(20):
            status = provider.poll(operation=op)
            seen.append(status.status)
            if status.done:
                return status, seen
        raise AssertionError(f"{op.id} never finished: {seen}")


@pytest.fixture
def rig() -> Iterator[Rig]:
    clock = FakeClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    with fake_cloudsql(project=PROJECT, now=clock.now) as (world, url):
        world.seed(SRC)
        world.seed(REPLICA, region="us-east1", master=SRC)
        yield Rig(world, url, clock)


def pitr(when: datetime | None) -> dict[str, Any]:
    return {"source": SRC, "target": TARGET, "restore_time": when}


def test_restore_pitr_flows_to_done(rig: Rig) -> None:
    db = rig.provider()
    when = rig.clock.now() - timedelta(hours=2)
    plan = db.plan(action="database.restore_pitr", params=pitr(when))
    assert plan["restorable_window"] == {"earliest": "2026-11-17T12:00:00Z", "latest": "2026-11-24T11:59:00Z"}
    assert plan["restore_time"] == "2026-11-24T10:00:00Z" and "problem" not in plan
    assert db.preflight(action="database.restore_pitr", params=pitr(when)) == []
    op = db.start(action="database.restore_pitr", params=pitr(when), run_id=RUN)
    clone = [body for method, path, body in rig.world.requests if path.endswith("/clone")]
    assert clone == [{"cloneContext": {"destinationInstanceName": TARGET, "pointInTime": "2026-11-24T10:00:00Z"}}]
    status, seen = rig.finish(db, op)
    assert seen[0] == "RUNNING" and status.status == "RUNNABLE" and not status.failed
    assert status.outputs == {"instance": TARGET, "endpoint": rig.world.instances[TARGET]["ipAddresses"][0][
        "ipAddress"], "restore_time": "2026-11-24T10:00:00Z"}


def test_start_is_idempotent_even_after_a_crash(rig: Rig) -> None:
    when = rig.clock.now() - timedelta(hours=2)
    first = rig.provider().start(action="database.restore_pitr", params=pitr(when), run_id=RUN)
    again = rig.provider().start(action="database.restore_pitr", params=pitr(when), run_id=RUN)  # a new process
    assert again == first and rig.world.calls("/clone") == 1
    assert rig.provider().preflight(action="database.restore_pitr", params=pitr(when)) == []  # its own target
    with pytest.raises(PermanentError, match="already restored to 2026-11-24T10:00:00Z, not 2026-11-24T09:00:00Z"):
        rig.provider().start(action="database.restore_pitr", params=pitr(when - timedelta(hours=1)), run_id=RUN)


def test_use_latest_clones_to_the_latest_recovery_time(rig: Rig) -> None:
    db = rig.provider()
    op = db.start(action="database.restore_pitr", params=pitr(None), run_id=RUN)
    assert op.data["restore_time"] == "2026-11-24T11:59:00Z"
    assert rig.finish(db, op)[0].outputs["restore_time"] == "2026-11-24T11:59:00Z"


def test_preflight_refusals_are_sentences(rig: Rig) -> None:
    db = rig.provider()
    missing = db.preflight(action="database.restore_pitr",
                           params={"source": "nope", "target": "nope-pitr-r7", "restore_time": None})
    assert missing == ["Cloud SQL instance `nope` does not exist in project `demo-proj` (HTTP 404); check "
                       "environments.prod.database.instance in drbot.yml or the step's parameters."]
    late = db.preflight(action="database.restore_pitr", params=pitr(rig.clock.now() + timedelta(hours=1)))
    assert late == ["Restore time 2026-11-24T13:00:00Z is outside the restorable window of `prod-db` "
                    "(2026-11-17T12:00:00Z to 2026-11-24T11:59:00Z); pick a time between 2026-11-17T12:00:00Z and "
                    "2026-11-24T11:59:00Z, or use `latest`."]
    rig.world.seed("prod-db-pitr-other")
    taken = db.preflight(action="database.restore_pitr",
                         params={**pitr(None), "target": "prod-db-pitr-other"})
    assert len(taken) == 1 and "`prod-db-pitr-other` already exists" in taken[0]
    with pytest.raises(PermanentError, match="not created by this restore"):
        db.start(action="database.restore_pitr", params={**pitr(None), "target": "prod-db-pitr-other"}, run_id=RUN)
    assert rig.world.calls("/clone") == 0


def test_earliest_bound_falls_back_to_log_retention(rig: Rig) -> None:
    rig.world.omit_earliest = True
    rig.world.instances[SRC]["settings"]["backupConfiguration"]["transactionLogRetentionDays"] = 3
    plan = rig.provider().plan(action="database.restore_pitr", params=pitr(None))
    assert plan["restorable_window"]["earliest"] == "2026-11-21T12:00:00Z"


def test_pitr_disabled_is_refused(rig: Rig) -> None:
    rig.world.seed("no-pitr", pitr=False)
    problems = rig.provider().preflight(action="database.restore_pitr",
                                        params={"source": "no-pitr", "target": "no-pitr-pitr-r7",
                                                "restore_time": None})
    assert len(problems) == 1 and "point-in-time recovery turned off" in problems[0]


def test_failed_operation_surfaces_googles_message(rig: Rig) -> None:
    rig.world.fail_clone("ERROR_RDBMS", "Not enough quota for instances in region us-central1.")
    db = rig.provider()
    status, _ = rig.finish(db, db.start(action="database.restore_pitr", params=pitr(None), run_id=RUN))
    assert status.failed and status.done and status.status == "DONE"
    assert "ERROR_RDBMS: Not enough quota for instances in region us-central1." in status.message
    assert TARGET not in rig.world.instances


@pytest.mark.parametrize("code", [429, 500, 503])
def test_throttling_and_server_errors_are_transient(rig: Rig, code: int) -> None:
    rig.world.fail_next(code, f"/instances/{SRC}")
    with pytest.raises(TransientError, match=f"HTTP {code}") as caught:
        rig.provider().plan(action="database.restore_pitr", params=pitr(None))
    assert caught.value.code == str(code) and caught.value.__cause__ is not None
    assert "problem" not in rig.provider().plan(action="database.restore_pitr", params=pitr(None))  # then fine


def test_forbidden_names_the_permission_and_role(rig: Rig) -> None:
    rig.world.fail_next(403, "/clone")
    with pytest.raises(PermanentError) as caught:
        rig.provider().start(action="database.restore_pitr", params=pitr(None), run_id=RUN)
    assert "`cloudsql.instances.clone` (in roles/cloudsql.admin)" in caught.value.message
    assert not isinstance(caught.value, TransientError)


def test_missing_operation_is_permanent(rig: Rig) -> None:
    db = rig.provider()
    op = Operation(provider="cloudsql", action="restore_pitr", id="x", target=TARGET,
                   data={"operation": "op-gone", "restore_time": "2026-11-24T10:00:00Z"})
    with pytest.raises(PermanentError, match="`op-gone` does not exist"):
        db.poll(operation=op)


def test_latest_backup_clones_without_point_in_time(rig: Rig) -> None:
    db = rig.provider()
    params = {"source": SRC, "target": TARGET}
    assert db.plan(action="database.restore_latest_backup", params=params)["backup_id"] == "1700000002"
    op = db.start(action="database.restore_latest_backup", params=params, run_id=RUN)
    clone = [body for _, path, body in rig.world.requests if path.endswith("/clone")]
    assert clone == [{"cloneContext": {"destinationInstanceName": TARGET}}]
    outputs = rig.finish(db, op)[0].outputs
    assert outputs["backup_id"] == "1700000002" and outputs["instance"] == TARGET


def test_backup_age_reads_the_newest_successful_run(rig: Rig) -> None:
    db = rig.provider()
    op = db.start(action="database.backup_age", params={"source": SRC}, run_id=RUN)
    outputs = db.poll(operation=op).outputs
    assert outputs["age_seconds"] == 6 * 3600 and outputs["latest_restorable_time"] == "2026-11-24T11:59:00Z"


def test_replica_check_and_promotion(rig: Rig) -> None:
    db = rig.provider(replica={"instance": REPLICA, "lag_seconds": 3})
    check = db.poll(operation=db.start(action="database.check_replica", params={"replica": REPLICA}, run_id=RUN))
    assert check.outputs == {"replica_lag_seconds": 3, "status": "replicating", "region": "us-east1"}
    primary = db.preflight(action="database.promote_replica", params={"replica": SRC})
    assert len(primary) == 1 and "is not a read replica" in primary[0]
    op = db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id=RUN)
    assert db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id=RUN) == op
    status, seen = rig.finish(db, op)
    assert seen[0] == "RUNNING" and rig.world.calls("/promoteReplica") == 1
    assert status.outputs["instance"] == REPLICA and status.outputs["replica_lag_seconds"] == 3
    assert "masterInstanceName" not in rig.world.instances[REPLICA]


def test_unknown_lag_is_zero_with_a_note(rig: Rig) -> None:
    db = rig.provider()
    check = db.poll(operation=db.start(action="database.check_replica", params={"replica": REPLICA}, run_id=RUN))
    assert check.outputs["replica_lag_seconds"] == 0 and "does not report replication lag" in check.message


def test_delete_only_removes_drbot_scratch_instances(rig: Rig) -> None:
    db = rig.provider()
    refused = db.preflight(action="database.delete_instance", params={"instance": SRC})
    assert len(refused) == 1 and refused[0].startswith("Refusing to delete `prod-db`")
    with pytest.raises(PermanentError, match="Refusing to delete `prod-db-replica`"):
        db.start(action="database.delete_instance", params={"instance": REPLICA}, run_id=RUN)
    rig.world.seed(TARGET)
    op = db.start(action="database.delete_instance", params={"instance": TARGET}, run_id=RUN)
    status, _ = rig.finish(db, op)
    assert status.outputs == {"deleted": True, "instance": TARGET} and TARGET not in rig.world.instances
    assert [path for method, path, _ in rig.world.requests if method == "DELETE"] == [
        f"/v1/projects/{PROJECT}/instances/{TARGET}"]
    assert {SRC, REPLICA} <= set(rig.world.instances)


def test_factory_refusals(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="Google Cloud has no provider for `dns`"):
        build_gcp_provider(environment="prod", resource="dns", settings={})
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    db = build_gcp_provider(environment="prod", resource="database", settings={"project": PROJECT, "instance": SRC})
    with pytest.raises(PermanentError, match="No Google credentials"):
        db.plan(action="database.restore_pitr", params=pitr(None))


def test_unreachable_endpoint_is_transient() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = build_gcp_provider(environment="prod", resource="database",
                            settings={"project": PROJECT, "instance": SRC, "credentials": "anonymous",
                                      "endpoint_url": f"http://127.0.0.1:{port}/"})
    assert isinstance(db, Provider)
    with pytest.raises(TransientError, match="Could not reach the Cloud SQL Admin API"):
        db.preflight(action="database.restore_pitr", params=pitr(None))
