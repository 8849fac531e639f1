"""The doubles' timed mode: an operation is in progress until the moment T the double was told, done from then on,
and T is recorded — what bench/bench_overhead.py subtracts from drbot's completion event."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.doubles.fake_azure import FakeAzure
from tests.doubles.fake_cloudsql import CloudSqlWorld
from tests.doubles.fake_kube import FakeKube
from tests.doubles.fake_qdrant import FakeQdrant
from tests.doubles.moto_server import MotoServer, moto_server, seed_rds_source, seed_zone
from tests.doubles.timed_aws_proxy import timed_aws_proxy
from tests.doubles.timing import OperationTimer


class Dial:
    """A clock the test turns by hand."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def dial() -> Dial:
    return Dial()


@pytest.fixture
def timer(dial: Dial) -> OperationTimer:
    return OperationTimer(duration=30.0, clock=dial)


def test_timer_refuses_negative_duration_and_reports_progress(dial: Dial, timer: OperationTimer) -> None:
    with pytest.raises(ValueError, match="duration must be >= 0"):
        OperationTimer(duration=-1)
    assert timer.begin("x") == 1030.0
    dial.value = 1015.0
    assert timer.fraction("x") == 0.5 and not timer.done("x")
    assert timer.done("never-begun") and not timer.tracks("never-begun")


def test_cloudsql_clone_runs_until_t(dial: Dial, timer: OperationTimer) -> None:
    world = CloudSqlWorld(project="p", now=lambda: datetime.now(UTC), timer=timer)
    world.seed("src")
    status, op = world.handle("POST", "/v1/projects/p/instances/src/clone",
                              {"cloneContext": {"destinationInstanceName": "dst"}})
    assert status == 200
    name = op["name"]
    assert world.finished_at[name] == 1030.0
    for _ in range(5):  # many polls before T: still running
        assert world.handle("GET", f"/v1/projects/p/operations/{name}", {})[1]["status"] == "RUNNING"
    assert world.instances["dst"]["state"] == "PENDING_CREATE"
    dial.value = 1030.0
    assert world.handle("GET", f"/v1/projects/p/operations/{name}", {})[1]["status"] == "DONE"
    assert world.instances["dst"]["state"] == "RUNNABLE"


def test_azure_operation_in_progress_until_t(dial: Dial, timer: OperationTimer) -> None:
    fake = FakeAzure(url="https://127.0.0.1:1", timer=timer)
    fake.seed_server("rg", "src")
    path = f"/subscriptions/{fake.subscription}/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers"
    status, _, headers = fake.handle("PUT", f"{path}/dst", {"location": "eastus", "properties": {
        "createMode": "PointInTimeRestore", "sourceServerResourceId": fake.server_id("rg", "src")}}, "Bearer t")
    assert status == 202
    op_path = headers["Azure-AsyncOperation"].removeprefix(fake.url)
    op_id = next(iter(fake.finished_at))
    assert fake.finished_at[op_id] == 1030.0
    for _ in range(5):
        assert fake.handle("GET", op_path, {}, "Bearer t")[1]["status"] == "InProgress"
    dial.value = 1031.0
    assert fake.handle("GET", op_path, {}, "Bearer t")[1]["status"] == "Succeeded"
    assert fake.handle("GET", f"{path}/dst", {}, "Bearer t")[1]["properties"]["state"] == "Ready"


def test_kube_restore_and_rollout_end_at_t(dial: Dial, timer: OperationTimer) -> None:
    kube = FakeKube(timer=timer)
    kube.add_backup("velero", "daily", completed="2026-11-24T02:00:00Z")
    kube.add_deployment("app", "api", replicas=2)
    restores = "/apis/velero.io/v1/namespaces/velero/restores"
    body = {"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "r1"},
            "spec": {"backupName": "daily", "includedNamespaces": ["app"]}}
    assert kube.handle("POST", restores, {}, "application/json", body)[0] == 201
    assert kube.finished_at["r1"] == 1030.0
    dial.value = 1015.0
    for _ in range(5):
        read = kube.handle("GET", f"{restores}/r1", {}, "application/json", None)[1]
        assert read["status"]["phase"] == "InProgress"
    assert read["status"]["progress"]["itemsRestored"] == 71  # half of 142 at half-time
    patch = {"spec": {"replicas": 3}}
    deployment = "/apis/apps/v1/namespaces/app/deployments/api"
    assert kube.handle("PATCH", deployment, {}, "application/strategic-merge-patch+json", patch)[0] == 200
    assert kube.finished_at["app/api"] == 1045.0
    dial.value = 1030.0
    assert kube.handle("GET", f"{restores}/r1", {}, "application/json", None)[1]["status"]["phase"] == "Completed"
    status = kube.handle("GET", f"{deployment}/status", {}, "application/json", None)[1]["status"]
    assert status["availableReplicas"] < 3
    dial.value = 1045.0
    status = kube.handle("GET", f"{deployment}/status", {}, "application/json", None)[1]["status"]
    assert status["availableReplicas"] == 3 and status["updatedReplicas"] == 3


def _call(method: str, url: str, body: Any = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_qdrant_recovery_yellow_until_t(dial: Dial, timer: OperationTimer) -> None:
    with FakeQdrant(recovery_polls=1, timer=timer) as qdrant:
        qdrant.add_collection("docs", points_count=10)
        snap = qdrant.add_snapshot("docs", at=datetime.now(UTC) - timedelta(hours=1), points_count=7)
        location = f"{qdrant.url}/collections/docs/snapshots/{snap.name}"
        _call("PUT", f"{qdrant.url}/collections/docs/snapshots/recover?wait=false", {"location": location})
        assert qdrant.finished_at["docs"] == 1030.0
        for _ in range(4):  # recovery_polls=1 would have ended it at the first read
            info = _call("GET", f"{qdrant.url}/collections/docs")["result"]
            assert info["status"] == "yellow" and info["points_count"] == 10
        dial.value = 1030.0
        info = _call("GET", f"{qdrant.url}/collections/docs")["result"]
        assert info["status"] == "green" and info["points_count"] == 7


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def test_aws_proxy_holds_rds_restore_and_route53_change_until_t(moto: MotoServer, dial: Dial,
                                                                timer: OperationTimer) -> None:
    seed_rds_source(moto, "src")
    zone = seed_zone(moto, domain="example.com", record="api.example.com", value="198.51.100.7")
    with timed_aws_proxy(upstream=moto.url, timer=timer) as proxy:
        rds, route53 = MotoServer(proxy.url).client("rds"), MotoServer(proxy.url).client("route53")
        rds.restore_db_instance_to_point_in_time(SourceDBInstanceIdentifier="src", TargetDBInstanceIdentifier="dst",
                                                 UseLatestRestorableTime=True)
        change = route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
            "Action": "UPSERT", "ResourceRecordSet": {"Name": "api.example.com", "Type": "A", "TTL": 60,
                                                      "ResourceRecords": [{"Value": "203.0.113.10"}]}}]})
        change_id = change["ChangeInfo"]["Id"]
        assert change["ChangeInfo"]["Status"] == "PENDING"
        assert proxy.finished_at["dst"] == 1030.0 and proxy.finished_at[change_id.rsplit("/", 1)[-1]] == 1030.0

        def rds_status(client: Any) -> str:
            return str(client.describe_db_instances(DBInstanceIdentifier="dst")["DBInstances"][0]["DBInstanceStatus"])

        assert rds_status(rds) == "creating"
        assert rds_status(moto.client("rds")) == "available"  # moto itself: at once
        assert rds.describe_db_instances(DBInstanceIdentifier="src")["DBInstances"][0]["DBInstanceStatus"] \
            == "available"  # instances the proxy did not see created are passed through untouched
        assert route53.get_change(Id=change_id)["ChangeInfo"]["Status"] == "PENDING"
        dial.value = 1030.0
        assert rds_status(rds) == "available"
        assert route53.get_change(Id=change_id)["ChangeInfo"]["Status"] == "INSYNC"

