"""Drilling `vectors-restore`: Qdrant recovers the snapshot into a scratch collection `<collection>-drill-<run>`,
counts its points, then deletes it; the live collection is never touched.

The sandbox through the engine harness (the whole `/dr drill`), then the real Qdrant provider through the real
qdrant-client against the fake server in tests/doubles (recovery into the scratch collection, the delete guard)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from integrations.qdrant import QdrantProvider, build_qdrant_provider
from integrations.sandbox import build_sandbox_provider
from integrations.sandbox.vectors import QDRANT_KIND
from runbooks.catalog import load_catalog
from runbooks.drills import BANNER, Ledger, drill_variant
from runbooks.errors import PermanentError, TransientError
from runbooks.models import EventKind, IncidentStatus, RunStatus, StepStatus
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_qdrant import FakeQdrant, Snapshot
from tests.engine_harness import Harness, harness_fixture
from tests.test_qdrant import T0, MemoryState

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")

harness = pytest.fixture(harness_fixture)

LIVE = "documents-staging"  # the staging collection in bot.config.SANDBOX_CONFIG
SCRATCH = f"{LIVE}-drill-r1"  # R-1's short id is r1
RESTORE, COUNT, DELETE = "vectors.restore_snapshot", "vectors.count_points", "vectors.delete_collection"


# --------------------------------------------------------------------------------------------- the runbook


def test_the_drill_variant_recovers_into_a_scratch_collection_and_deletes_it() -> None:
    variant = drill_variant(load_catalog().get("vectors-restore"))
    steps = {s.id: s for s in variant.steps}
    restore = steps["restore_snapshot"]
    assert restore.params["collection"] == "{{ env.vectors.collection }}-drill-{{ run.short }}"
    assert restore.params["source_collection"] == "{{ env.vectors.collection }}"
    assert restore.creates is not None and restore.creates.kind == "collection"
    assert restore.creates.name == restore.params["collection"] and not restore.marks_restored
    assert steps["count"].params["collection"] == restore.params["collection"]
    [cleanup] = variant.cleanup
    assert (cleanup.id, cleanup.action, cleanup.guarded, cleanup.removes) == (
        "delete_drill_collection", DELETE, True, ("restore_snapshot",))
    assert cleanup.params == {"collection": restore.params["collection"]}
    assert not variant.recovery and variant.drilled


# --------------------------------------------------------------------------------------------- sandbox, engine


def collections(h: Harness) -> dict[str, dict[str, Any]]:
    return h.engine.store.list_state(kind=QDRANT_KIND)


def materialise(h: Harness, env: str = "staging") -> None:
    """The sandbox seeds its collection on first sight: look at it once (a read-only plan)."""
    resources = h.engine.settings.environment(env).resources
    vectors = h.engine.providers(environment=env, resource="vectors",
                                 config=resources["vectors"].settings() | {"provider": resources["vectors"].provider})
    vectors.plan(action="count_points", params={"collection": LIVE})


def snapshots(h: Harness) -> list[dict[str, Any]]:
    """The live collection's snapshots, oldest first."""
    return sorted(collections(h)[f"staging/{LIVE}"]["snapshots"], key=lambda s: str(s["created_at"]))


def outputs(h: Harness, step_id: str) -> dict[str, Any]:
    [step] = [s for s in h.engine.store.steps_for(run_id="R-1")
              if s.step_id == step_id and s.status is StepStatus.SUCCEEDED]
    return dict(step.outputs)


def test_a_vectors_drill_recovers_into_a_scratch_collection_and_deletes_it(harness: Callable[..., Harness]) -> None:
    h = harness()
    materialise(h)
    before = collections(h)
    assert set(before) == {f"staging/{LIVE}"}
    newest = snapshots(h)[-1]

    reply = h.say("/dr drill vectors-restore staging snapshot=latest")
    assert "Drill INC-1 opened" in reply.text and BANNER in reply.text
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED, run
    incident = h.engine.store.get_incident("INC-1")
    assert incident is not None and incident.drill and incident.status is IncidentStatus.RESOLVED

    planned = h.recorder.last(EventKind.RUN_PLANNED)
    assert planned.text.startswith("Drill plan for R-1") and f"{BANNER}." in planned.text
    assert f"Creates: collection {SCRATCH}." in planned.text
    assert "Deletes at the end, whatever happens (success, failure, cancel, a crash): Delete the drill's scratch " \
           f"collection ({SCRATCH})." in planned.text
    plan = planned.data["plan"]
    assert plan["drill"] is True
    assert [s["action"] for s in plan["steps"]] == [RESTORE, COUNT, "builtin.report"]
    restore = plan["steps"][0]
    assert restore["params"] == {"collection": SCRATCH, "snapshot": "latest", "source_collection": LIVE}
    assert restore["details"]["snapshot"] == newest["name"] and restore["details"]["source_collection"] == LIVE
    assert "creates" in restore["details"] and "warning" not in restore["details"], "nothing is overwritten"
    assert plan["steps"][1]["params"]["collection"] == SCRATCH
    assert [(s["id"], s["params"]) for s in plan["cleanup"]] == [("delete_drill_collection", {"collection": SCRATCH})]
    assert plan["creates"][0]["name"] == SCRATCH

    # the scratch collection was made from the snapshot, with its points, counted, then deleted
    after = collections(h)
    assert set(after) == {f"staging/{LIVE}", f"staging/{SCRATCH}"}
    scratch = after[f"staging/{SCRATCH}"]
    assert scratch["points_count"] == newest["points_count"] and scratch["recovered_from"] == newest["name"]
    assert scratch["source_collection"] == LIVE and scratch["snapshots"] == []
    assert scratch.get("deleted_at"), "and it is gone"
    assert outputs(h, "restore_snapshot")["points_count"] == newest["points_count"]
    assert outputs(h, "count")["points_count"] == newest["points_count"]
    assert outputs(h, "delete_drill_collection") == {"deleted": True}
    assert after[f"staging/{LIVE}"] == before[f"staging/{LIVE}"], "the live collection is untouched"

    report = h.recorder.last(EventKind.RUN_REPORT)
    assert report.text.startswith("Drill: recovered snapshot") and SCRATCH in report.text
    assert "Nothing live was changed." in report.text
    cleanup = h.recorder.wait_for(EventKind.RUN_CLEANUP, timeout=60)
    assert cleanup.text.startswith("Clean-up of R-1: everything it made is gone.")
    assert [(r["kind"], r["name"]) for r in cleanup.data["resources"]] == [("collection", SCRATCH)]
    assert cleanup.data["left"] == 0
    assert Ledger(h.engine.store).leaks(now=h.engine.clock.now() + timedelta(days=1)) == []
    kinds = h.recorder.kinds()
    assert EventKind.INCIDENT_RESTORED not in kinds, "a drill never marks anything restored"
    assert kinds.index(EventKind.RUN_SUCCEEDED) < kinds.index(EventKind.RUN_CLEANUP)


def test_a_vectors_drill_of_an_older_snapshot_counts_that_snapshots_points(harness: Callable[..., Harness]) -> None:
    h = harness()
    materialise(h)
    before = collections(h)[f"staging/{LIVE}"]
    oldest = snapshots(h)[0]
    assert oldest["points_count"] != before["points_count"]
    h.say(f"/dr drill vectors-restore staging snapshot={oldest['name']}")
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert outputs(h, "count")["points_count"] == oldest["points_count"]
    assert collections(h)[f"staging/{LIVE}"] == before
    assert h.recorder.last(EventKind.RUN_CLEANUP).data["left"] == 0


def test_the_sandbox_deletes_only_drill_collections() -> None:
    state, clock = MemoryState(), FakeClock(T0)
    vectors: Provider = build_sandbox_provider(environment="prod", resource="vectors",
                                               settings={"collection": "documents"}, state=state, clock=clock,
                                               speed=1e5)
    [refused] = vectors.preflight(action=DELETE, params={"collection": "documents"})
    assert refused.startswith("Refusing to delete collection `documents`")
    with pytest.raises(PermanentError, match="Refusing to delete collection `documents`"):
        vectors.start(action=DELETE, params={"collection": "documents"}, run_id="R-1")
    with pytest.raises(PermanentError, match="Refusing"):
        vectors.start(action=DELETE, params={"collection": "other"}, run_id="R-1")
    assert state.load_state(kind=QDRANT_KIND, key="prod/documents")["points_count"] == 221_184  # type: ignore
    # already absent: success
    op = vectors.start(action=DELETE, params={"collection": "documents-drill-r1"}, run_id="R-1")
    assert finish(vectors, op, clock)[-1].outputs == {"deleted": True}


# --------------------------------------------------------------------------------------------- real provider


@pytest.fixture
def fake() -> Iterator[FakeQdrant]:
    with FakeQdrant(api_key="qk-drill", recovery_polls=3) as server:
        server.add_collection("documents", points_count=221_184)
        yield server


@pytest.fixture
def snaps(fake: FakeQdrant) -> list[Snapshot]:
    oldest = fake.add_snapshot("documents", at=T0 - timedelta(days=1, hours=11), points_count=221_000)
    newest = fake.add_snapshot("documents", at=T0 - timedelta(hours=11), points_count=221_100)
    return [oldest, newest]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def qdrant(fake: FakeQdrant, clock: FakeClock, state: MemoryState | None = None) -> QdrantProvider:
    built = build_qdrant_provider(environment="prod", resource="vectors",
                                  settings={"url": fake.url, "collection": "documents", "api_key_env": "QDRANT_KEY"},
                                  state=state or MemoryState(), clock=clock, environ={"QDRANT_KEY": "qk-drill"})
    assert isinstance(built, QdrantProvider)
    return built


DRILL_PARAMS = {"collection": "documents-drill-r1", "snapshot": "latest", "source_collection": "documents"}


def test_recovering_into_a_drill_collection_uses_the_sources_snapshot_and_leaves_it_untouched(
        fake: FakeQdrant, snaps: list[Snapshot], clock: FakeClock) -> None:
    newest = snaps[-1]
    p = qdrant(fake, clock)
    location = f"{fake.url}/collections/documents/snapshots/{newest.name}"
    plan = p.plan(action=RESTORE, params=DRILL_PARAMS)
    assert plan["snapshot"] == newest.name and plan["source_collection"] == "documents"
    assert plan["location"] == location and plan["points_now"] is None
    assert "documents-drill-r1" in plan["creates"] and "warning" not in plan and "problem" not in plan
    assert p.preflight(action=RESTORE, params=DRILL_PARAMS) == []
    assert p.preflight(action=COUNT, params={"collection": "documents"}) == []

    op = p.start(action=RESTORE, params=DRILL_PARAMS, run_id="R-1")
    assert op.target == "documents-drill-r1"
    seen = finish(p, op, clock)
    assert not seen[-1].failed and seen[-1].outputs["points_count"] == newest.points_count
    assert any(s.status != "green" for s in seen[:-1])

    [recover] = fake.calls("PUT", "/snapshots/recover")
    assert recover.path == "/collections/documents-drill-r1/snapshots/recover"
    assert recover.body["location"] == location and recover.body["checksum"] == newest.checksum
    assert recover.query.get("wait") == "false"
    live = fake.collections["documents"]
    assert (live.points_count, live.status, [s.name for s in live.snapshots]) == (
        221_184, "green", [s.name for s in snaps])
    assert not [r for r in fake.requests if r.method in ("PUT", "POST", "DELETE")
                and r.path.startswith("/collections/documents/") and not r.path.endswith("/points/count")]
    assert fake.collections["documents-drill-r1"].points_count == newest.points_count

    again = p.start(action=RESTORE, params=DRILL_PARAMS, run_id="R-1")
    assert again.id == op.id and len(fake.calls("PUT", "/snapshots/recover")) == 1, "a re-start attaches"


def test_delete_collection_refuses_a_live_collection(fake: FakeQdrant, snaps: list[Snapshot],
                                                     clock: FakeClock) -> None:
    p = qdrant(fake, clock)
    for name in ("documents", "other"):
        [problem] = p.preflight(action=DELETE, params={"collection": name})
        assert problem.startswith(f"Refusing to delete collection `{name}`") and "-drill-" in problem
        assert p.plan(action=DELETE, params={"collection": name})["problem"] == problem
        with pytest.raises(PermanentError, match=f"Refusing to delete collection `{name}`"):
            p.start(action=DELETE, params={"collection": name}, run_id="R-1")
    assert fake.calls("DELETE") == [] and fake.collections["documents"].points_count == 221_184


def test_delete_collection_deletes_a_drill_collection_and_an_absent_one_is_success(
        fake: FakeQdrant, snaps: list[Snapshot], clock: FakeClock) -> None:
    p = qdrant(fake, clock)
    finish(p, p.start(action=RESTORE, params=DRILL_PARAMS, run_id="R-1"), clock)
    plan = p.plan(action=DELETE, params={"collection": "documents-drill-r1"})
    assert plan["exists"] is True and plan["points_now"] == snaps[-1].points_count and "problem" not in plan
    assert p.preflight(action=DELETE, params={"collection": "documents-drill-r1"}) == []

    op = p.start(action=DELETE, params={"collection": "documents-drill-r1"}, run_id="R-1")
    final = finish(p, op, clock)[-1]
    assert final.done and not final.failed and final.outputs == {"deleted": True}
    assert "documents-drill-r1" not in fake.collections and "documents" in fake.collections
    assert [c.path for c in fake.calls("DELETE")] == ["/collections/documents-drill-r1"]

    again = finish(p, p.start(action=DELETE, params={"collection": "documents-drill-r1"}, run_id="R-1"), clock)[-1]
    assert not again.failed and again.outputs == {"deleted": True} and "already absent" in again.message
    fake.fail("DELETE", r"^/collections/documents-drill-r2$", status=404, message="Not found: Collection")
    gone = finish(p, p.start(action=DELETE, params={"collection": "documents-drill-r2"}, run_id="R-2"), clock)[-1]
    assert not gone.failed and gone.outputs == {"deleted": True}, "a 404 is already absent too"


def test_delete_waits_for_this_runs_recovery_into_the_collection(fake: FakeQdrant, snaps: list[Snapshot],
                                                                  clock: FakeClock) -> None:
    p = qdrant(fake, clock, MemoryState())
    op = p.start(action=RESTORE, params=DRILL_PARAMS, run_id="R-1")
    with pytest.raises(TransientError, match="still being recovered"):
        p.start(action=DELETE, params={"collection": "documents-drill-r1"}, run_id="R-1")
    assert fake.calls("DELETE") == []
    finish(p, op, clock)
    final = finish(p, p.start(action=DELETE, params={"collection": "documents-drill-r1"}, run_id="R-1"), clock)[-1]
    assert not final.failed and "documents-drill-r1" not in fake.collections


def test_a_collection_recreated_after_the_delete_fails_the_step(fake: FakeQdrant, snaps: list[Snapshot],
                                                                clock: FakeClock) -> None:
    p = qdrant(fake, clock)
    op = p.start(action=DELETE, params={"collection": "documents-drill-r9"}, run_id="R-9")
    fake.add_collection("documents-drill-r9", points_count=5)  # e.g. a recovery that finished late
    status = p.poll(operation=op)
    assert status.done and status.failed and "still exists" in status.message


def finish(p: Provider, op: Operation, clock: FakeClock) -> list[OperationStatus]:
    seen = [p.poll(operation=op)]
    while not seen[-1].done:
        clock.advance(1)
        seen.append(p.poll(operation=op))
        assert len(seen) < 50
    return seen
