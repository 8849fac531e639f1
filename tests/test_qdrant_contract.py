"""One behaviour, two providers: the Qdrant provider (real client against the fake server) and its sandbox twin
must agree on outputs, `latest`, the overwrite warning, preflight refusals and idempotent starts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from integrations.qdrant import build_qdrant_provider
from integrations.sandbox import build_sandbox_provider
from integrations.sandbox.records import create_count
from integrations.sandbox.vectors import QDRANT_KIND
from runbooks.actions import ACTIONS
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_qdrant import FakeQdrant
from tests.test_qdrant import T0, MemoryState

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")

RESTORE, COUNT = "vectors.restore_snapshot", "vectors.count_points"
SETTINGS = {"url": "http://qdrant:6333", "collection": "documents"}


@dataclass
class World:
    provider: Provider
    clock: FakeClock
    snapshots: Callable[[], list[tuple[str, str, str]]]
    """(name, ISO time with Z, checksum), oldest first."""
    recoveries: Callable[[], int]
    """How many recoveries were actually started on the server."""


def qdrant_world() -> Iterator[World]:
    with FakeQdrant(api_key="qk-contract", recovery_polls=2) as fake:
        fake.add_collection("documents", points_count=221_184)
        nightly = T0.replace(hour=1)
        for back in (1, 0, 2):  # listed out of time order
            fake.add_snapshot("documents", at=nightly - timedelta(days=back), points_count=221_184 - back * 57)

        def snapshots() -> list[tuple[str, str, str]]:
            listed = sorted(fake.collections["documents"].snapshots, key=lambda s: s.creation_time)
            return [(s.name, s.creation_time + "Z", s.checksum) for s in listed]

        clock = FakeClock(T0)
        provider = build_qdrant_provider(environment="prod", resource="vectors",
                                         settings={**SETTINGS, "url": fake.url, "api_key_env": "QDRANT_API_KEY"},
                                         state=MemoryState(), clock=clock, environ={"QDRANT_API_KEY": "qk-contract"})
        yield World(provider, clock, snapshots, lambda: len(fake.calls("PUT", "/snapshots/recover")))


def sandbox_world() -> Iterator[World]:
    state, clock = MemoryState(), FakeClock(T0)
    provider = build_sandbox_provider(environment="prod", resource="vectors", settings=SETTINGS, state=state,
                                      clock=clock, speed=1e5)

    def snapshots() -> list[tuple[str, str, str]]:
        provider.plan(action=COUNT, params={"collection": "documents"})  # seeds the simulated world
        world = state.load_state(kind=QDRANT_KIND, key="prod/documents") or {}
        listed = sorted(world["snapshots"], key=lambda s: s["created_at"])
        return [(s["name"], s["created_at"], s["checksum"]) for s in listed]

    yield World(provider, clock, snapshots,
                lambda: create_count(state, action="vectors.restore_snapshot", target="documents"))


@pytest.fixture(params=["qdrant", "sandbox"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    yield from (qdrant_world() if request.param == "qdrant" else sandbox_world())


def finish(world: World, op: Operation) -> list[OperationStatus]:
    seen = [world.provider.poll(operation=op)]
    while not seen[-1].done:
        world.clock.advance(1)
        seen.append(world.provider.poll(operation=op))
        assert len(seen) < 100
    return seen


def is_sentence(text: str) -> bool:
    return text[:1].isupper() and text.rstrip().endswith((".", ")"))


def test_actions_match_the_vocabulary(world: World) -> None:
    declared = {a.name for a in ACTIONS.values() if a.resource == "vectors"}
    assert world.provider.actions() == declared


def test_plan_resolves_latest_and_warns_about_overwrite(world: World) -> None:
    newest = world.snapshots()[-1]
    plan = world.provider.plan(action=RESTORE, params={"collection": "documents", "snapshot": "latest"})
    assert plan["snapshot"] == newest[0] and plan["snapshot_time"] == newest[1]
    assert "overwrites" in plan["warning"].lower() and "documents" in plan["warning"]
    assert plan["points_now"] == 221_184 and plan["snapshot_size"]
    assert "problem" not in plan
    assert world.recoveries() == 0
    json.dumps(plan)


def test_restore_outputs_cover_the_declared_outputs(world: World) -> None:
    newest = world.snapshots()[-1]
    op = world.provider.start(action=RESTORE, params={"collection": "documents", "snapshot": "latest"}, run_id="R-1")
    seen = finish(world, op)
    assert not seen[-1].failed and seen[-1].status == "green"
    assert any(s.status != "green" for s in seen[:-1]), "the wait step must see the recovery in progress"
    outputs: dict[str, Any] = seen[-1].outputs
    assert set(outputs) >= ACTIONS[RESTORE].outputs
    assert outputs["snapshot"] == newest[0] and outputs["snapshot_time"] == newest[1]
    assert outputs["points_count"] == 221_184
    json.dumps(outputs)


def test_named_snapshot_is_used(world: World) -> None:
    oldest = world.snapshots()[0]
    op = world.provider.start(action=RESTORE, params={"collection": "documents", "snapshot": oldest[0]},
                              run_id="R-1")
    outputs = finish(world, op)[-1].outputs
    assert outputs["snapshot"] == oldest[0] and outputs["points_count"] == 221_184 - 2 * 57


def test_preflight_refusals_are_sentences(world: World) -> None:
    p = world.provider
    newest = world.snapshots()[-1]
    assert p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "latest",
                                               "checksum": newest[2]}) == []
    [unknown] = p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "nightly-1"})
    assert "`nightly-1` does not exist" in unknown and "latest" in unknown and newest[0] in unknown
    [checksum] = p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "latest",
                                                     "checksum": "0" * 64})
    assert "does not match" in checksum and newest[0] in checksum
    [collection] = p.preflight(action=RESTORE, params={"collection": "nope", "snapshot": "latest"})
    assert "`nope` doesn't exist" in collection and "drbot.yml" in collection
    [priority] = p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "latest",
                                                     "priority": "first"})
    assert "priority must be one of" in priority.lower() and priority.endswith(".")
    for sentence in (unknown, checksum, collection):
        assert is_sentence(sentence), sentence
    assert world.recoveries() == 0


def test_start_twice_attaches(world: World) -> None:
    params = {"collection": "documents", "snapshot": "latest"}
    first = world.provider.start(action=RESTORE, params=params, run_id="R-1")
    second = world.provider.start(action=RESTORE, params=params, run_id="R-1")
    assert second.id == first.id and second.target == first.target == "documents"
    assert world.recoveries() == 1


def test_count_points_and_verify(world: World) -> None:
    op = world.provider.start(action=COUNT, params={"collection": "documents"}, run_id="R-1")
    outputs = finish(world, op)[-1].outputs
    assert set(outputs) >= ACTIONS[COUNT].outputs and outputs["points_count"] == 221_184
    assert world.provider.verify(action=COUNT, params={"collection": "documents"}, outputs=outputs) == []
    [short] = world.provider.verify(action=COUNT, params={"collection": "documents", "min_count": 10**6},
                                    outputs=outputs)
    assert "below the minimum 1,000,000" in short
