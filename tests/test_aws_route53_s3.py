"""The route53 and s3 providers against moto in server mode (real boto3 clients over HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.aws import AwsRoute53, AwsS3
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.moto_server import MotoServer, moto_server, seed_bucket, seed_zone
from tests.test_sandbox import MemoryState

RECORD, PRIMARY, DR = "api.rag-engine.com", "198.51.100.10", "203.0.113.10"
BUCKET = "rag-engine-documents"


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


def finish(p: Provider, op: Operation) -> OperationStatus:
    status = p.poll(operation=op)
    assert status.done, status
    return status


# --------------------------------------------------------------------------------------------- route53


def dns(moto: MotoServer, zone: str, state: MemoryState | None = None) -> AwsRoute53:
    return AwsRoute53(environment="prod", resource="dns", settings={"zone_id": zone, "record": RECORD},
                      client=moto.client("route53"), state=state)


def record_value(moto: MotoServer, zone: str, rtype: str = "A") -> Any:
    sets = moto.client("route53").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    found = [s for s in sets if s["Name"].rstrip(".") == RECORD and s["Type"] == rtype]
    return found[0] if found else None


def test_switch_upserts_the_target_keeps_the_previous_value_and_health_checks(moto: MotoServer) -> None:
    zone = seed_zone(moto, domain="rag-engine.com", record=RECORD, value=PRIMARY)
    provider, state = None, MemoryState()
    provider = dns(moto, zone, state)
    params = {"record": RECORD, "type": "A", "target": DR}
    plan = provider.plan(action="dns.switch", params=params)
    assert plan["current"] == PRIMARY and plan["target"] == DR and plan["ttl"] == 60
    assert provider.preflight(action="dns.switch", params=params) == []
    op = provider.start(action="dns.switch", params=params, run_id="R-1")
    status = finish(provider, op)
    assert status.status == "INSYNC"
    assert status.outputs["previous"] == PRIMARY and status.outputs["current"] == DR
    assert status.outputs["change_id"] == op.id and op.id
    assert record_value(moto, zone)["ResourceRecords"] == [{"Value": DR}]
    # a restarted start of the same run follows the same change; a no-op switch is refused in preflight
    assert provider.start(action="dns.switch", params=params, run_id="R-1") == op
    assert provider.preflight(action="dns.switch", params=params) == [
        f"`{RECORD}` already points at {DR}; nothing to switch (check environments.prod.dns.dr_target)."]
    health = finish(provider, provider.start(action="dns.health_check", params={"record": RECORD, "expect": DR},
                                             run_id="R-1"))
    assert health.outputs == {"healthy": True, "value": DR}
    stale = {"record": RECORD, "expect": PRIMARY}
    outputs = finish(provider, provider.start(action="dns.health_check", params=stale, run_id="R-1")).outputs
    assert outputs == {"healthy": False, "value": DR}
    assert "expected 198.51.100.10" in provider.verify(action="dns.health_check", params=stale, outputs=outputs)[0]


def test_a_switch_that_already_happened_attaches_without_a_change(moto: MotoServer) -> None:
    zone = seed_zone(moto, domain="rag-engine.com", record=RECORD, value=DR)
    provider = dns(moto, zone)
    status = finish(provider, provider.start(action="dns.switch", params={"record": RECORD, "type": "A",
                                                                          "target": DR}, run_id="R-2"))
    assert status.outputs == {"previous": DR, "current": DR, "change_id": None}
    assert "no change was sent" in status.message


def test_preflight_names_a_missing_zone_record_or_bad_address(moto: MotoServer) -> None:
    zone = seed_zone(moto, domain="rag-engine.com", record=RECORD, value=PRIMARY)
    missing_zone = dns(moto, "ZNOPE").preflight(action="dns.switch",
                                                params={"record": RECORD, "type": "A", "target": DR})
    assert len(missing_zone) == 1 and "hosted zone `ZNOPE` does not exist" in missing_zone[0]
    assert "environments.prod.dns.zone_id" in missing_zone[0]
    provider = dns(moto, zone)
    assert provider.preflight(action="dns.switch", params={"record": "www.rag-engine.com", "type": "A",
                                                           "target": DR})[0].startswith(
        "Record `www.rag-engine.com` (A) does not exist in hosted zone")
    assert provider.preflight(action="dns.switch", params={"record": RECORD, "type": "A", "target": "dr-lb"}) == [
        "Target 'dr-lb' is not a valid A address; give an IP such as 203.0.113.10."]


def test_switch_to_an_alias_target(moto: MotoServer) -> None:
    zone = seed_zone(moto, domain="rag-engine.com", record=RECORD, value=PRIMARY)
    provider = dns(moto, zone)
    alias = {"hosted_zone_id": "Z35SXDOTRQ7X7K", "dns_name": "dr-lb-123.us-east-1.elb.amazonaws.com"}
    status = finish(provider, provider.start(action="dns.switch", params={"record": RECORD, "type": "A",
                                                                          "target": alias}, run_id="R-3"))
    assert status.outputs["previous"] == PRIMARY and status.outputs["current"] == alias
    target = record_value(moto, zone)["AliasTarget"]
    assert target["DNSName"].rstrip(".") == alias["dns_name"] and target["HostedZoneId"] == alias["hosted_zone_id"]


# --------------------------------------------------------------------------------------------- s3


def objects(moto: MotoServer, *, page_size: int = 1000, state: MemoryState | None = None) -> AwsS3:
    return AwsS3(environment="prod", resource="objects", settings={"bucket": BUCKET, "page_size": page_size},
                 client=moto.client("s3"), state=state)


def readable(s3: Any, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


DOCS = {f"docs/{i:02d}.pdf": f"doc {i}".encode() for i in range(6)}


@pytest.mark.parametrize("page_size", [1000, 2])
def test_undelete_removes_markers_under_the_prefix_only(moto: MotoServer, page_size: int) -> None:
    s3 = seed_bucket(moto, BUCKET, {**DOCS, "images/logo.png": b"png"})
    for key in [*list(DOCS)[:4], "images/logo.png"]:
        s3.delete_object(Bucket=BUCKET, Key=key)
    s3.delete_object(Bucket=BUCKET, Key="docs/00.pdf")  # deleted twice: two markers
    provider = objects(moto, page_size=page_size, state=MemoryState())
    params = {"bucket": BUCKET, "prefix": "docs/", "since": None}
    assert provider.preflight(action="objects.undelete", params=params) == []
    plan = provider.plan(action="objects.undelete", params=params)
    assert plan["keys_to_restore"] == 4 and plan["delete_markers"] == 5
    op = provider.start(action="objects.undelete", params=params, run_id="R-1")
    status = finish(provider, op)
    assert status.outputs == {"restored": 4, "keys": list(DOCS)[:4]}
    assert [readable(s3, k) for k in DOCS] == list(DOCS.values())
    assert readable(s3, "images/logo.png") is None  # another prefix is untouched
    assert finish(provider, provider.start(action="objects.undelete", params=params, run_id="R-1")).outputs == \
        status.outputs  # a restarted start reports the same keys


def test_undelete_since_keeps_older_deletions(moto: MotoServer) -> None:
    s3 = seed_bucket(moto, BUCKET, DOCS)
    s3.delete_object(Bucket=BUCKET, Key="docs/00.pdf")
    time.sleep(1.1)  # S3 timestamps have one-second resolution on the wire
    since = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)
    s3.delete_object(Bucket=BUCKET, Key="docs/01.pdf")
    provider = objects(moto)
    status = finish(provider, provider.start(action="objects.undelete",
                                             params={"bucket": BUCKET, "prefix": "docs/", "since": since},
                                             run_id="R-2"))
    assert status.outputs == {"restored": 1, "keys": ["docs/01.pdf"]}
    assert readable(s3, "docs/00.pdf") is None and readable(s3, "docs/01.pdf") == b"doc 1"


def test_preflight_refuses_an_unversioned_or_missing_bucket(moto: MotoServer) -> None:
    seed_bucket(moto, BUCKET, DOCS, versioning=False)
    problems = objects(moto).preflight(action="objects.undelete",
                                       params={"bucket": BUCKET, "prefix": "docs/", "since": None})
    assert problems and problems[0].startswith(f"Versioning on bucket `{BUCKET}` is never enabled")
    missing = objects(moto).preflight(action="objects.undelete",
                                      params={"bucket": "no-such-bucket", "prefix": "docs/", "since": None})
    assert len(missing) == 1 and "S3 bucket `no-such-bucket` does not exist" in missing[0]


def test_rollback_copies_back_the_version_current_at_a_time(moto: MotoServer) -> None:
    s3 = seed_bucket(moto, BUCKET, DOCS)
    time.sleep(1.1)
    at = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)
    s3.put_object(Bucket=BUCKET, Key="docs/02.pdf", Body=b"corrupted")
    s3.delete_object(Bucket=BUCKET, Key="docs/03.pdf")
    provider = objects(moto)
    params = {"bucket": BUCKET, "prefix": "docs/", "at": at}
    assert provider.plan(action="objects.rollback", params=params)["keys_to_copy_back"] == 2
    status = finish(provider, provider.start(action="objects.rollback", params=params, run_id="R-3"))
    assert status.outputs == {"restored": 2, "keys": ["docs/02.pdf", "docs/03.pdf"]}
    assert readable(s3, "docs/02.pdf") == b"doc 2" and readable(s3, "docs/03.pdf") == b"doc 3"
    assert provider.plan(action="objects.rollback", params=params)["keys_to_copy_back"] == 0
