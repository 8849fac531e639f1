"""The Azure PostgreSQL provider through the real SDK against the TLS fake: restores followed to Ready, attach on a
second start, preflight sentences, failed operations, and SDK errors mapped into drbot's exception tree."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.azure import AzurePostgres, build_azure_provider
from runbooks.errors import ConfigError, PermanentError, TransientError
from runbooks.ports import Operation, OperationStatus
from tests.doubles.clock import FakeClock
from tests.doubles.fake_azure import FakeAzure, fake_azure
from tests.test_sandbox import MemoryState

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EARLIEST = NOW - timedelta(days=7)
RG, SRC, REPLICA, TARGET = "dr-rg", "prod-pg", "prod-pg-dr", "prod-pg-pitr-r1"


@pytest.fixture
def fake() -> Iterator[FakeAzure]:
    with fake_azure() as served:
        served.seed_server(RG, SRC, earliest=EARLIEST)
        served.seed_server(RG, REPLICA, location="westus", role="AsyncReplica")
        yield served


def settings(fake: FakeAzure, **extra: Any) -> dict[str, Any]:
    return {"subscription": fake.subscription, "resource_group": RG, "server": SRC, "location": "eastus",
            "replica": {"server": REPLICA}, **extra}


def provider(fake: FakeAzure, *, state: MemoryState | None = None, client: Any = None, **extra: Any) -> AzurePostgres:
    return AzurePostgres(environment="prod", resource="database", settings=settings(fake, **extra),
                         client=client or fake.client(), state=state or MemoryState(), clock=FakeClock(NOW))


def finish(db: AzurePostgres, op: Operation) -> OperationStatus:
    for _ in range(20):
        status = db.poll(operation=op)
        if status.done:
            return status
    raise AssertionError(f"{op.id} never finished")


def pitr(moment: datetime | None = NOW - timedelta(hours=1), target: str = TARGET) -> dict[str, Any]:
    return {"source": SRC, "target": target, "restore_time": moment}


def puts(fake: FakeAzure) -> list[dict[str, Any]]:
    return [body for method, _, body, _ in fake.requests if method == "PUT"]


def test_restore_pitr_is_followed_to_ready(fake: FakeAzure) -> None:
    db = provider(fake)
    plan = db.plan(action="database.restore_pitr", params=pitr())
    assert plan["restorable_window"] == {"earliest": "2026-11-17T12:00:00Z", "latest": "2026-11-24T12:00:00Z"}
    assert db.preflight(action="database.restore_pitr", params=pitr()) == []
    op = db.start(action="database.restore_pitr", params=pitr(), run_id="r1")
    first = db.poll(operation=op)
    assert (first.done, first.status) == (False, "InProgress")
    done = finish(db, op)
    assert done.outputs == {"instance": TARGET, "endpoint": f"{TARGET}.postgres.database.azure.com",
                            "restore_time": "2026-11-24T11:00:00Z"}
    [body] = puts(fake)
    assert body["properties"] == {
        "createMode": "PointInTimeRestore", "pointInTimeUTC": "2026-11-24T11:00:00Z",
        "sourceServerResourceId": f"/subscriptions/{fake.subscription}/resourceGroups/{RG}/providers/"
                                  f"Microsoft.DBforPostgreSQL/flexibleServers/{SRC}"}
    assert body["tags"]["drbot-run"] == "r1" and body["location"] == "eastus"
    assert all(auth == "Bearer fake-token" for *_, auth in fake.requests)


def test_second_start_attaches_even_after_a_crash(fake: FakeAzure) -> None:
    state = MemoryState()
    first = provider(fake, state=state).start(action="database.restore_pitr", params=pitr(), run_id="r1")
    again = provider(fake, state=state).start(action="database.restore_pitr", params=pitr(), run_id="r1")
    assert again == first and again.data["async_url"]
    assert len(puts(fake)) == 1
    assert finish(provider(fake, state=state), again).outputs["instance"] == TARGET
    other = provider(fake, state=state)
    with pytest.raises(PermanentError, match="already restored to 2026-11-24T11:00:00Z"):
        other.start(action="database.restore_pitr", params=pitr(NOW - timedelta(hours=2)), run_id="r1")


def test_target_owned_by_someone_else_is_refused(fake: FakeAzure) -> None:
    fake.seed_server(RG, TARGET)
    db = provider(fake)
    assert db.preflight(action="database.restore_pitr", params=pitr()) == [
        f"Target server `{TARGET}` already exists and was not created by drbot for this run; choose another name "
        "(drbot uses `<source>-pitr-<run id>`) or delete it first."]
    with pytest.raises(PermanentError, match="ServerAlreadyExists"):
        db.start(action="database.restore_pitr", params=pitr(), run_id="r1")
    assert puts(fake) == []


def test_restore_time_outside_the_window_names_both_bounds(fake: FakeAzure) -> None:
    db = provider(fake)
    for moment in (EARLIEST - timedelta(minutes=1), NOW + timedelta(hours=1)):
        [problem] = db.preflight(action="database.restore_pitr", params=pitr(moment))
        assert "outside the restorable window of `prod-pg`" in problem
        assert "pick a time between 2026-11-17T12:00:00Z and 2026-11-24T12:00:00Z" in problem
        with pytest.raises(PermanentError, match="outside the restorable window"):
            db.start(action="database.restore_pitr", params=pitr(moment), run_id="r1")
    assert puts(fake) == []


def test_unknown_source_is_a_sentence(fake: FakeAzure) -> None:
    db = provider(fake)
    assert db.preflight(action="database.restore_pitr", params={**pitr(), "source": "nope"}) == [
        "Azure PostgreSQL flexible server `nope` does not exist in resource group `dr-rg` (ResourceNotFound); "
        "check environments.prod.database.server in drbot.yml or the step's parameters."]
    assert "problem" in db.plan(action="database.restore_pitr", params={**pitr(), "source": "nope"})


def test_failed_operation_is_surfaced(fake: FakeAzure) -> None:
    fake.fail_next_operation("InternalServerError", "Restore failed: no backup covers the point in time.")
    db = provider(fake)
    status = finish(db, db.start(action="database.restore_pitr", params=pitr(), run_id="r1"))
    assert status.failed and status.status == "Failed"
    assert "no backup covers the point in time" in status.message and "InternalServerError" in status.message


@pytest.mark.parametrize(("method", "status", "code"), [("GET", 429, "TooManyRequests"), ("GET", 503, "ServerBusy"),
                                                        ("PUT", 500, "InternalServerError")])
def test_throttling_and_server_errors_are_transient(fake: FakeAzure, method: str, status: int, code: str) -> None:
    fake.inject(method, status, code=code, retry_after="0", times=5)
    db = provider(fake)
    with pytest.raises(TransientError, match="retries with backoff") as caught:
        if method == "GET":
            db.plan(action="database.restore_pitr", params=pitr())
        else:
            db.start(action="database.restore_pitr", params=pitr(), run_id="r1")
    assert caught.value.code == code and f"({code})" in caught.value.message
    assert type(caught.value.__cause__).__name__ == "HttpResponseError" and (RG, TARGET) not in fake.servers


def test_the_sdk_absorbs_a_single_429_with_retry_after(fake: FakeAzure) -> None:
    fake.inject("GET", 429, retry_after="0", times=1)
    db = provider(fake, client=fake.client(retry_total=2))
    assert db.preflight(action="database.restore_pitr", params=pitr()) == []
    assert [m for m, *_ in fake.requests][:2] == ["GET", "GET"]


class Refusing:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        raise ClientAuthenticationError("token eyJhbGciOiJIUzI1NiJ9.secret-part was rejected")


def test_credential_errors_name_the_environment_variables(fake: FakeAzure) -> None:
    from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

    client = PostgreSQLManagementClient(Refusing(), fake.subscription, base_url=fake.url,
                                        connection_verify=str(fake.cert), retry_total=0)
    with pytest.raises(PermanentError) as caught:
        provider(fake, client=client).start(action="database.restore_pitr", params=pitr(), run_id="r1")
    assert "AZURE_CLIENT_ID" in caught.value.message and "az login" in caught.value.message
    assert "secret-part" not in caught.value.message
    fake.inject("GET", 401, code="InvalidAuthenticationToken")
    with pytest.raises(PermanentError, match="AZURE_TENANT_ID"):
        provider(fake).plan(action="database.restore_pitr", params=pitr())


def test_promote_replica_patches_promote_mode_and_waits_for_ready(fake: FakeAzure) -> None:
    db = provider(fake)
    assert db.preflight(action="database.promote_replica", params={"replica": REPLICA}) == []
    check = db.poll(operation=db.start(action="database.check_replica", params={"replica": REPLICA}, run_id="r1"))
    assert check.outputs == {"replica_lag_seconds": 0, "status": "Active", "region": "westus"}
    op = db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id="r1")
    assert db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id="r1") == op
    done = finish(db, op)
    assert done.outputs == {"instance": REPLICA, "endpoint": f"{REPLICA}.postgres.database.azure.com",
                            "replica_lag_seconds": 0}
    assert "physical_replication_delay_in_seconds" in done.message
    patches = [body for method, _, body, _ in fake.requests if method == "PATCH"]
    assert patches == [{"properties": {"replica": {"promoteMode": "Standalone", "promoteOption": "Planned"}}}]
    [problem] = db.preflight(action="database.promote_replica", params={"replica": REPLICA})
    assert "is not a read replica" in problem and "replica.server" in problem


def test_switchover_comes_from_settings(fake: FakeAzure) -> None:
    db = provider(fake, replica={"server": REPLICA, "promote_mode": "switchover", "promote_option": "forced"})
    finish(db, db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id="r1"))
    patches = [body for method, _, body, _ in fake.requests if method == "PATCH"]
    assert patches[0]["properties"]["replica"] == {"promoteMode": "Switchover", "promoteOption": "Forced"}


def test_geo_restore_targets_the_paired_region(fake: FakeAzure) -> None:
    db = provider(fake, geo_restore=True, geo_location="westus")
    params = {"source": SRC, "target": "prod-pg-geo-r1"}
    assert db.plan(action="database.restore_latest_backup", params=params)["create_mode"] == "GeoRestore"
    done = finish(db, db.start(action="database.restore_latest_backup", params=params, run_id="r1"))
    assert done.outputs["backup_id"] == "GeoRestore@2026-11-24T12:00:00Z"
    [body] = puts(fake)
    assert body["location"] == "westus" and body["properties"]["createMode"] == "GeoRestore"
    assert "pointInTimeUTC" not in body["properties"]


def test_delete_instance_removes_only_drbot_scratch_servers(fake: FakeAzure) -> None:
    db = provider(fake)
    fake.seed_server(RG, "prod-pg-pitr-x9")  # right name, but no drbot tag
    for name in (SRC, REPLICA, "prod-pg-pitr-x9"):
        [problem] = db.preflight(action="database.delete_instance", params={"instance": name})
        assert problem.startswith(f"Refusing to delete `{name}`")
        with pytest.raises(PermanentError, match="Refusing to delete"):
            db.start(action="database.delete_instance", params={"instance": name}, run_id="r1")
    finish(db, db.start(action="database.restore_pitr", params=pitr(), run_id="r1"))
    op = db.start(action="database.delete_instance", params={"instance": TARGET}, run_id="r1")
    assert finish(db, op).outputs == {"deleted": True, "instance": TARGET}
    assert (RG, TARGET) not in fake.servers and sum(m == "DELETE" for m, *_ in fake.requests) == 1


def test_the_fake_satisfies_the_sdks_own_poller(fake: FakeAzure) -> None:
    from azure.mgmt.postgresqlflexibleservers import models

    server = fake.client().servers.begin_create_or_update(RG, "prod-pg-pitr-sdk", models.Server(
        location="eastus", properties=models.ServerProperties(
            create_mode="PointInTimeRestore", point_in_time_utc=NOW,
            source_server_resource_id=fake.server_id(RG, SRC)))).result()
    assert server.properties is not None and server.properties.state == "Ready"


def test_factory_builds_lazily_and_refuses_other_resources() -> None:
    db = build_azure_provider(environment="prod", resource="database", settings={"resource_group": RG},
                              state=MemoryState(), clock=FakeClock(NOW))
    assert db.kind == "azure-postgres" and "restore_pitr" in db.actions()
    with pytest.raises(ConfigError, match=r"environments\.prod\.database\.subscription is missing"):
        db.plan(action="database.restore_pitr", params=pitr())
    with pytest.raises(ConfigError, match="Azure has no provider for `dns`"):
        build_azure_provider(environment="prod", resource="dns", settings={})


def test_a_lost_create_race_attaches_to_this_runs_server(fake: FakeAzure) -> None:
    tags = {"drbot-run": "r1", "drbot-source": SRC, "drbot-restore-time": "2026-11-24T11:00:00Z"}
    fake.inject("PUT", 409, code="ServerNameAlreadyExists",
                then=lambda: fake.seed_server(RG, TARGET, state="Provisioning", tags=tags))
    db = provider(fake)
    op = db.start(action="database.restore_pitr", params=pitr(), run_id="r1")
    assert (op.target, op.data["async_url"]) == (TARGET, "")
    assert db.poll(operation=op).status == "Provisioning"
    fake.servers[(RG, TARGET)]["properties"]["state"] = "Ready"
    assert db.poll(operation=op).outputs["restore_time"] == "2026-11-24T11:00:00Z"
    fake.servers.pop((RG, TARGET))
    fake.inject("PUT", 409, code="ServerNameAlreadyExists")
    with pytest.raises(PermanentError, match="ServerNameAlreadyExists"):
        db.start(action="database.restore_pitr", params=pitr(), run_id="r1")


def test_a_missing_resource_group_points_at_the_setting(fake: FakeAzure) -> None:
    fake.inject("GET", 404, code="ResourceGroupNotFound")
    with pytest.raises(PermanentError, match=r"resource group does not exist .* check `resource_group`"):
        provider(fake).plan(action="database.restore_pitr", params=pitr())
