"""`recovery_point()` (the RPO monitor's read, `runbooks.ports.RecoveryPointReader`) of Cloud SQL, Azure PostgreSQL,
Kubernetes/Velero and Qdrant, each through its real client against its local double: the normal case, every cause,
the failed backups' ids, the calls made (counted at the double) and a ProviderError for what does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.azure import AzurePostgres
from integrations.gcp import build_gcp_provider
from integrations.kubernetes import KubernetesProvider
from integrations.qdrant import QdrantProvider, build_qdrant_provider
from runbooks.errors import PermanentError, ProviderError, TransientError
from runbooks.ports import RecoveryPoint, RecoveryPointReader
from tests.doubles.clock import FakeClock
from tests.doubles.fake_azure import FakeAzure, fake_azure
from tests.doubles.fake_cloudsql import CloudSqlWorld, fake_cloudsql, rfc3339
from tests.doubles.fake_kube import FakeKube
from tests.doubles.fake_qdrant import FakeQdrant
from tests.test_sandbox import MemoryState

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# qdrant-client rightly warns that an api-key over plain http is unsafe; its double has no TLS.
pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


def read(provider: object) -> RecoveryPoint:
    assert isinstance(provider, RecoveryPointReader)
    point = provider.recovery_point()
    assert point.calls <= 2
    return point


# ============================================================================================== Cloud SQL

PROJECT, DB = "demo-proj", "prod-db"


class Sql:
    def __init__(self, world: CloudSqlWorld, url: str, clock: FakeClock) -> None:
        self.world, self.url, self.clock = world, url, clock

    def provider(self, instance: str = DB) -> Any:
        settings = {"project": PROJECT, "instance": instance, "endpoint_url": self.url, "credentials": "anonymous"}
        return build_gcp_provider(environment="prod", resource="database", settings=settings, state=MemoryState(),
                                  clock=self.clock)

    def backups(self, **changes: Any) -> None:
        self.world.instances[DB]["settings"]["backupConfiguration"].update(changes)

    def read(self) -> RecoveryPoint:
        self.world.requests.clear()
        point = read(self.provider())
        assert len(self.world.requests) == point.calls, self.world.requests
        assert all(method == "GET" for method, _, _ in self.world.requests)
        return point


@pytest.fixture
def sql() -> Iterator[Sql]:
    clock = FakeClock(NOW)
    with fake_cloudsql(project=PROJECT, now=clock.now) as (world, url):
        world.seed(DB)  # runs 1700000001 (30 h ago), 1700000002 (6 h ago) SUCCESSFUL; 1700000003 (1 h ago) FAILED
        yield Sql(world, url, clock)


def test_cloudsql_pitr_on_is_its_latest_recovery_time(sql: Sql) -> None:
    point = sql.read()
    assert point.newest == sql.world.window()[1] and point.calls == 2
    assert point.what == "latest recovery time (point-in-time recovery on)"
    assert [path.rsplit("/", 1)[-1] for _, path, _ in sql.world.requests] == [DB, "getLatestRecoveryTime"]


def test_cloudsql_pitr_off_is_the_newest_successful_run(sql: Sql) -> None:
    sql.backups(pointInTimeRecoveryEnabled=False)
    point = sql.read()
    assert point.newest == NOW - timedelta(hours=6) and point.what == "backup run 1700000002 (SUCCESSFUL)"
    assert point.failed == ("1700000003",) and point.cause == "the newest backup run 1700000003 FAILED"


def test_cloudsql_healthy_runs_have_no_cause_and_runs_are_ordered_by_time(sql: Sql) -> None:
    sql.backups(pointInTimeRecoveryEnabled=False)
    sql.world.backups[DB] = [  # listed out of order; the newest run has only a windowStartTime
        {"id": "old", "status": "SUCCESSFUL", "endTime": rfc3339(NOW - timedelta(days=2))},
        {"id": "newest", "status": "SUCCESSFUL", "windowStartTime": rfc3339(NOW - timedelta(hours=2))},
        {"id": "older-failure", "status": "FAILED", "endTime": rfc3339(NOW - timedelta(days=1))},
        {"id": "running", "status": "RUNNING", "startTime": rfc3339(NOW - timedelta(minutes=1))},
    ]
    point = sql.read()
    assert point.newest == NOW - timedelta(hours=2) and point.what == "backup run newest (SUCCESSFUL)"
    assert point.failed == ("older-failure",) and point.cause == ""


def test_cloudsql_automated_backups_off_is_none_in_one_call(sql: Sql) -> None:
    sql.backups(enabled=False, pointInTimeRecoveryEnabled=False)
    point = sql.read()
    assert point.newest is None and point.calls == 1 and point.failed == ()
    assert point.cause == f"automated backups are off for {DB}"


def test_cloudsql_pitr_on_without_automated_backups_still_reads_the_latest_recovery_time(sql: Sql) -> None:
    sql.backups(enabled=False)
    sql.world.backups[DB] = []
    point = sql.read()
    assert point.newest == sql.world.window()[1] and point.calls == 2


def test_cloudsql_no_successful_run(sql: Sql) -> None:
    sql.backups(pointInTimeRecoveryEnabled=False)
    sql.world.backups[DB] = []
    point = sql.read()
    assert point.newest is None and point.failed == () and "has no successful backup run" in point.cause
    sql.world.backups[DB] = [{"id": "f1", "status": "FAILED", "endTime": rfc3339(NOW - timedelta(hours=3))},
                             {"id": "f2", "status": "FAILED", "endTime": rfc3339(NOW - timedelta(hours=1))}]
    point = sql.read()
    assert point.newest is None and point.failed == ("f2", "f1") and point.cause == "the newest backup run f2 FAILED"


def test_cloudsql_errors_are_provider_errors(sql: Sql) -> None:
    with pytest.raises(PermanentError, match="does not exist") as missing:
        sql.provider("nope").recovery_point()
    assert missing.value.code == "404"
    sql.world.fail_next(503, "getLatestRecoveryTime")
    with pytest.raises(TransientError):
        sql.provider().recovery_point()
    sql.backups(pointInTimeRecoveryEnabled=False)
    sql.world.fail_next(503, "backupRuns")
    with pytest.raises(TransientError):
        sql.provider().recovery_point()
    with pytest.raises(ProviderError, match="instance is missing"):
        read(build_gcp_provider(environment="prod", resource="database", settings={"project": PROJECT},
                                clock=sql.clock))


# ============================================================================================== Azure PostgreSQL

RG, PG = "dr-rg", "prod-pg"


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    with fake_azure() as served:
        served.seed_server(RG, PG, earliest=NOW - timedelta(days=7))
        yield served


def pg(fake: FakeAzure, server: str = PG) -> AzurePostgres:
    return AzurePostgres(environment="prod", resource="database", client=fake.client(), clock=FakeClock(NOW),
                         settings={"subscription": fake.subscription, "resource_group": RG, "server": server})


def read_pg(fake: FakeAzure) -> RecoveryPoint:
    fake.requests.clear()
    point = read(pg(fake))
    assert [method for method, *_ in fake.requests] == ["GET"] * point.calls
    return point


def test_azure_ready_server_restores_to_now(azure: FakeAzure) -> None:
    point = read_pg(azure)
    assert point.newest == NOW and point.calls == 1 and point.cause == "" and point.failed == ()
    assert point.what == "continuous backup (earliest restore 2026-11-17T12:00:00Z, retention 7 days)"


@pytest.mark.parametrize("state", ["Stopped", "Disabled", "Provisioning"])
def test_azure_server_not_ready_has_no_point(azure: FakeAzure, state: str) -> None:
    azure.servers[(RG, PG)]["properties"]["state"] = state
    point = read_pg(azure)
    assert point.newest is None and point.calls == 1
    assert point.cause == f"server {PG} is {state}, not Ready, so its WAL is not being archived"


@pytest.mark.parametrize("field", ["earliestRestoreDate", "backupRetentionDays"])
def test_azure_server_without_backup_has_no_point(azure: FakeAzure, field: str) -> None:
    del azure.servers[(RG, PG)]["properties"]["backup"][field]
    point = read_pg(azure)
    assert point.newest is None
    assert point.cause == f"server {PG} is Ready but reports no backup.{field}: it has no backup yet"


def test_azure_errors_are_provider_errors(azure: FakeAzure) -> None:
    with pytest.raises(PermanentError, match="does not exist") as missing:
        pg(azure, "nope").recovery_point()
    assert missing.value.code == "ResourceNotFound"
    azure.inject("GET", 500)
    with pytest.raises(TransientError):
        pg(azure).recovery_point()


# ============================================================================================== Kubernetes / Velero

VELERO = "velero"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        for day in (22, 23, 24):
            fake.add_backup(VELERO, f"daily-202611{day}020000", completed=f"2026-11-{day}T02:04:00Z")
        fake.add_backup(VELERO, "hourly-20261124103000", phase="Failed", completed="2026-11-24T10:31:00Z")
        fake.add_backup(VELERO, "hourly-20261124113000", phase="PartiallyFailed", completed="2026-11-24T11:32:00Z")
        yield fake


def k8s(fake: FakeKube, namespace: str = VELERO) -> KubernetesProvider:
    return KubernetesProvider(environment="prod", resource="kubernetes", client=fake.api_client(),
                              settings={"context": "prod", "velero_namespace": namespace}, clock=FakeClock(NOW))


def read_k8s(fake: FakeKube, namespace: str = VELERO) -> RecoveryPoint:
    before = len(fake.requests)
    point = read(k8s(fake, namespace))
    made = fake.requests[before:]
    assert len(made) == point.calls == 1
    assert made[0].method == "GET" and made[0].path == f"/apis/velero.io/v1/namespaces/{namespace}/backups"
    return point


def test_velero_newest_completed_backup_and_the_failed_ones(kube: FakeKube) -> None:
    point = read_k8s(kube)
    assert point.newest == datetime(2026, 11, 24, 2, 4, tzinfo=UTC)
    assert point.what == "Velero backup daily-20261124020000 (Completed)"
    assert point.failed == ("hourly-20261124113000", "hourly-20261124103000")
    assert point.cause == "the newest Velero backup hourly-20261124113000 PartiallyFailed"


def test_velero_a_newer_completed_backup_clears_the_cause_not_the_failures(kube: FakeKube) -> None:
    kube.add_backup(VELERO, "hourly-20261124120000", completed="2026-11-24T12:01:00Z")
    kube.add_backup(VELERO, "hourly-20261124123000", phase="InProgress", completed="2026-11-24T12:30:00Z")
    point = read_k8s(kube)
    assert point.newest == datetime(2026, 11, 24, 12, 1, tzinfo=UTC)
    assert point.what == "Velero backup hourly-20261124120000 (Completed)" and point.cause == ""
    assert point.failed == ("hourly-20261124113000", "hourly-20261124103000")


def test_velero_without_a_completed_backup(kube: FakeKube) -> None:
    point = read_k8s(kube, "empty")
    assert point.newest is None and point.failed == ()
    assert point.cause == "no Completed Velero backup in namespace empty"
    kube.add_backup("broken", "daily-20261124020000", phase="Failed", completed="2026-11-24T02:04:00Z")
    point = read_k8s(kube, "broken")
    assert point.newest is None and point.failed == ("daily-20261124020000",)
    assert point.cause == ("no Completed Velero backup in namespace broken; the newest Velero backup "
                           "daily-20261124020000 Failed")


def test_velero_errors_are_provider_errors(kube: FakeKube) -> None:
    kube.fail("GET", "/backups", 404, message='the server could not find the requested resource')
    with pytest.raises(PermanentError, match="Velero is not installed in namespace `velero`"):
        k8s(kube).recovery_point()
    kube.fail("GET", "/backups", 500)
    with pytest.raises(TransientError):
        k8s(kube).recovery_point()
    kube.fail("GET", "/backups", 403)
    with pytest.raises(PermanentError):
        k8s(kube).recovery_point()


# ============================================================================================== Qdrant

QKEY = "qk-test-7f3a9c1e5b"


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant(api_key=QKEY) as server:
        server.add_collection("documents", points_count=221_184)
        server.add_collection("empty", points_count=0)
        yield server


def vectors(fake: FakeQdrant, collection: str = "documents", key: str = QKEY) -> QdrantProvider:
    built = build_qdrant_provider(environment="prod", resource="vectors", state=MemoryState(), clock=FakeClock(NOW),
                                  settings={"url": fake.url, "collection": collection, "api_key_env": "QDRANT_KEY"},
                                  environ={"QDRANT_KEY": key})
    assert isinstance(built, QdrantProvider)
    return built


def read_qdrant(fake: FakeQdrant, collection: str = "documents") -> RecoveryPoint:
    before = len(fake.requests)
    point = read(vectors(fake, collection))
    made = fake.requests[before:]
    assert [(r.method, r.path) for r in made] == [("GET", f"/collections/{collection}/snapshots")] * point.calls
    assert point.calls == 1
    return point


def test_qdrant_newest_snapshot(qdrant: FakeQdrant) -> None:
    newest = qdrant.add_snapshot("documents", at=NOW - timedelta(hours=11), points_count=221_100)
    qdrant.add_snapshot("documents", at=NOW - timedelta(days=2), points_count=220_900)
    point = read_qdrant(qdrant)
    assert point.newest == NOW - timedelta(hours=11) and point.what == f"snapshot {newest.name}"
    assert point.cause == "" and point.failed == ()


def test_qdrant_collection_without_snapshot(qdrant: FakeQdrant) -> None:
    point = read_qdrant(qdrant, "empty")
    assert point.newest is None and point.cause == "the collection empty has no snapshot"


def test_qdrant_errors_are_provider_errors(qdrant: FakeQdrant) -> None:
    with pytest.raises(PermanentError, match="Collection `nope` doesn't exist") as missing:
        vectors(qdrant, "nope").recovery_point()
    assert missing.value.code == "404"
    with pytest.raises(PermanentError, match="refused drbot's credentials") as refused:
        vectors(qdrant, key="wrong-key").recovery_point()
    assert "wrong-key" not in refused.value.message
    qdrant.fail("GET", r"/snapshots$", status=503)
    with pytest.raises(TransientError):
        vectors(qdrant).recovery_point()
