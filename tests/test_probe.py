"""`Provider.probe`, the read-only reachability check behind `drbot check`: each provider against its double
answers [] when the configured resource is there, and a sentence naming it and the drbot.yml key when it is not."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from integrations.aws import AwsRds, AwsRoute53, AwsS3
from integrations.azure import AzurePostgres
from integrations.gcp import build_gcp_provider
from integrations.kubernetes import KubernetesProvider
from integrations.qdrant import build_qdrant_provider
from integrations.sandbox import build_sandbox_provider
from runbooks.ports import Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_azure import fake_azure
from tests.doubles.fake_cloudsql import fake_cloudsql
from tests.doubles.fake_kube import FakeKube
from tests.doubles.fake_qdrant import FakeQdrant
from tests.doubles.moto_server import MotoServer, moto_server, seed_bucket, seed_rds_source, seed_zone
from tests.test_sandbox import SETTINGS, MemoryState

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RECORD = "api.rag-engine.com"


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


@pytest.mark.parametrize("resource", sorted(SETTINGS))
def test_sandbox_resources_are_always_reachable(resource: str) -> None:
    provider = build_sandbox_provider(environment="prod", resource=resource, settings=SETTINGS[resource],
                                      state=MemoryState(), clock=FakeClock(NOW), speed=60)
    assert isinstance(provider, Provider)
    assert provider.probe() == []


def test_rds_probe_describes_the_instance_and_the_replica(moto: MotoServer) -> None:
    seed_rds_source(moto, "rag-engine-prod")

    def rds(instance: str, replica: str) -> AwsRds:
        settings = {"instance": instance, "region": "us-east-1",
                    "replica": {"instance": replica, "region": "us-east-1"}}
        return AwsRds(environment="prod", resource="database", settings=settings, client=moto.client("rds"))

    assert rds("rag-engine-prod", "rag-engine-prod").probe() == []
    [missing] = rds("rag-engine-prod", "rag-engine-dr").probe()
    assert "`rag-engine-dr` does not exist" in missing and "environments.prod.database.replica.instance" in missing
    [gone] = rds("nope-db", "rag-engine-prod").probe()
    assert "`nope-db` does not exist" in gone and "environments.prod.database.instance" in gone


def test_route53_probe_reads_the_zone_and_the_record(moto: MotoServer) -> None:
    zone = seed_zone(moto, domain="rag-engine.com", record=RECORD, value="198.51.100.10")

    def dns(zone_id: str, record: str) -> AwsRoute53:
        return AwsRoute53(environment="prod", resource="dns", settings={"zone_id": zone_id, "record": record},
                          client=moto.client("route53"))

    assert dns(zone, RECORD).probe() == []
    [no_record] = dns(zone, "www.rag-engine.com").probe()
    assert "`www.rag-engine.com` (A) does not exist" in no_record
    assert "environments.prod.dns.record" in no_record
    [no_zone] = dns("Z000000NOPE", RECORD).probe()
    assert "Z000000NOPE" in no_zone and "environments.prod.dns.zone_id" in no_zone


def test_s3_probe_heads_the_bucket_and_wants_versioning(moto: MotoServer) -> None:
    seed_bucket(moto, "docs-versioned", {"a.txt": b"a"})
    seed_bucket(moto, "docs-plain", {"a.txt": b"a"}, versioning=False)

    def s3(bucket: str) -> AwsS3:
        return AwsS3(environment="prod", resource="objects", settings={"bucket": bucket}, client=moto.client("s3"))

    assert s3("docs-versioned").probe() == []
    [plain] = s3("docs-plain").probe()
    assert "Versioning on bucket `docs-plain` is never enabled" in plain
    [missing] = s3("docs-nope").probe()
    assert "`docs-nope` does not exist" in missing and "environments.prod.objects.bucket" in missing


def test_cloudsql_probe_gets_the_instance() -> None:
    with fake_cloudsql(project="demo-proj", now=lambda: NOW) as (world, url):
        world.seed("prod-db")

        def db(instance: str) -> Provider:
            settings = {"project": "demo-proj", "instance": instance, "endpoint_url": url,
                        "credentials": "anonymous"}
            return build_gcp_provider(environment="prod", resource="database", settings=settings,
                                      state=MemoryState(), clock=FakeClock(NOW))

        assert db("prod-db").probe() == []
        [missing] = db("other-db").probe()
    assert "`other-db` does not exist in project `demo-proj`" in missing
    assert "environments.prod.database.instance" in missing


def test_azure_probe_gets_the_server() -> None:
    with fake_azure() as fake:
        fake.seed_server("dr-rg", "prod-pg", earliest=NOW - timedelta(days=7))

        def db(server: str) -> AzurePostgres:
            settings = {"subscription": fake.subscription, "resource_group": "dr-rg", "server": server,
                        "location": "eastus"}
            return AzurePostgres(environment="prod", resource="database", settings=settings,
                                 client=fake.client(), state=MemoryState(), clock=FakeClock(NOW))

        assert db("prod-pg").probe() == []
        [missing] = db("other-pg").probe()
    assert "`other-pg` does not exist in resource group `dr-rg`" in missing
    assert "environments.prod.database.server" in missing


def test_kubernetes_probe_reads_the_deployment_and_lists_backups() -> None:
    with FakeKube() as kube:
        kube.add_deployment("rag-engine", "rag-engine-api")

        def k8s(deployment: str) -> KubernetesProvider:
            settings = {"context": "prod", "namespace": "rag-engine", "deployment": deployment,
                        "velero_namespace": "velero"}
            return KubernetesProvider(environment="prod", resource="kubernetes", settings=settings,
                                      client=kube.api_client())

        assert k8s("rag-engine-api").probe() == []
        [missing] = k8s("rag-engine-web").probe()
        listed = [r.path for r in kube.requests if r.path.endswith("/namespaces/velero/backups")]
    assert "Deployment `rag-engine-web` does not exist in namespace `rag-engine`" in missing
    assert "environments.prod.kubernetes.deployment" in missing
    assert len(listed) == 2  # the backups were listed on both probes
    assert all(r.method == "GET" for r in kube.requests)


def test_qdrant_probe_gets_the_collection_and_reports_an_unreachable_server() -> None:
    with FakeQdrant() as fake:
        fake.add_collection("documents", points_count=10)

        def vectors(collection: str, url: str = fake.url) -> Provider:
            return build_qdrant_provider(environment="prod", resource="vectors",
                                         settings={"url": url, "collection": collection, "timeout": 2},
                                         state=MemoryState(),
                                         clock=FakeClock(NOW), environ={})

        assert vectors("documents").probe() == []
        [missing] = vectors("chunks").probe()
        assert "Collection `chunks` doesn't exist" in missing and "(collections: documents)" in missing
        assert "environments.prod.vectors.collection" in missing
        closed = fake.url
    [unreachable] = vectors("documents", url=closed).probe()
    assert f"Qdrant at {closed} is unreachable" in unreachable and "`url` in drbot.yml" in unreachable
