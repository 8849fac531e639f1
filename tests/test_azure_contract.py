"""Contract: the Azure PostgreSQL provider (on the TLS fake) and the sandbox database twin behave the same through
the same sequence — plan facts, preflight refusals as sentences, declared outputs, and a second start that
attaches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.azure import AzurePostgres
from integrations.sandbox import build_sandbox_provider
from runbooks.actions import ACTIONS
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_azure import FakeAzure, fake_azure
from tests.test_sandbox import MemoryState

SRC, REPLICA, RG = "rag-engine-prod", "rag-engine-dr", "dr-rg"
RUN = "r1"  # a run id that is its own short id satisfies both sides' own-target checks (see test_aws_contract)


class Twin:
    def __init__(self, name: str, fake: FakeAzure | None) -> None:
        self.name, self.fake = name, fake
        self.state = MemoryState()
        self.clock = FakeClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
        if fake is not None:
            fake.seed_server(RG, SRC, earliest=self.clock.now() - timedelta(days=7))
            fake.seed_server(RG, REPLICA, location="westus", role="AsyncReplica")

    def provider(self) -> Provider:
        if self.fake is None:
            return build_sandbox_provider(environment="prod", resource="database",
                                          settings={"instance": SRC, "region": "us-east-1",
                                                    "replica": {"instance": REPLICA, "region": "us-west-2"}},
                                          state=self.state, clock=self.clock, speed=1e5)
        settings: dict[str, Any] = {"subscription": self.fake.subscription, "resource_group": RG, "server": SRC,
                                    "location": "eastus", "replica": {"server": REPLICA}}
        return AzurePostgres(environment="prod", resource="database", settings=settings, client=self.fake.client(),
                             state=self.state, clock=self.clock)

    def finish(self, provider: Provider, op: Operation) -> OperationStatus:
        for _ in range(200):
            status = provider.poll(operation=op)
            if status.done:
                return status
            self.clock.advance(30)
        raise AssertionError(f"{self.name}: {op.id} never finished")


@pytest.fixture(params=["azure", "sandbox"])
def twin(request: pytest.FixtureRequest) -> Iterator[Twin]:
    if request.param == "sandbox":
        yield Twin("sandbox", None)
        return
    with fake_azure() as fake:
        yield Twin("azure", fake)


def declared(action: str) -> frozenset[str]:
    return ACTIONS[action].outputs


def test_restore_pitr(twin: Twin) -> None:
    db = twin.provider()
    params = {"source": SRC, "target": f"{SRC}-pitr-r1", "restore_time": twin.clock.now() - timedelta(hours=2)}
    plan = db.plan(action="database.restore_pitr", params=params)
    assert {"source", "target", "restorable_window", "restore_time"} <= set(plan) and "problem" not in plan
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
    assert len(missing) == 1 and "`nope` does not exist" in missing[0] and "environments.prod.database" in missing[0]
    late = db.preflight(action="database.restore_pitr", params={
        "source": SRC, "target": f"{SRC}-pitr-r2", "restore_time": twin.clock.now() + timedelta(days=3)})
    assert len(late) == 1 and "outside the restorable window" in late[0] and "pick a time between" in late[0]


def test_check_and_promote_replica(twin: Twin) -> None:
    db = twin.provider()
    params = {"replica": REPLICA}
    assert db.preflight(action="database.promote_replica", params=params) == []
    check = twin.finish(db, db.start(action="database.check_replica", params=params, run_id=RUN))
    assert declared("database.check_replica") <= set(check.outputs)
    first = db.start(action="database.promote_replica", params=params, run_id=RUN)
    assert db.start(action="database.promote_replica", params=params, run_id=RUN).id == first.id
    outputs = twin.finish(db, first).outputs
    assert declared("database.promote_replica") <= set(outputs) and outputs["instance"] == REPLICA
    [problem] = db.preflight(action="database.promote_replica", params=params)
    assert "is not a read replica" in problem and "replica" in problem
