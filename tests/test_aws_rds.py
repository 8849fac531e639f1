"""The aws-rds provider against moto in server mode: real boto3 clients, real HTTP, moto's RDS backend.

moto makes restores `available` at once and has no replica lag; the waiting and the window are tested with a
Stubber in test_aws_stubbed.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.aws import AwsRds, build_aws_provider
from runbooks.errors import ConfigError, PermanentError
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.moto_server import DUMMY_CREDENTIALS, MotoServer, moto_server, seed_rds_source
from tests.test_sandbox import MemoryState

SRC = "rag-engine-prod"
SETTINGS = {"instance": SRC, "region": "us-east-1",
            "replica": {"instance": f"{SRC}-replica", "region": "us-east-1", "promote_settle_seconds": 300}}


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


@pytest.fixture
def world(moto: MotoServer) -> dict[str, Any]:
    return seed_rds_source(moto, SRC)


def provider(moto: MotoServer, *, state: MemoryState | None = None, clock: FakeClock | None = None) -> AwsRds:
    return AwsRds(environment="prod", resource="database", settings=SETTINGS, client=moto.client("rds"),
                  cloudwatch=moto.client("cloudwatch"), state=state, clock=clock)


def finish(p: Provider, op: Operation, clock: FakeClock | None = None) -> OperationStatus:
    for _ in range(20):
        status = p.poll(operation=op)
        if status.done:
            return status
        if clock is not None:
            clock.advance(60)
    raise AssertionError(f"{op.id} never finished; last status {status.status}")


def instances(moto: MotoServer) -> dict[str, dict[str, Any]]:
    return {i["DBInstanceIdentifier"]: i for i in moto.client("rds").describe_db_instances()["DBInstances"]}


def test_restore_pitr_runs_plan_preflight_start_poll_and_copies_the_source_settings(
        moto: MotoServer, world: dict[str, Any]) -> None:
    time.sleep(1.1)  # moto's window starts at the creation second: let one whole second pass
    rds = provider(moto)
    latest = moto.client("rds").describe_db_instances(DBInstanceIdentifier=SRC)["DBInstances"][0][
        "LatestRestorableTime"].astimezone(UTC).replace(microsecond=0)
    params = {"source": SRC, "target": f"{SRC}-pitr-r7", "restore_time": latest}
    plan = rds.plan(action="database.restore_pitr", params=params)
    assert plan["restore_time"] == latest.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert set(plan["restorable_window"]) == {"earliest", "latest"} and "problem" not in plan
    assert plan["copied_settings"]["DBSubnetGroupName"] == world["subnet_group"]
    assert rds.preflight(action="database.restore_pitr", params=params) == []

    op = rds.start(action="database.restore_pitr", params=params, run_id="R-7")
    status = finish(rds, op)
    assert status.status == "available" and not status.failed
    assert status.outputs["instance"] == f"{SRC}-pitr-r7"
    assert status.outputs["endpoint"].startswith(f"{SRC}-pitr-r7.")
    assert status.outputs["restore_time"] == plan["restore_time"]
    restored = instances(moto)[f"{SRC}-pitr-r7"]
    assert restored["DBSubnetGroup"]["DBSubnetGroupName"] == world["subnet_group"]
    assert [g["VpcSecurityGroupId"] for g in restored["VpcSecurityGroups"]] == [world["security_group"]]
    assert restored["DBParameterGroups"][0]["DBParameterGroupName"] == world["parameter_group"]
    assert restored["DBInstanceClass"] == "db.r6g.large" and restored["MultiAZ"] is True


def test_start_twice_with_the_same_run_attaches_to_one_instance(moto: MotoServer, world: dict[str, Any]) -> None:
    rds = provider(moto)
    params = {"source": SRC, "target": f"{SRC}-pitr-r8", "restore_time": None}
    first = rds.start(action="database.restore_pitr", params=params, run_id="R-8")
    second = rds.start(action="database.restore_pitr", params=params, run_id="R-8")
    assert first == second
    assert sorted(instances(moto)) == [SRC, f"{SRC}-pitr-r8"]
    assert finish(rds, second).outputs["restore_time"] == first.data["restore_time"]
    # this run's own target is no obstacle for preflight; another run's start on the same name is refused
    assert rds.preflight(action="database.restore_pitr", params=params) == []
    with pytest.raises(PermanentError, match="was not created by this restore"):
        rds.start(action="database.restore_pitr", params=params, run_id="R-9")


def test_preflight_refuses_missing_source_foreign_target_and_future_time(
        moto: MotoServer, world: dict[str, Any]) -> None:
    rds = provider(moto)
    missing = rds.preflight(action="database.restore_pitr",
                            params={"source": "nope", "target": "nope-pitr-r1", "restore_time": None})
    assert len(missing) == 1 and "`nope` does not exist" in missing[0] and "environments.prod.database" in missing[0]
    moto.client("rds").create_db_instance(DBInstanceIdentifier=f"{SRC}-pitr-r1", Engine="postgres",
                                          DBInstanceClass="db.t3.micro", AllocatedStorage=20)
    future = datetime.now(UTC) + timedelta(days=3)
    problems = rds.preflight(action="database.restore_pitr",
                             params={"source": SRC, "target": f"{SRC}-pitr-r1", "restore_time": future})
    assert any("outside the restorable window" in p and "pick a time between" in p for p in problems)
    assert any("already exists and was not created by drbot" in p for p in problems)
    with pytest.raises(PermanentError, match="outside the restorable window"):
        rds.start(action="database.restore_pitr",
                  params={"source": SRC, "target": f"{SRC}-pitr-r2", "restore_time": future}, run_id="R-2")
    assert f"{SRC}-pitr-r2" not in instances(moto)


def test_restore_latest_backup_names_the_newest_automated_snapshot(moto: MotoServer, world: dict[str, Any]) -> None:
    rds = provider(moto)
    params = {"source": SRC, "target": f"{SRC}-verify-r3"}
    plan = rds.plan(action="database.restore_latest_backup", params=params)
    assert plan["backup_id"].startswith(f"rds:{SRC}-")
    status = finish(rds, rds.start(action="database.restore_latest_backup", params=params, run_id="R-3"))
    assert status.outputs["backup_id"] == plan["backup_id"]
    assert set(status.outputs) == {"instance", "endpoint", "restore_time", "backup_id"}


def test_replica_check_and_promotion_capture_the_lag_before_promoting(moto: MotoServer,
                                                                       world: dict[str, Any]) -> None:
    replica = f"{SRC}-replica"
    moto.client("rds").create_db_instance_read_replica(DBInstanceIdentifier=replica, SourceDBInstanceIdentifier=SRC)
    moto.client("cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "ReplicaLag", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": replica}],
        "Value": 7.0, "Timestamp": datetime.now(UTC)}])
    clock, state = FakeClock(), MemoryState()
    rds = provider(moto, state=state, clock=clock)
    check = finish(rds, rds.start(action="database.check_replica", params={"replica": replica}, run_id="R-4"))
    assert check.outputs == {"replica_lag_seconds": 7, "status": "replicating", "region": "us-east-1"}
    assert rds.preflight(action="database.promote_replica", params={"replica": SRC})[0].startswith(
        f"`{SRC}` is not a read replica")

    op = rds.start(action="database.promote_replica", params={"replica": replica}, run_id="R-4")
    assert not rds.poll(operation=op).done  # moto keeps the source name: wait for the settle time
    moto.client("cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "ReplicaLag", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": replica}],
        "Value": 0.0, "Timestamp": datetime.now(UTC) + timedelta(seconds=5)}])
    again = rds.start(action="database.promote_replica", params={"replica": replica}, run_id="R-4")
    assert again == op  # remembered: no second promotion, and the lag is the one read before promoting
    status = finish(rds, again, clock)
    assert status.outputs == {"instance": replica, "endpoint": instances(moto)[replica]["Endpoint"]["Address"],
                              "replica_lag_seconds": 7}


def test_check_replica_without_a_lag_metric_reports_zero_with_a_note(moto: MotoServer,
                                                                      world: dict[str, Any]) -> None:
    replica = f"{SRC}-replica"
    moto.client("rds").create_db_instance_read_replica(DBInstanceIdentifier=replica, SourceDBInstanceIdentifier=SRC)
    status = finish(provider(moto), provider(moto).start(action="database.check_replica",
                                                          params={"replica": replica}, run_id="R-5"))
    assert status.outputs["replica_lag_seconds"] == 0 and "no ReplicaLag datapoint" in status.message


def test_delete_instance_removes_only_drbot_scratch_instances(moto: MotoServer, world: dict[str, Any]) -> None:
    rds = provider(moto)
    for name in (SRC, f"{SRC}-replica", "billing-db"):
        problems = rds.preflight(action="database.delete_instance", params={"instance": name, "source": SRC})
        assert problems and problems[0].startswith(f"Refusing to delete `{name}`")
        with pytest.raises(PermanentError, match="not a scratch instance"):
            rds.start(action="database.delete_instance", params={"instance": name, "source": SRC}, run_id="R-6")
    scratch = f"{SRC}-verify-r6"
    finish(rds, rds.start(action="database.restore_latest_backup", params={"source": SRC, "target": scratch},
                          run_id="R-6"))
    params = {"instance": scratch, "source": SRC}
    assert rds.preflight(action="database.delete_instance", params=params) == []
    status = finish(rds, rds.start(action="database.delete_instance", params=params, run_id="R-6"))
    assert status.outputs["deleted"] is True and scratch not in instances(moto) and SRC in instances(moto)
    assert finish(rds, rds.start(action="database.delete_instance", params=params, run_id="R-6")).outputs[
        "deleted"] is True  # already gone: attach, not fail


def test_backup_age_reads_the_newest_automated_snapshot(moto: MotoServer, world: dict[str, Any]) -> None:
    rds = provider(moto)
    status = finish(rds, rds.start(action="database.backup_age", params={"source": SRC}, run_id="R-1"))
    taken = datetime.fromisoformat(status.outputs["newest_backup_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - taken).total_seconds()) < 120
    assert 0 <= status.outputs["age_seconds"] < 120 and status.outputs["latest_restorable_time"].endswith("Z")
    assert rds.preflight(action="database.backup_age", params={"source": "nope"})[0].startswith(
        "RDS instance `nope` does not exist")


def test_the_factory_picks_by_resource_and_builds_its_client_from_settings(
        moto: MotoServer, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name.upper(), value)  # the standard credential chain, as in production
    settings = {**SETTINGS, "endpoint_url": moto.url}
    built = {r: build_aws_provider(environment="prod", resource=r, settings=settings)
             for r in ("database", "dns", "objects")}
    assert {r: p.kind for r, p in built.items()} == {"database": "aws-rds", "dns": "route53", "objects": "s3"}
    plan = built["database"].plan(action="database.backup_age", params={"source": SRC})
    assert plan == {"source": SRC}
    assert built["database"].preflight(action="database.backup_age", params={"source": SRC}) == []
    with pytest.raises(ConfigError, match="AWS has no provider for `kubernetes`"):
        build_aws_provider(environment="prod", resource="kubernetes", settings={})
