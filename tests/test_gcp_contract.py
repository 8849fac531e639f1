"""Contract: the Cloud SQL provider (discovery client on the local double) and its sandbox twin behave the same
through the same sequence — plan facts, preflight refusals as sentences, declared outputs, a second start that
attaches, replica check and promotion, backup age."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.gcp import build_gcp_provider
from integrations.sandbox import build_sandbox_provider
from runbooks.actions import ACTIONS
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_cloudsql import CloudSqlWorld, fake_cloudsql
from tests.test_sandbox import MemoryState

PROJECT, SRC, REPLICA = "demo-proj", "rag-engine-prod", "rag-engine-dr"
# The sandbox's own-target check compares the target's suffix with the run id verbatim, while the catalog names
# targets with the run's *short* id (`R-1` → `r1`); a run id that is its own short id satisfies both.
RUN = "r1"


class Twin:
    def __init__(self, name: str, world: CloudSqlWorld | None, url: str) -> None:
        self.name, self.world, self.url = name, world, url
        self.state = MemoryState()
        self.clock = FakeClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
        if world is not None:
            world.now = self.clock.now
            world.seed(SRC, region="us-central1")
            world.seed(REPLICA, region="us-east1", master=SRC)

    def provider(self) -> Provider:
        settings: dict[str, Any] = {"instance": SRC, "region": "us-central1",
                                    "replica": {"instance": REPLICA, "region": "us-east1"}}
        if self.world is None:
            return build_sandbox_provider(environment="prod", resource="database", settings=settings,
                                          state=self.state, clock=self.clock, speed=1e5)
        return build_gcp_provider(environment="prod", resource="database", state=self.state, clock=self.clock,
                                  settings={**settings, "project": PROJECT, "endpoint_url": self.url,
                                            "credentials": "anonymous"})

    def finish(self, provider: Provider, op: Operation) -> OperationStatus:
        for _ in range(200):
            status = provider.poll(operation=op)
            if status.done:
                return status
            self.clock.advance(30)
        raise AssertionError(f"{self.name}: {op.id} never finished")


@pytest.fixture(params=["cloudsql", "sandbox"])
def twin(request: pytest.FixtureRequest) -> Iterator[Twin]:
    if request.param == "sandbox":
        yield Twin("sandbox", None, "")
        return
    with fake_cloudsql(project=PROJECT, now=lambda: datetime.now(UTC)) as (world, url):
        yield Twin("cloudsql", world, url)


def declared(action: str) -> frozenset[str]:
    return ACTIONS[action].outputs


def test_restore_pitr(twin: Twin) -> None:
    db = twin.provider()
    params = {"source": SRC, "target": f"{SRC}-pitr-r1", "restore_time": twin.clock.now() - timedelta(hours=2)}
    plan = db.plan(action="database.restore_pitr", params=params)
    assert {"source", "target", "restorable_window", "restore_time"} <= set(plan) and "problem" not in plan
    assert set(plan["restorable_window"]) == {"earliest", "latest"} and plan["restore_time"] == "2026-11-24T10:00:00Z"
    assert db.preflight(action="database.restore_pitr", params=params) == []
    first = db.start(action="database.restore_pitr", params=params, run_id=RUN)
    again = db.start(action="database.restore_pitr", params=params, run_id=RUN)
    assert again.id == first.id
    outputs = twin.finish(db, again).outputs
    assert declared("database.restore_pitr") <= set(outputs)
    assert outputs["instance"] == f"{SRC}-pitr-r1" and outputs["restore_time"] == plan["restore_time"]


def test_restore_pitr_refusals(twin: Twin) -> None:
    db = twin.provider()
    missing = db.preflight(action="database.restore_pitr",
                           params={"source": "nope", "target": "nope-pitr-r1", "restore_time": None})
    assert len(missing) == 1 and "`nope` does not exist" in missing[0]
    assert "environments.prod.database.instance" in missing[0]
    late = db.preflight(action="database.restore_pitr", params={"source": SRC, "target": f"{SRC}-pitr-r2",
                                                                "restore_time": twin.clock.now() + timedelta(days=3)})
    assert len(late) == 1 and "outside the restorable window" in late[0] and "pick a time between" in late[0]


def test_replica(twin: Twin) -> None:
    db = twin.provider()
    check = twin.finish(db, db.start(action="database.check_replica", params={"replica": REPLICA}, run_id=RUN))
    assert declared("database.check_replica") <= set(check.outputs)
    assert (check.outputs["status"], check.outputs["region"]) == ("replicating", "us-east1")
    primary = db.preflight(action="database.promote_replica", params={"replica": SRC})
    assert len(primary) == 1 and "is not a read replica" in primary[0]
    op = db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id=RUN)
    assert db.start(action="database.promote_replica", params={"replica": REPLICA}, run_id=RUN).id == op.id
    promoted = twin.finish(db, op).outputs
    assert declared("database.promote_replica") <= set(promoted) and promoted["instance"] == REPLICA


def test_backup_age(twin: Twin) -> None:
    db = twin.provider()
    assert db.preflight(action="database.backup_age", params={"source": SRC}) == []
    outputs = twin.finish(db, db.start(action="database.backup_age", params={"source": SRC}, run_id=RUN)).outputs
    assert declared("database.backup_age") <= set(outputs) and outputs["age_seconds"] > 0
    missing = db.preflight(action="database.backup_age", params={"source": "nope"})
    assert len(missing) == 1 and "`nope` does not exist" in missing[0]
