"""Contract: the AWS providers (on moto) and their sandbox twins behave the same through the same sequence —
plan facts, preflight refusals as sentences, declared outputs, and a second start that attaches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.aws import AwsRds, AwsRoute53, AwsS3
from integrations.sandbox import build_sandbox_provider
from runbooks.actions import ACTIONS
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.moto_server import MotoServer, moto_server, seed_bucket, seed_rds_source, seed_zone
from tests.test_sandbox import MemoryState

SRC, RECORD, PRIMARY, DR, BUCKET = "rag-engine-prod", "api.rag-engine.com", "198.51.100.10", "203.0.113.10", \
    "rag-engine-documents"


class Twin:
    """One side of the contract: builds its providers and knows a valid restore time in its world."""

    def __init__(self, name: str, moto: MotoServer | None) -> None:
        self.name, self.moto = name, moto
        self.state = MemoryState()
        self.clock = FakeClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))

    def provider(self, resource: str) -> Provider:
        settings: dict[str, dict[str, Any]] = {
            "database": {"instance": SRC, "region": "us-east-1"},
            "dns": {"zone_id": self.zone, "record": RECORD, "type": "A", "primary": PRIMARY},
            "objects": {"bucket": BUCKET, "page_size": 5}}
        if self.moto is None:
            return build_sandbox_provider(environment="prod", resource=resource, settings=settings[resource],
                                          state=self.state, clock=self.clock, speed=1e5)
        classes: dict[str, Any] = {"database": AwsRds, "dns": AwsRoute53, "objects": AwsS3}
        service = {"database": "rds", "dns": "route53", "objects": "s3"}[resource]
        built: Provider = classes[resource](environment="prod", resource=resource, settings=settings[resource],
                                            client=self.moto.client(service), state=self.state)
        return built

    def seed(self) -> None:
        self.zone = "ZSANDBOX"
        if self.moto is None:
            return
        seed_rds_source(self.moto, SRC)
        self.zone = seed_zone(self.moto, domain="rag-engine.com", record=RECORD, value=PRIMARY)
        s3 = seed_bucket(self.moto, BUCKET, {f"docs/{i:02d}.pdf": b"x" for i in range(8)} | {"images/a.png": b"y"})
        for i in range(4):
            s3.delete_object(Bucket=BUCKET, Key=f"docs/{i:02d}.pdf")
        time.sleep(1.1)  # moto's restorable window begins at the source's creation second

    def restore_time(self) -> datetime:
        if self.moto is None:
            return self.clock.now() - timedelta(hours=2)
        latest = self.moto.client("rds").describe_db_instances(DBInstanceIdentifier=SRC)["DBInstances"][0]
        return latest["LatestRestorableTime"].astimezone(UTC).replace(microsecond=0)  # type: ignore[no-any-return]

    def finish(self, provider: Provider, op: Operation) -> OperationStatus:
        for _ in range(200):
            status = provider.poll(operation=op)
            if status.done:
                return status
            self.clock.advance(30)
        raise AssertionError(f"{self.name}: {op.id} never finished")


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture(params=["aws", "sandbox"])
def twin(request: pytest.FixtureRequest, server: MotoServer) -> Twin:
    server.reset()
    side = Twin(request.param, server if request.param == "aws" else None)
    side.seed()
    return side


# The sandbox's own-target check compares the target's suffix with the run id verbatim, while the catalog names
# targets with the run's *short* id (`R-1` → `r1`); a run id that is its own short id satisfies both.
RUN = "r1"


def declared(action: str) -> frozenset[str]:
    return ACTIONS[action].outputs


def test_restore_pitr(twin: Twin) -> None:
    db = twin.provider("database")
    params = {"source": SRC, "target": f"{SRC}-pitr-r1", "restore_time": twin.restore_time()}
    plan = db.plan(action="database.restore_pitr", params=params)
    assert {"source", "target", "restorable_window", "restore_time"} <= set(plan) and "problem" not in plan
    assert set(plan["restorable_window"]) == {"earliest", "latest"}
    assert db.preflight(action="database.restore_pitr", params=params) == []
    first = db.start(action="database.restore_pitr", params=params, run_id=RUN)
    again = db.start(action="database.restore_pitr", params=params, run_id=RUN)
    assert again.id == first.id
    outputs = twin.finish(db, again).outputs
    assert declared("database.restore_pitr") <= set(outputs)
    assert outputs["instance"] == f"{SRC}-pitr-r1" and outputs["restore_time"] == plan["restore_time"]


def test_restore_pitr_refusals(twin: Twin) -> None:
    db = twin.provider("database")
    missing = db.preflight(action="database.restore_pitr",
                           params={"source": "nope", "target": "nope-pitr-r1", "restore_time": None})
    assert len(missing) == 1 and "`nope` does not exist" in missing[0] and "environments.prod.database" in missing[0]
    future = twin.restore_time() + timedelta(days=3)
    late = db.preflight(action="database.restore_pitr",
                        params={"source": SRC, "target": f"{SRC}-pitr-r2", "restore_time": future})
    assert len(late) == 1 and "outside the restorable window" in late[0] and "pick a time between" in late[0]


def test_switch(twin: Twin) -> None:
    dns = twin.provider("dns")
    params = {"record": RECORD, "type": "A", "target": DR}
    plan = dns.plan(action="dns.switch", params=params)
    assert {"record", "type", "target", "current"} <= set(plan) and plan["current"] == PRIMARY
    assert dns.preflight(action="dns.switch", params=params) == []
    first = dns.start(action="dns.switch", params=params, run_id="R-1")
    again = dns.start(action="dns.switch", params=params, run_id="R-1")
    assert again.id == first.id
    outputs = twin.finish(dns, again).outputs
    assert declared("dns.switch") <= set(outputs)
    assert (outputs["previous"], outputs["current"]) == (PRIMARY, DR)
    assert dns.preflight(action="dns.switch", params=params) == [
        f"`{RECORD}` already points at {DR}; nothing to switch (check environments.prod.dns.dr_target)."]


def test_undelete(twin: Twin) -> None:
    s3 = twin.provider("objects")
    params = {"bucket": BUCKET, "prefix": "docs/", "since": None}
    plan = s3.plan(action="objects.undelete", params=params)
    assert {"bucket", "prefix", "since", "delete_markers", "keys"} <= set(plan) and plan["delete_markers"] > 0
    assert s3.preflight(action="objects.undelete", params=params) == []
    first = twin.finish(s3, s3.start(action="objects.undelete", params=params, run_id="R-1")).outputs
    again = twin.finish(s3, s3.start(action="objects.undelete", params=params, run_id="R-1")).outputs
    assert declared("objects.undelete") <= set(first) and again == first
    assert first["restored"] == len(first["keys"]) > 0 and all(k.startswith("docs/") for k in first["keys"])
    assert s3.plan(action="objects.undelete", params=params)["delete_markers"] == 0
    missing = s3.preflight(action="objects.undelete", params={**params, "bucket": "no-such-bucket"})
    assert len(missing) == 1 and "`no-such-bucket` does not exist" in missing[0]
