"""`database-pitr` end to end through the engine (DBOS, approval, timeline) on each cloud's real provider:
RDS on moto server, Cloud SQL on its Admin API double, Azure PostgreSQL on its TLS ARM double — with the
cut-over on the fake kube-apiserver and the integrity step counting rows in the session's real PostgreSQL, reached
through `integrity.host/port` as it would be through a tunnel or cloud-sql-proxy (the doubles' endpoints are
fictitious addresses that nothing connects to).

AWS and Google Cloud are built by production's wiring, so the read-only URL travels from the process environment
through `bot.config.process_environment()`; Azure's provider is given the double's SDK client (DefaultAzureCredential
cannot reach a token service here) and its `environ` directly, the way its builder would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, build_config
from bot.wiring import ProviderRegistry, start_engine
from integrations.azure import AzurePostgres
from runbooks.catalog import load_catalog
from runbooks.engine import Engine, EngineSettings, PollPolicy, describe_buttons
from runbooks.ports import Provider, SystemClock
from runbooks.store import Store
from tests.doubles.fake_azure import FakeAzure, fake_azure
from tests.doubles.fake_cloudsql import fake_cloudsql
from tests.doubles.fake_kube import TOKEN, FakeKube
from tests.doubles.moto_server import moto_server, seed_rds_source
from tests.engine_harness import Harness, Recorder, harness_fixture, sandbox_config
from tests.pg import PgServer
from tests.test_sql_integrity import ROWS, URL_ENV, RestoredDb, make_restored_db

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SOURCE = "prod-pg"
TARGET = "prod-pg-pitr-r1"
NAMESPACE, DEPLOYMENT = "rag-engine", "rag-engine-api"
EMPTY = "The integrity query found no rows in the restored database"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


@pytest.fixture
def restored(pg_server: PgServer) -> RestoredDb:
    return make_restored_db(pg_server)


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    monkeypatch.setenv("DRBOT_TEST_KUBE_TOKEN", TOKEN)
    with FakeKube() as fake:
        fake.add_deployment(NAMESPACE, DEPLOYMENT, replicas=2,
                            containers={DEPLOYMENT: {"DB_HOST": "prod-pg.internal", "LOG_LEVEL": "info"}})
        yield fake


def config(*, database: dict[str, Any], kube: FakeKube, db: RestoredDb) -> dict[str, Any]:
    def real(data: dict[str, Any]) -> None:
        prod = data["environments"]["prod"]
        prod["database"] = {**database, "integrity": db.integrity()}
        prod["kubernetes"] = {"provider": "kubernetes", "api_url": kube.url, "token_env": "DRBOT_TEST_KUBE_TOKEN",
                              "context": "prod", "namespace": NAMESPACE, "deployment": DEPLOYMENT,
                              "velero_namespace": "velero"}
        prod["settings"]["integrity_query"] = "SELECT count(*) FROM documents"

    return sandbox_config(real=real)


def approve(h: Harness) -> None:
    h.recorder.wait_for("approval.requested")
    assert h.press("approval.requested", "Approve", actor="bob").public


def finished(h: Harness) -> dict[str, Any]:
    """Run R-1 to the end; the step outputs by step id."""
    approve(h)
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded", [e.text for e in h.recorder.events][-5:]
    return {s.step_id: s.outputs for s in h.engine.store.steps_for(run_id="R-1")}


def assert_cut_over_and_checked(h: Harness, kube: FakeKube, outputs: dict[str, Any]) -> None:
    restore = outputs["restore"]
    assert restore["instance"] == TARGET and restore["endpoint"]
    deployment = kube.get("deployments", NAMESPACE, DEPLOYMENT)
    assert deployment is not None
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DB_HOST"] == restore["endpoint"] and env["LOG_LEVEL"] == "info"
    assert outputs["integrity"] == {"count": ROWS, "instance": TARGET, "host": "127.0.0.1"}
    record = h.engine.record("INC-1")
    assert record.restore_point is not None
    assert record.restore_point == datetime.fromisoformat(restore["restore_time"].replace("Z", "+00:00"))
    assert "rpo.restore_point" in h.recorder.kinds()


def test_database_pitr_on_aws_rds(harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch,
                                  restored: RestoredDb, kube: FakeKube) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", URL_ENV: restored.readonly_url()}.items():
        monkeypatch.setenv(key, value)
    with moto_server() as moto:
        seeded = seed_rds_source(moto, SOURCE)
        database = {"provider": "aws-rds", "instance": SOURCE, "region": "us-east-1", "endpoint_url": moto.url}
        h = harness(config=config(database=database, kube=kube, db=restored))
        h.say("/dr restore database prod latest")
        outputs = finished(h)
        made = moto.client("rds").describe_db_instances(DBInstanceIdentifier=TARGET)["DBInstances"][0]
        assert made["DBSubnetGroup"]["DBSubnetGroupName"] == seeded["subnet_group"]
        assert [g["VpcSecurityGroupId"] for g in made["VpcSecurityGroups"]] == [seeded["security_group"]]
        assert made["DBParameterGroups"][0]["DBParameterGroupName"] == seeded["parameter_group"]
        assert made["DBInstanceClass"] == "db.r6g.large" and made["MultiAZ"] is True
        assert outputs["restore"]["endpoint"] == made["Endpoint"]["Address"]
        assert_cut_over_and_checked(h, kube, outputs)


def test_database_pitr_on_cloudsql(harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch,
                                   restored: RestoredDb, kube: FakeKube) -> None:
    monkeypatch.setenv(URL_ENV, restored.readonly_url())
    with fake_cloudsql(project="dr-project", now=lambda: datetime.now(UTC)) as (world, url):
        world.seed(SOURCE, region="europe-west1")
        database = {"provider": "cloudsql", "project": "dr-project", "instance": SOURCE, "endpoint_url": url,
                    "credentials": "anonymous"}
        h = harness(config=config(database=database, kube=kube, db=restored))
        h.say("/dr restore database prod -30m")
        outputs = finished(h)
        made = world.instances[TARGET]
        assert made["state"] == "RUNNABLE" and made["region"] == "europe-west1"
        assert made["databaseVersion"] == world.instances[SOURCE]["databaseVersion"]
        clone = next(body for method, path, body in world.requests if path.endswith(f"/{SOURCE}/clone"))
        assert clone["cloneContext"]["pointInTime"] == outputs["restore"]["restore_time"]
        assert outputs["restore"]["endpoint"] == made["ipAddresses"][0]["ipAddress"]
        assert_cut_over_and_checked(h, kube, outputs)


class _AzureRegistry(ProviderRegistry):
    """Production's registry, except that the Azure provider gets the double's SDK client."""

    def __init__(self, *, azure: FakeAzure, environ: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.azure, self.environ = azure, environ

    def _build(self, *, environment: str, resource: str, config: Any) -> Provider:
        if config.get("provider") != "azure-postgres":
            return super()._build(environment=environment, resource=resource, config=config)
        settings = {k: v for k, v in config.items() if k != "provider"}
        return AzurePostgres(environment=environment, resource=resource, settings=settings,
                             client=self.azure.client(), state=self.state, clock=self.clock, environ=self.environ)


class _AzureHarness(Harness):
    def __init__(self, tmp: Path, *, config: dict[str, Any], azure: FakeAzure, environ: dict[str, str]) -> None:
        self.settings = Settings(drbot_database_url=f"sqlite:///{tmp / 'drbot.db'}", drbot_sandbox_speed=1e5)
        self.recorder = Recorder()
        store, clock, parsed = Store(self.settings.drbot_database_url), SystemClock(), build_config(config,
                                                                                                    source="test")
        registry = _AzureRegistry(azure=azure, environ=environ, state=store, clock=clock, speed=1e5)
        self.engine = Engine(store=store, catalog=load_catalog(), providers=registry, clock=clock,
                             notifiers=[self.recorder],
                             settings=EngineSettings(environments=parsed.environments, tiers=parsed.tiers,
                                                     poll=PollPolicy(initial=0.005, factor=1.5, maximum=0.02)))
        start_engine(self.engine, settings=self.settings, budget_ticker=False)


def test_database_pitr_on_azure_postgres(tmp_path: Path, restored: RestoredDb, kube: FakeKube) -> None:
    with fake_azure(polls=2) as azure:
        azure.seed_server("dr-rg", SOURCE, location="westeurope",
                          earliest=datetime.now(UTC) - timedelta(days=3))
        database = {"provider": "azure-postgres", "subscription": azure.subscription, "resource_group": "dr-rg",
                    "server": SOURCE, "instance": SOURCE, "location": "westeurope", "endpoint_url": azure.url}
        h = _AzureHarness(tmp_path, config=config(database=database, kube=kube, db=restored), azure=azure,
                          environ={URL_ENV: restored.readonly_url()})
        try:
            h.say("/dr restore database prod -30m")
            outputs = finished(h)
            made = azure.servers[("dr-rg", TARGET)]
            assert made["location"] == "westeurope" and made["properties"]["state"] == "Ready"
            assert made["tags"]["drbot-source"] == SOURCE and made["tags"]["drbot-run"] == "R-1"
            assert made["tags"]["drbot-restore-time"] == outputs["restore"]["restore_time"]
            assert outputs["restore"]["endpoint"] == made["properties"]["fullyQualifiedDomainName"]
            assert_cut_over_and_checked(h, kube, outputs)
        finally:
            h.close()


def test_an_empty_restore_fails_the_integrity_step_and_pauses(harness: Callable[..., Harness],
                                                              monkeypatch: pytest.MonkeyPatch, pg_server: PgServer,
                                                              kube: FakeKube) -> None:
    empty = make_restored_db(pg_server, rows=0)
    monkeypatch.setenv(URL_ENV, empty.readonly_url())
    with fake_cloudsql(project="dr-project", now=lambda: datetime.now(UTC)) as (world, url):
        world.seed(SOURCE)
        database = {"provider": "cloudsql", "project": "dr-project", "instance": SOURCE, "endpoint_url": url,
                    "credentials": "anonymous"}
        h = harness(config=config(database=database, kube=kube, db=empty))
        h.say("/dr restore database prod -30m")
        approve(h)
        paused = h.recorder.wait_for("run.paused", timeout=60)
        assert EMPTY in paused.text
        assert {"Retry", "Skip", "Abort"} <= {b.label for b in describe_buttons(paused)}
        run = h.engine.store.get_run("R-1")
        assert run is not None and run.status.value == "paused"
        steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
        assert steps["integrity"].status.value == "failed" and EMPTY in steps["integrity"].error
        assert steps["integrity"].outputs.get("count") in (None, 0)
        assert steps["restore"].status.value == "succeeded" and TARGET in world.instances
