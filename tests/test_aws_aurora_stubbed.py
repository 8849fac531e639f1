"""What moto cannot show about aws-aurora, on a real boto3 client with `botocore.stub.Stubber`: a restored cluster
that is `creating` before `available`, the writer created only then and followed through its own states, a
restorable window that is not "now", the exact restore request, throttling, and AWS refusing the writer early."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from integrations.aws.aurora import AuroraProvider
from runbooks.errors import PermanentError, TransientError
from tests.doubles.clock import FakeClock

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SRC, TARGET = "rag-engine-prod", "rag-engine-prod-pitr-r1"
WRITER = f"{TARGET}-writer"
EARLIEST, LATEST = NOW - timedelta(days=5, hours=3), NOW - timedelta(minutes=5)
OURS = [{"Key": "drbot:run", "Value": "R-1"}, {"Key": "drbot:source", "Value": SRC},
        {"Key": "drbot:restore-time", "Value": "2026-11-24T11:55:00Z"}]


@pytest.fixture
def aurora() -> Iterator[tuple[AuroraProvider, Stubber]]:
    client = boto3.client("rds", region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    with Stubber(client) as stub:
        yield AuroraProvider(environment="prod", resource="database",
                             settings={"cluster": SRC, "instance": SRC, "region": "us-west-2"},
                             client=client, clock=FakeClock(NOW)), stub
        stub.assert_no_pending_responses()


def cluster(name: str, status: str = "available", *, tags: list[dict[str, str]] | None = None,
            writer: str | None = None, **extra: Any) -> dict[str, Any]:
    members = [{"DBInstanceIdentifier": writer, "IsClusterWriter": True}] if writer else []
    return {"DBClusterIdentifier": name, "Status": status, "Engine": "aurora-postgresql",
            "EarliestRestorableTime": EARLIEST, "LatestRestorableTime": LATEST, "DBSubnetGroup": "prod-subnets",
            "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-1", "Status": "active"}],
            "DBClusterParameterGroup": "prod-cluster-params", "Port": 5432, "KmsKeyId": "key-1",
            "EngineMode": "provisioned", "Endpoint": f"{name}.cluster-abc.us-west-2.rds.amazonaws.com",
            "DBClusterMembers": members, "TagList": tags or [], **extra}


def describe(stub: Stubber, name: str, status: str = "available", **kwargs: Any) -> None:
    stub.add_response("describe_db_clusters", {"DBClusters": [cluster(name, status, **kwargs)]},
                      {"DBClusterIdentifier": name})


def source(stub: Stubber) -> None:
    describe(stub, SRC, writer="rag-engine-prod-a",
             ServerlessV2ScalingConfiguration={"MinCapacity": 0.5, "MaxCapacity": 16.0})


def instance(stub: Stubber, name: str, status: str = "available", klass: str = "db.r6g.xlarge") -> None:
    stub.add_response("describe_db_instances", {"DBInstances": [{
        "DBInstanceIdentifier": name, "DBInstanceStatus": status, "DBInstanceClass": klass,
        "Engine": "aurora-postgresql", "DBClusterIdentifier": TARGET if name == WRITER else SRC}]},
        {"DBInstanceIdentifier": name})


def cluster_missing(stub: Stubber, name: str) -> None:
    stub.add_client_error("describe_db_clusters", service_error_code="DBClusterNotFoundFault",
                          service_message=f"DBCluster {name} not found.", http_status_code=404,
                          expected_params={"DBClusterIdentifier": name})


def instance_missing(stub: Stubber, name: str) -> None:
    stub.add_client_error("describe_db_instances", service_error_code="DBInstanceNotFound",
                          service_message=f"DBInstance {name} not found.", http_status_code=404,
                          expected_params={"DBInstanceIdentifier": name})


RESTORE = {"SourceDBClusterIdentifier": SRC, "DBClusterIdentifier": TARGET, "UseLatestRestorableTime": True,
           "DBSubnetGroupName": "prod-subnets", "VpcSecurityGroupIds": ["sg-1"],
           "DBClusterParameterGroupName": "prod-cluster-params", "Port": 5432, "KmsKeyId": "key-1",
           "EngineMode": "provisioned", "ServerlessV2ScalingConfiguration": {"MinCapacity": 0.5, "MaxCapacity": 16.0},
           "Tags": OURS}


def test_restore_waits_for_the_cluster_then_creates_and_follows_the_writer(
        aurora: tuple[AuroraProvider, Stubber]) -> None:
    provider, stub = aurora
    cluster_missing(stub, TARGET)
    source(stub)
    instance(stub, "rag-engine-prod-a")  # the source writer's class
    stub.add_response("restore_db_cluster_to_point_in_time",
                      {"DBCluster": cluster(TARGET, "creating", tags=OURS)}, RESTORE)
    op = provider.start(action="database.restore_pitr",
                        params={"source": SRC, "target": TARGET, "restore_time": None}, run_id="R-1")
    assert op.data == {"restore_time": "2026-11-24T11:55:00Z", "writer": WRITER, "writer_class": "db.r6g.xlarge",
                       "engine": "aurora-postgresql", "run": "R-1"}

    seen: list[str] = []
    for word in ("creating", "creating"):  # no writer may be created while the cluster is creating
        describe(stub, TARGET, word, tags=OURS)
    describe(stub, TARGET, tags=OURS)
    instance_missing(stub, WRITER)
    stub.add_response("create_db_instance", {"DBInstance": {"DBInstanceIdentifier": WRITER}}, {
        "DBInstanceIdentifier": WRITER, "DBClusterIdentifier": TARGET, "Engine": "aurora-postgresql",
        "DBInstanceClass": "db.r6g.xlarge",
        "Tags": [{"Key": "drbot:run", "Value": "R-1"}, {"Key": "drbot:source", "Value": TARGET}]})
    instance(stub, WRITER, "creating")
    for word in ("backing-up", "available"):
        describe(stub, TARGET, tags=OURS, writer=WRITER)
        instance(stub, WRITER, word)
    for _ in range(5):
        status = provider.poll(operation=op)
        seen.append(status.status)
        if status.done:
            break
    assert seen == ["cluster creating", "cluster creating", "writer creating", "writer backing-up", "available"]
    assert status.outputs == {"instance": TARGET, "endpoint": f"{TARGET}.cluster-abc.us-west-2.rds.amazonaws.com",
                              "port": 5432, "restore_time": "2026-11-24T11:55:00Z", "writer": WRITER}

    describe(stub, TARGET, tags=OURS, writer=WRITER)
    instance(stub, WRITER)
    assert provider.verify(action="database.restore_pitr", params={}, outputs=status.outputs) == []
    describe(stub, TARGET, tags=OURS, writer="someone-else")
    instance(stub, WRITER)
    assert provider.verify(action="database.restore_pitr", params={}, outputs=status.outputs) == [
        f"`{WRITER}` is not the writer of `{TARGET}` (IsClusterWriter is false; the writer is `someone-else`); "
        "the endpoint would not accept writes."]


def test_a_restore_time_outside_the_window_is_refused_with_the_window(
        aurora: tuple[AuroraProvider, Stubber]) -> None:
    provider, stub = aurora
    early = EARLIEST - timedelta(hours=1)
    params = {"source": SRC, "target": TARGET, "restore_time": early}
    source(stub)
    instance(stub, "rag-engine-prod-a")
    cluster_missing(stub, TARGET)
    instance_missing(stub, WRITER)
    assert provider.preflight(action="database.restore_pitr", params=params) == [
        "Restore time 2026-11-19T08:00:00Z is outside the restorable window of `rag-engine-prod` "
        "(2026-11-19T09:00:00Z to 2026-11-24T11:55:00Z); pick a time between 2026-11-19T09:00:00Z and "
        "2026-11-24T11:55:00Z, or use `latest`."]
    cluster_missing(stub, TARGET)
    source(stub)  # and start refuses before any restore call
    with pytest.raises(PermanentError, match="outside the restorable window") as refused:
        provider.start(action="database.restore_pitr", params=params, run_id="R-1")
    assert refused.value.code == "InvalidRestoreTime"


def test_a_time_inside_the_window_is_sent_as_restore_to_time(aurora: tuple[AuroraProvider, Stubber]) -> None:
    provider, stub = aurora
    wanted = NOW - timedelta(hours=2)
    cluster_missing(stub, TARGET)
    source(stub)
    instance(stub, "rag-engine-prod-a")
    request = {k: v for k, v in RESTORE.items() if k != "UseLatestRestorableTime"}
    request["RestoreToTime"] = wanted
    request["Tags"] = [*OURS[:2], {"Key": "drbot:restore-time", "Value": "2026-11-24T10:00:00Z"}]
    stub.add_response("restore_db_cluster_to_point_in_time", {"DBCluster": cluster(TARGET, "creating")}, request)
    op = provider.start(action="database.restore_pitr", params={"source": SRC, "target": TARGET,
                                                                 "restore_time": wanted}, run_id="R-1")
    assert op.data["restore_time"] == "2026-11-24T10:00:00Z"


def test_throttling_is_transient_and_the_retry_restores_once(aurora: tuple[AuroraProvider, Stubber]) -> None:
    provider, stub = aurora
    params = {"source": SRC, "target": TARGET, "restore_time": None}
    cluster_missing(stub, TARGET)
    source(stub)
    instance(stub, "rag-engine-prod-a")
    stub.add_client_error("restore_db_cluster_to_point_in_time", service_error_code="Throttling",
                          service_message="Rate exceeded", http_status_code=400)
    with pytest.raises(TransientError, match="AWS throttled drbot while restoring Aurora cluster"):
        provider.start(action="database.restore_pitr", params=params, run_id="R-1")
    cluster_missing(stub, TARGET)  # the engine's retry: nothing was created, so it restores now
    source(stub)
    instance(stub, "rag-engine-prod-a")
    stub.add_response("restore_db_cluster_to_point_in_time", {"DBCluster": cluster(TARGET, "creating")}, RESTORE)
    op = provider.start(action="database.restore_pitr", params=params, run_id="R-1")
    assert op.target == TARGET
    stub.add_client_error("describe_db_clusters", service_error_code="Throttling", http_status_code=400,
                          expected_params={"DBClusterIdentifier": TARGET})
    with pytest.raises(TransientError, match="describing Aurora cluster"):
        provider.poll(operation=op)  # a throttled wait is retried by the engine too


def test_aws_refusing_the_writer_early_keeps_waiting(aurora: tuple[AuroraProvider, Stubber]) -> None:
    provider, stub = aurora
    describe(stub, TARGET, tags=OURS)  # a re-start after a crash attaches to this run's cluster
    instance_missing(stub, WRITER)
    source(stub)
    instance(stub, "rag-engine-prod-a")
    instance_missing(stub, WRITER)
    stub.add_client_error("create_db_instance", service_error_code="InvalidDBClusterStateFault",
                          service_message="DB cluster is not in available state", http_status_code=400)
    op = provider.start(action="database.restore_pitr",
                        params={"source": SRC, "target": TARGET, "restore_time": None}, run_id="R-1")
    assert op.data["restore_time"] == "2026-11-24T11:55:00Z"
    describe(stub, TARGET, tags=OURS)
    instance_missing(stub, WRITER)
    stub.add_client_error("create_db_instance", service_error_code="InvalidDBClusterStateFault",
                          http_status_code=400)
    status = provider.poll(operation=op)
    assert (status.done, status.status) == (False, "writer requested")


def test_a_failed_cluster_fails_the_step_with_awss_word(aurora: tuple[AuroraProvider, Stubber]) -> None:
    provider, stub = aurora
    describe(stub, TARGET, tags=OURS)
    instance(stub, WRITER, "creating")  # attach: the writer exists, its class is taken from it
    instance(stub, WRITER, "creating")
    op = provider.start(action="database.restore_pitr",
                        params={"source": SRC, "target": TARGET, "restore_time": None}, run_id="R-1")
    describe(stub, TARGET, "incompatible-parameters", tags=OURS)
    status = provider.poll(operation=op)
    assert status.done and status.failed and status.status == "cluster incompatible-parameters"
    assert "Check its events in the RDS console" in status.message
