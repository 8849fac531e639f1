"""`recovery_point()` of the AWS providers (the RPO monitor's read): aws-rds and aws-aurora against moto in server
mode, s3 too; what moto cannot show (no latest restorable time, failed snapshots, refused reads) with a Stubber.

Every read is counted on the wire: a botocore `before-send` hook on the provider's own clients records each HTTP
request the double receives, and `calls` must equal that count and stay within the budget of two.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from integrations.aws import AuroraProvider, AwsRds, AwsS3, build_aws_provider
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import RecoveryPoint, RecoveryPointReader
from tests.doubles.clock import FakeClock
from tests.doubles.moto_server import MotoServer, moto_server, seed_bucket, seed_rds_source

SRC = "rag-engine-prod"
BUCKET, DR_BUCKET = "rag-engine-documents", "rag-engine-documents-dr"
NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
BUDGET = 2


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


class Wire:
    """The requests the double received from the given clients, by operation (`DescribeDBInstances`, …)."""

    def __init__(self, *clients: Any) -> None:
        self.sent: list[str] = []
        for client in clients:
            client.meta.events.register("before-send", self._sent)

    def _sent(self, event_name: str, **_: Any) -> None:
        self.sent.append(event_name.rsplit(".", 1)[-1])


def read(provider: RecoveryPointReader, wire: Wire) -> RecoveryPoint:
    point = provider.recovery_point()
    assert point.calls == len(wire.sent) <= BUDGET, (point.calls, wire.sent)
    return point


def described(moto: MotoServer, name: str) -> datetime:
    found = moto.client("rds").describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    return found["LatestRestorableTime"].astimezone(UTC)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------- aws-rds


def rds(moto: MotoServer, name: str = SRC) -> tuple[AwsRds, Wire]:
    client, cloudwatch = moto.client("rds"), moto.client("cloudwatch")
    provider = AwsRds(environment="prod", resource="database", settings={"instance": name, "region": "us-east-1"},
                      client=client, replica_client=client, cloudwatch=cloudwatch, clock=FakeClock(NOW))
    return provider, Wire(client, cloudwatch)


def test_rds_with_backups_reads_the_latest_restorable_time_in_one_call(moto: MotoServer) -> None:
    seed_rds_source(moto, SRC)
    provider, wire = rds(moto)
    before = described(moto, SRC)
    point = read(provider, wire)
    after = described(moto, SRC)
    # moto computes LatestRestorableTime as "now" on every describe, so the provider's read lies between two others
    assert point.newest is not None and before <= point.newest <= after
    assert point.newest.tzinfo == UTC
    assert point.what == "latest restorable time" and point.cause == "" and point.failed == ()
    assert wire.sent == ["DescribeDBInstances"] and point.calls == 1


def test_rds_with_retention_zero_has_no_recovery_point_and_says_why(moto: MotoServer) -> None:
    moto.client("rds").create_db_instance(
        DBInstanceIdentifier="scratch", Engine="postgres", DBInstanceClass="db.t4g.micro", MasterUsername="app",
        MasterUserPassword="not-a-secret-1", AllocatedStorage=20, BackupRetentionPeriod=0)
    provider, wire = rds(moto, "scratch")
    point = read(provider, wire)
    assert point.newest is None and point.calls == 1
    assert point.cause == ("automated backups are off for scratch (backup retention 0 days): there is no "
                           "point-in-time recovery; set a retention period")


def test_rds_unknown_instance_is_a_provider_error_naming_it(moto: MotoServer) -> None:
    provider, wire = rds(moto, "no-such-db")
    with pytest.raises(PermanentError) as raised:
        provider.recovery_point()
    assert raised.value.code == "DBInstanceNotFound"
    assert raised.value.message == provider._missing("no-such-db")
    assert "RDS instance `no-such-db` does not exist" in raised.value.message
    assert wire.sent == ["DescribeDBInstances"]


def test_rds_without_the_instance_setting_raises_a_provider_error(moto: MotoServer) -> None:
    provider = AwsRds(environment="prod", resource="database", settings={"region": "us-east-1"},
                      client=moto.client("rds"))
    with pytest.raises(ProviderError, match="instance is missing"):
        provider.recovery_point()


# --------------------------------------------------------------------------------------------- aws-aurora


def seed_cluster(moto: MotoServer, name: str, *, retention: int = 7) -> None:
    rds_client = moto.client("rds")
    rds_client.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", EngineVersion="16.1",
                                 MasterUsername="app", MasterUserPassword="not-a-secret-1",
                                 BackupRetentionPeriod=retention)
    rds_client.create_db_instance(DBInstanceIdentifier=f"{name}-a", DBClusterIdentifier=name,
                                  Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")


def aurora(moto: MotoServer, settings: dict[str, Any] | None = None) -> tuple[AuroraProvider, Wire]:
    client = moto.client("rds")
    provider = AuroraProvider(environment="prod", resource="database",
                              settings=settings or {"cluster": SRC, "instance": SRC, "region": "us-east-1"},
                              client=client, clock=FakeClock(NOW))
    return provider, Wire(client)


def test_aurora_reads_the_cluster_latest_restorable_time(moto: MotoServer) -> None:
    seed_cluster(moto, SRC)
    provider, wire = aurora(moto)
    check = moto.client("rds")
    before = check.describe_db_clusters(DBClusterIdentifier=SRC)["DBClusters"][0]["LatestRestorableTime"]
    point = read(provider, wire)
    after = check.describe_db_clusters(DBClusterIdentifier=SRC)["DBClusters"][0]["LatestRestorableTime"]
    assert point.newest is not None and before.astimezone(UTC) <= point.newest <= after.astimezone(UTC)
    assert point.what == "latest restorable time" and point.cause == ""
    assert wire.sent == ["DescribeDBClusters"]


def test_aurora_named_by_instance_only_and_an_unknown_cluster(moto: MotoServer) -> None:
    seed_cluster(moto, SRC)
    provider, wire = aurora(moto, {"instance": SRC, "region": "us-east-1"})
    assert read(provider, wire).newest is not None
    missing, wire = aurora(moto, {"cluster": "no-such-cluster", "instance": "no-such-cluster"})
    with pytest.raises(PermanentError) as raised:
        missing.recovery_point()
    assert raised.value.code == "DBClusterNotFoundFault"
    assert raised.value.message == missing._missing("no-such-cluster")
    assert wire.sent == ["DescribeDBClusters"]


# --------------------------------------------------------------------------------------------- s3


def s3(moto: MotoServer, clock: FakeClock | None = None) -> tuple[AwsS3, Wire]:
    client = moto.client("s3")
    provider = AwsS3(environment="prod", resource="objects", settings={"bucket": BUCKET}, client=client,
                     clock=clock or FakeClock(NOW))
    return provider, Wire(client)


def test_s3_versioning_on_without_replication_is_recoverable_to_now(moto: MotoServer) -> None:
    seed_bucket(moto, BUCKET, {"docs/a.pdf": b"a"})
    clock = FakeClock(NOW)
    provider, wire = s3(moto, clock)
    point = read(provider, wire)
    assert point.newest == NOW and point.what == "versioning on: every version is kept" and point.cause == ""
    assert wire.sent == ["GetBucketVersioning", "GetBucketReplication"]
    clock.advance(90)
    assert provider.recovery_point().newest == NOW + timedelta(seconds=90)


def test_s3_versioning_on_with_replication_names_the_rule(moto: MotoServer) -> None:
    client = seed_bucket(moto, BUCKET, {"docs/a.pdf": b"a"})
    seed_bucket(moto, DR_BUCKET, {})
    client.put_bucket_replication(Bucket=BUCKET, ReplicationConfiguration={
        "Role": "arn:aws:iam::123456789012:role/replication",
        "Rules": [{"ID": "dr", "Status": "Enabled", "Prefix": "",
                   "Destination": {"Bucket": f"arn:aws:s3:::{DR_BUCKET}"}}]})
    provider, wire = s3(moto)
    point = read(provider, wire)
    assert point.newest == NOW and point.calls == 2
    assert point.what == f"versioning on: every version is kept; replication Enabled to arn:aws:s3:::{DR_BUCKET}"


def test_s3_versioning_suspended_has_no_recovery_point(moto: MotoServer) -> None:
    client = seed_bucket(moto, BUCKET, {"docs/a.pdf": b"a"})
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    provider, wire = s3(moto)
    point = read(provider, wire)
    assert point.newest is None and wire.sent == ["GetBucketVersioning"]
    assert point.cause == (f"versioning is suspended on bucket {BUCKET}: an object deleted or overwritten now "
                           "cannot be recovered; resume versioning")


def test_s3_versioning_never_enabled_has_no_recovery_point(moto: MotoServer) -> None:
    seed_bucket(moto, BUCKET, {"docs/a.pdf": b"a"}, versioning=False)
    provider, wire = s3(moto)
    point = read(provider, wire)
    assert point.newest is None and point.calls == 1
    assert point.cause.startswith(f"versioning was never enabled on bucket {BUCKET}: ")


def test_s3_missing_bucket_is_a_provider_error_naming_it(moto: MotoServer) -> None:
    provider, wire = s3(moto)
    with pytest.raises(PermanentError) as raised:
        provider.recovery_point()
    assert raised.value.code == "NoSuchBucket" and f"`{BUCKET}`" in raised.value.message
    assert wire.sent == ["GetBucketVersioning"]


# --------------------------------------------------------------------------------------------- what moto cannot show


def stubbed(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def instance(**extra: Any) -> dict[str, Any]:
    return {"DBInstanceIdentifier": SRC, "DBInstanceStatus": "creating", "BackupRetentionPeriod": 7, **extra}


def snapshot(name: str, status: str, at: datetime | None, key: str = "DBSnapshotIdentifier") -> dict[str, Any]:
    found: dict[str, Any] = {key: name, "Status": status, "SnapshotType": "automated"}
    if at is not None:
        found["SnapshotCreateTime"] = at
    return found


def test_rds_without_a_restorable_time_falls_back_to_the_newest_automated_snapshot() -> None:
    client = stubbed("rds")
    provider = AwsRds(environment="prod", resource="database", settings={"instance": SRC}, client=client)
    older, newer = NOW - timedelta(days=2), NOW - timedelta(days=1)
    with Stubber(client) as stub:
        stub.add_response("describe_db_instances", {"DBInstances": [instance()]}, {"DBInstanceIdentifier": SRC})
        stub.add_response("describe_db_snapshots", {"DBSnapshots": [
            snapshot("rds:db-old", "available", older), snapshot("rds:db-new", "available", newer),
            snapshot("rds:db-making", "creating", NOW)]},
            {"DBInstanceIdentifier": SRC, "SnapshotType": "automated", "MaxRecords": 100})
        point = provider.recovery_point()
        stub.assert_no_pending_responses()
    assert point.newest == newer and point.what == "automated snapshot rds:db-new" and point.calls == 2
    assert point.failed == () and "no latest restorable time" in point.cause


def test_rds_failed_newest_snapshot_is_the_cause_and_is_listed() -> None:
    client = stubbed("rds")
    provider = AwsRds(environment="prod", resource="database", settings={"instance": SRC}, client=client)
    good = NOW - timedelta(days=3)
    with Stubber(client) as stub:
        stub.add_response("describe_db_instances", {"DBInstances": [instance()]})
        stub.add_response("describe_db_snapshots", {"DBSnapshots": [
            snapshot("rds:db-3", "available", good), snapshot("rds:db-2", "failed", NOW - timedelta(days=2)),
            snapshot("rds:db-1", "failed", NOW - timedelta(days=1))]})
        point = provider.recovery_point()
        stub.assert_no_pending_responses()
    assert point.newest == good and point.what == "automated snapshot rds:db-3" and point.calls == 2
    assert point.failed == ("rds:db-1", "rds:db-2")
    assert point.cause == "the newest automated snapshot rds:db-1 failed"


def test_rds_no_restorable_time_and_no_snapshot_has_no_point() -> None:
    client = stubbed("rds")
    provider = AwsRds(environment="prod", resource="database", settings={"instance": SRC}, client=client)
    with Stubber(client) as stub:
        stub.add_response("describe_db_instances", {"DBInstances": [instance()]})
        stub.add_response("describe_db_snapshots", {"DBSnapshots": []})
        point = provider.recovery_point()
    assert point.newest is None and point.calls == 2 and "first automated backup" in point.cause


def test_aurora_without_a_restorable_time_reads_cluster_snapshots() -> None:
    client = stubbed("rds")
    provider = AuroraProvider(environment="prod", resource="database", settings={"cluster": SRC, "instance": SRC},
                              client=client)
    taken = NOW - timedelta(hours=20)
    key = "DBClusterSnapshotIdentifier"
    with Stubber(client) as stub:
        stub.add_response("describe_db_clusters", {"DBClusters": [
            {"DBClusterIdentifier": SRC, "Status": "available", "BackupRetentionPeriod": 1}]},
            {"DBClusterIdentifier": SRC})
        stub.add_response("describe_db_cluster_snapshots", {"DBClusterSnapshots": [
            snapshot("rds:c-1", "available", taken, key), snapshot("rds:c-0", "failed", None, key)]},
            {"DBClusterIdentifier": SRC, "SnapshotType": "automated", "MaxRecords": 100})
        point = provider.recovery_point()
        stub.assert_no_pending_responses()
    assert point.newest == taken and point.what == "automated snapshot rds:c-1" and point.calls == 2
    assert point.failed == ("rds:c-0",) and point.cause == "the newest automated snapshot rds:c-0 failed"


def test_aurora_retention_zero_and_throttling() -> None:
    client = stubbed("rds")
    provider = AuroraProvider(environment="prod", resource="database", settings={"cluster": SRC}, client=client)
    with Stubber(client) as stub:
        stub.add_response("describe_db_clusters", {"DBClusters": [
            {"DBClusterIdentifier": SRC, "BackupRetentionPeriod": 0, "LatestRestorableTime": NOW}]})
        stub.add_client_error("describe_db_clusters", "Throttling", http_status_code=400)
        point = provider.recovery_point()
        assert point.newest is None and point.calls == 1
        assert point.cause.startswith(f"automated backups are off for {SRC} (backup retention 0 days)")
        with pytest.raises(ProviderError) as raised:
            provider.recovery_point()
    assert raised.value.code == "Throttling"


def test_s3_replication_read_refused_keeps_the_recovery_point_and_says_so() -> None:
    client = stubbed("s3")
    provider = AwsS3(environment="prod", resource="objects", settings={"bucket": BUCKET}, client=client,
                     clock=FakeClock(NOW))
    with Stubber(client) as stub:
        stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, {"Bucket": BUCKET})
        stub.add_client_error("get_bucket_replication", "AccessDenied", http_status_code=403)
        point = provider.recovery_point()
    assert point.newest is not None and point.what.endswith("; replication unknown (AccessDenied)")


# --------------------------------------------------------------------------------------------- the port


def test_every_aws_store_provider_is_a_recovery_point_reader(moto: MotoServer) -> None:
    settings = {"region": "us-east-1", "endpoint_url": moto.url}
    built = [build_aws_provider(environment="prod", resource="database", settings={**settings, "instance": SRC}),
             build_aws_provider(environment="prod", resource="objects", settings={**settings, "bucket": BUCKET}),
             AuroraProvider(environment="prod", resource="database", settings={**settings, "cluster": SRC})]
    assert [type(p) for p in built] == [AwsRds, AwsS3, AuroraProvider]
    assert all(isinstance(p, RecoveryPointReader) for p in built)
