"""Catalog runbooks end to end through the engine (DBOS, approvals, timeline) against the real providers,
each talking to its local double: Qdrant's REST API, a kube-apiserver with Velero, S3 on moto server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.fake_kube import TOKEN, FakeKube
from tests.doubles.fake_qdrant import FakeQdrant
from tests.doubles.moto_server import moto_server, seed_bucket, seed_rds_source, seed_zone
from tests.engine_harness import Harness, harness_fixture, sandbox_config

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


def approve_and_finish(h: Harness) -> str:
    h.recorder.wait_for("approval.requested")
    assert h.press("approval.requested", "Approve", actor="bob").public
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None
    return run.status.value


def test_vectors_restore_on_qdrant(harness: Callable[..., Harness]) -> None:
    with FakeQdrant(recovery_polls=2) as qdrant:
        qdrant.add_collection("documents", points_count=120_000)
        now = datetime.now(UTC)
        qdrant.add_snapshot("documents", at=now - timedelta(days=2), points_count=110_000)
        qdrant.add_snapshot("documents", at=now - timedelta(hours=6), points_count=118_000)

        def real(data: dict[str, Any]) -> None:
            data["environments"]["prod"]["vectors"] = {"provider": "qdrant", "url": qdrant.url,
                                                       "collection": "documents", "settle_seconds": 0}

        h = harness(config=sandbox_config(real=real))
        h.say("/dr restore vectors prod latest")
        plan = h.recorder.wait_for("run.planned")
        assert "overwrite" in str(plan.data).lower()
        assert approve_and_finish(h) == "succeeded", h.recorder.kinds()
        assert qdrant.calls("PUT", "/snapshots/recover"), "the recovery went to Qdrant"
        record = h.engine.record("INC-1")
        assert record.restore_point is not None
        assert abs(record.restore_point - (now - timedelta(hours=6))) < timedelta(seconds=2)


def test_k8s_restore_with_velero(harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRBOT_TEST_KUBE_TOKEN", TOKEN)
    with FakeKube() as kube:
        kube.add_backup("velero", "daily-20261123", completed="2026-11-23T02:00:00Z")
        kube.add_backup("velero", "daily-20261124", completed="2026-11-24T02:00:00Z")

        def real(data: dict[str, Any]) -> None:
            data["environments"]["prod"]["kubernetes"] = {
                "provider": "kubernetes", "api_url": kube.url, "token_env": "DRBOT_TEST_KUBE_TOKEN",
                "context": "prod", "namespace": "rag-engine", "deployment": "rag-engine-api",
                "velero_namespace": "velero"}

        h = harness(config=sandbox_config(real=real))
        h.say("/dr restore k8s prod latest")
        assert approve_and_finish(h) == "succeeded", h.recorder.kinds()
        restores = kube.names("restores", "velero")
        assert len(restores) == 1 and restores[0].startswith("daily-20261124")
        created = kube.get("restores", "velero", restores[0])
        assert created is not None and created["spec"]["backupName"] == "daily-20261124"
        assert created["spec"]["includedNamespaces"] == ["rag-engine"]


def test_accidental_deletion_on_s3(harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with moto_server() as moto:
        s3 = seed_bucket(moto, "rag-docs", {"docs/a.pdf": b"a", "docs/b.pdf": b"b", "keep/c.pdf": b"c"})
        for key in ("docs/a.pdf", "docs/b.pdf", "keep/c.pdf"):
            s3.delete_object(Bucket="rag-docs", Key=key)

        def real(data: dict[str, Any]) -> None:
            data["environments"]["prod"]["objects"] = {"provider": "s3", "bucket": "rag-docs",
                                                       "region": "us-east-1", "endpoint_url": moto.url}

        h = harness(config=sandbox_config(real=real))
        h.say("/dr undelete objects prod docs/")
        assert approve_and_finish(h) == "succeeded", h.recorder.kinds()
        assert s3.get_object(Bucket="rag-docs", Key="docs/a.pdf")["Body"].read() == b"a"
        assert s3.get_object(Bucket="rag-docs", Key="docs/b.pdf")["Body"].read() == b"b"
        with pytest.raises(Exception, match="NoSuchKey|Not Found|404"):
            s3.get_object(Bucket="rag-docs", Key="keep/c.pdf")
        done = h.recorder.last("step.completed")
        assert h.engine.store.get_incident("INC-1").restored_at is not None  # type: ignore[union-attr]
        assert done.kind == "step.completed"


def test_region_failover_on_aws_and_kubernetes(harness: Callable[..., Harness],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica promotion on RDS (lag recorded as the RPO) and the DR scale-up on Kubernetes in parallel, then the
    Route53 switch to the DR target and its health check."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "DRBOT_TEST_KUBE_TOKEN": TOKEN}.items():
        monkeypatch.setenv(key, value)
    with moto_server() as moto, FakeKube() as kube:
        seed_rds_source(moto, "rag-prod")
        moto.client("rds").create_db_instance_read_replica(DBInstanceIdentifier="rag-prod-replica",
                                                           SourceDBInstanceIdentifier="rag-prod")
        zone = seed_zone(moto, domain="rag-engine.com", record="api.rag-engine.com", value="198.51.100.7")
        kube.add_deployment("rag-engine", "rag-engine-api", replicas=1)

        def real(data: dict[str, Any]) -> None:
            prod = data["environments"]["prod"]
            prod["database"] = {"provider": "aws-rds", "instance": "rag-prod", "region": "us-east-1",
                                "endpoint_url": moto.url,
                                "replica": {"instance": "rag-prod-replica", "region": "us-east-1",
                                            "promote_settle_seconds": 0}}
            prod["dns"] = {"provider": "route53", "zone_id": zone, "record": "api.rag-engine.com", "type": "A",
                           "dr_target": "203.0.113.10", "endpoint_url": moto.url}
            prod["kubernetes"] = {"provider": "kubernetes", "api_url": kube.url, "token_env": "DRBOT_TEST_KUBE_TOKEN",
                                  "context": "prod", "namespace": "rag-engine", "deployment": "rag-engine-api",
                                  "velero_namespace": "velero"}

        h = harness(config=sandbox_config(real=real))
        h.say("/dr failover region prod")
        assert approve_and_finish(h) == "succeeded", [e.text for e in h.recorder.events][-6:]
        records = moto.client("route53").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        api = next(r for r in records if r["Name"].rstrip(".") == "api.rag-engine.com" and r["Type"] == "A")
        assert api["ResourceRecords"] == [{"Value": "203.0.113.10"}]
        deployment = kube.get("deployments", "rag-engine", "rag-engine-api")
        assert deployment is not None and deployment["spec"]["replicas"] == 3
        assert "rpo.replica_lag" in h.recorder.kinds()
        assert h.engine.record("INC-1").replica_lag is not None
