"""What moto cannot show, on real boto3 clients with `botocore.stub.Stubber`: an instance that is `creating`
before it is `available`, a Route53 change that is `PENDING` before `INSYNC`, a restorable window that is not
"now", the exact restore request, throttling and not-found errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from integrations.aws import AwsRds, AwsRoute53, translate
from runbooks.errors import PermanentError, PreflightFailed, TransientError
from runbooks.ports import Operation
from tests.doubles.clock import FakeClock

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SRC = "rag-engine-prod"
EARLIEST, LATEST = NOW - timedelta(days=5, hours=3), NOW - timedelta(minutes=5)  # not the 7-day fallback


def client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def rds() -> Iterator[tuple[AwsRds, Stubber]]:
    rds_client = client("rds")
    with Stubber(rds_client) as stub:
        yield AwsRds(environment="prod", resource="database", settings={"instance": SRC, "region": "us-east-1"},
                     client=rds_client, clock=FakeClock(NOW)), stub
        stub.assert_no_pending_responses()


def instance(name: str, status: str = "available", **extra: Any) -> dict[str, Any]:
    return {"DBInstances": [{
        "DBInstanceIdentifier": name, "DBInstanceStatus": status, "Engine": "postgres",
        "DBInstanceClass": "db.r6g.large", "MultiAZ": True, "BackupRetentionPeriod": 7,
        "LatestRestorableTime": LATEST,
        "DBSubnetGroup": {"DBSubnetGroupName": "prod-subnets"},
        "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-1", "Status": "active"}],
        "DBParameterGroups": [{"DBParameterGroupName": "prod-params", "ParameterApplyStatus": "in-sync"}],
        "Endpoint": {"Address": f"{name}.abc.us-east-1.rds.amazonaws.com", "Port": 5432}, "TagList": [],
        **extra}]}


def window(stub: Stubber, name: str = SRC, earliest: datetime | None = EARLIEST) -> None:
    """The automated backups' RestoreWindow, where RDS reports the earliest restorable time."""
    backups = [{"DBInstanceIdentifier": name, "RestoreWindow": {"EarliestTime": earliest, "LatestTime": LATEST}}]
    stub.add_response("describe_db_instance_automated_backups",
                      {"DBInstanceAutomatedBackups": backups if earliest else []}, {"DBInstanceIdentifier": name})


def not_found(stub: Stubber, name: str) -> None:
    stub.add_client_error("describe_db_instances", service_error_code="DBInstanceNotFound",
                          service_message=f"DBInstance {name} not found.", http_status_code=404,
                          expected_params={"DBInstanceIdentifier": name})


def test_restore_polls_through_creating_and_backing_up_to_available(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    target = f"{SRC}-pitr-r1"
    not_found(stub, target)
    stub.add_response("describe_db_instances", instance(SRC), {"DBInstanceIdentifier": SRC})
    window(stub)
    stub.add_response("restore_db_instance_to_point_in_time", {}, {
        "SourceDBInstanceIdentifier": SRC, "TargetDBInstanceIdentifier": target, "UseLatestRestorableTime": True,
        "DBSubnetGroupName": "prod-subnets", "VpcSecurityGroupIds": ["sg-1"], "DBParameterGroupName": "prod-params",
        "DBInstanceClass": "db.r6g.large", "MultiAZ": True,
        "Tags": [{"Key": "drbot:run", "Value": "R-1"}, {"Key": "drbot:source", "Value": SRC},
                 {"Key": "drbot:restore-time", "Value": "2026-11-24T11:55:00Z"}]})
    for status in ("creating", "creating", "backing-up", "available"):
        stub.add_response("describe_db_instances", instance(target, status), {"DBInstanceIdentifier": target})
    op = provider.start(action="database.restore_pitr", params={"source": SRC, "target": target,
                                                                 "restore_time": None}, run_id="R-1")
    seen = [provider.poll(operation=op) for _ in range(4)]
    assert [s.status for s in seen] == ["creating", "creating", "backing-up", "available"]
    assert [s.done for s in seen] == [False, False, False, True]
    assert seen[-1].outputs == {"instance": target, "endpoint": f"{target}.abc.us-east-1.rds.amazonaws.com",
                                "restore_time": "2026-11-24T11:55:00Z"}


def test_an_explicit_restore_time_is_sent_without_use_latest(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    target, moment = f"{SRC}-pitr-r2", NOW - timedelta(hours=2)
    not_found(stub, target)
    stub.add_response("describe_db_instances", instance(SRC), {"DBInstanceIdentifier": SRC})
    window(stub)
    stub.add_response("restore_db_instance_to_point_in_time", {}, {
        "SourceDBInstanceIdentifier": SRC, "TargetDBInstanceIdentifier": target, "RestoreTime": moment,
        "DBSubnetGroupName": "prod-subnets", "VpcSecurityGroupIds": ["sg-1"], "DBParameterGroupName": "prod-params",
        "DBInstanceClass": "db.r6g.large", "MultiAZ": True,
        "Tags": [{"Key": "drbot:run", "Value": "R-2"}, {"Key": "drbot:source", "Value": SRC},
                 {"Key": "drbot:restore-time", "Value": "2026-11-24T10:00:00Z"}]})
    op = provider.start(action="database.restore_pitr", params={"source": SRC, "target": target,
                                                                 "restore_time": moment}, run_id="R-2")
    assert op.data["restore_time"] == "2026-11-24T10:00:00Z"


def test_a_restore_time_outside_the_window_is_refused_with_both_bounds(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    target = f"{SRC}-pitr-r3"
    stub.add_response("describe_db_instances", instance(SRC), {"DBInstanceIdentifier": SRC})
    window(stub)
    not_found(stub, target)
    problems = provider.preflight(action="database.restore_pitr", params={
        "source": SRC, "target": target, "restore_time": NOW - timedelta(days=6)})
    assert problems == [
        "Restore time 2026-11-18T12:00:00Z is outside the restorable window of `rag-engine-prod` "
        "(2026-11-19T09:00:00Z to 2026-11-24T11:55:00Z); pick a time between 2026-11-19T09:00:00Z and "
        "2026-11-24T11:55:00Z, or use `latest`."]


def test_without_a_restore_window_the_window_starts_at_creation_or_retention(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    described = instance(SRC, InstanceCreateTime=NOW - timedelta(days=2))
    stub.add_response("describe_db_instances", described, {"DBInstanceIdentifier": SRC})
    window(stub, earliest=None)
    plan = provider.plan(action="database.restore_pitr", params={"source": SRC, "target": "x-pitr-r1",
                                                                  "restore_time": NOW - timedelta(days=3)})
    assert plan["restorable_window"] == {"earliest": "2026-11-22T12:00:00Z", "latest": "2026-11-24T11:55:00Z"}
    assert "outside the restorable window" in plan["problem"]


def test_failed_restore_status_is_reported_as_failed(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    stub.add_response("describe_db_instances", instance("t-pitr-r1", "incompatible-restore"),
                      {"DBInstanceIdentifier": "t-pitr-r1"})
    status = provider.poll(operation=Operation(provider="aws-rds", action="restore_pitr", id="x",
                                               target="t-pitr-r1", data={"restore_time": "2026-11-24T10:00:00Z"}))
    assert status.done and status.failed and "incompatible-restore" in status.message


def test_throttling_is_transient_and_not_found_is_a_sentence(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    stub.add_client_error("describe_db_instances", service_error_code="ThrottlingException",
                          service_message="Rate exceeded", http_status_code=400)
    with pytest.raises(TransientError, match="AWS throttled drbot") as caught:
        provider.plan(action="database.restore_pitr", params={"source": SRC, "target": "t", "restore_time": None})
    assert caught.value.code == "ThrottlingException" and caught.value.__cause__ is not None
    not_found(stub, SRC)
    with pytest.raises(PermanentError, match=f"RDS instance `{SRC}` does not exist .*check environments.prod"):
        provider.start(action="database.backup_age", params={"source": SRC}, run_id="R-1")


def test_promotion_is_refused_while_the_replica_is_backing_up(rds: tuple[AwsRds, Stubber]) -> None:
    provider, stub = rds
    replica = instance("r", "backing-up", ReadReplicaSourceDBInstanceIdentifier=SRC)
    stub.add_response("describe_db_instances", replica, {"DBInstanceIdentifier": "r"})
    stub.add_response("describe_db_instances", replica, {"DBInstanceIdentifier": "r"})
    assert provider.preflight(action="database.promote_replica", params={"replica": "r"}) == [
        "Replica `r` is `backing-up`; RDS refuses to promote until the backup finishes. Wait until it is "
        "`available`, then retry."]


def test_route53_change_is_followed_from_pending_to_insync() -> None:
    r53 = client("route53")
    provider = AwsRoute53(environment="prod", resource="dns", settings={"zone_id": "Z1", "record": "api.x.com"},
                          client=r53)
    with Stubber(r53) as stub:
        stub.add_response("list_resource_record_sets", {"ResourceRecordSets": [{
            "Name": "api.x.com.", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "198.51.100.10"}]}],
            "IsTruncated": False, "MaxItems": "1"})
        stub.add_response("change_resource_record_sets", {"ChangeInfo": {
            "Id": "/change/C1", "Status": "PENDING", "SubmittedAt": NOW}})
        for word in ("PENDING", "PENDING", "INSYNC"):
            stub.add_response("get_change", {"ChangeInfo": {"Id": "/change/C1", "Status": word,
                                                            "SubmittedAt": NOW}})
        op = provider.start(action="dns.switch", params={"record": "api.x.com", "type": "A",
                                                         "target": "203.0.113.10"}, run_id="R-1")
        seen = [provider.poll(operation=op) for _ in range(3)]
        stub.assert_no_pending_responses()
    assert [(s.status, s.done) for s in seen] == [("PENDING", False), ("PENDING", False), ("INSYNC", True)]
    assert seen[-1].outputs == {"previous": "198.51.100.10", "current": "203.0.113.10", "change_id": "/change/C1"}


def test_connection_errors_are_transient_and_messages_are_redacted() -> None:
    error = translate(EndpointConnectionError(endpoint_url="https://rds.us-east-1.amazonaws.com"),
                      provider="aws-rds", doing="describing RDS instance `x`")
    assert isinstance(error, TransientError) and "Could not reach the AWS endpoint" in error.message
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "key AKIAABCDEFGHIJKLMNOP denied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "DescribeDBInstances")
    refused = translate(denied, provider="aws-rds", doing="describing")
    assert isinstance(refused, PermanentError) and "AKIAABCDEFGHIJKLMNOP" not in refused.message
    assert "IAM role or AWS_PROFILE" in refused.message
    server = ClientError({"Error": {"Code": "InternalFailure", "Message": "oops"},
                          "ResponseMetadata": {"HTTPStatusCode": 500}}, "GetChange")
    assert isinstance(translate(server, provider="route53", doing="x"), TransientError)
    missing = ClientError({"Error": {"Code": "NoSuchHostedZone", "Message": "No hosted zone found with ID: Z9"},
                           "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetHostedZone")
    flagged = translate(missing, provider="route53", doing="reading hosted zone `Z9`", subject="Z9",
                        setting="environments.prod.dns.zone_id", preflight=True)
    assert isinstance(flagged, PreflightFailed)
    assert flagged.message == ("The Route53 hosted zone `Z9` does not exist (NoSuchHostedZone) — found while reading "
                               "hosted zone `Z9`; check environments.prod.dns.zone_id in drbot.yml or the step's "
                               "parameters.")
