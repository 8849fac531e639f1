"""Drilling `accidental-deletion` (S3 undelete): the drill copies each deleted key's last version under
`drill-<run>/` instead of removing delete markers, then deletes that prefix. Through the engine on the sandbox, the
sandbox twin on its own, and the real S3 provider against moto (server mode, real boto3 clients over HTTP)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from bot.config import SANDBOX_CONFIG
from integrations.aws import AwsS3
from integrations.sandbox.objects import S3_KIND
from runbooks.drills import Ledger
from runbooks.errors import PermanentError
from runbooks.models import EventKind, IncidentStatus, RunStatus
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.moto_server import MotoServer, moto_server, seed_bucket
from tests.engine_harness import Harness, harness_fixture
from tests.test_sandbox import VALID, FakeClock, MemoryState, make, run

harness = pytest.fixture(harness_fixture)

STAGING_BUCKET = "rag-engine-documents-staging"
DRILL_PREFIX = "drill-r1/"
REFUSED = ("Refusing to delete under `docs/` in bucket `{bucket}`: delete_prefix only removes what one drill copied, "
           "under its own prefix `drill-<run>/` (e.g. drill-r1/); live objects are never deleted this way.")


# --------------------------------------------------------------------------------------------- through the engine


def objects_provider(h: Harness, env: str = "staging") -> Any:
    resources = h.engine.settings.environment(env).resources
    return h.engine.providers(environment=env, resource="objects",
                              config=resources["objects"].settings() | {"provider": resources["objects"].provider})


def bucket_objects(h: Harness) -> dict[str, Any]:
    record = h.engine.store.load_state(kind=S3_KIND, key=STAGING_BUCKET)
    assert record is not None
    return dict(record["objects"])


def deleted_keys(objects: dict[str, Any]) -> set[str]:
    """Keys whose newest entry is a delete marker (what a GET answers NoSuchKey for)."""
    found = set()
    for key, entry in objects.items():
        times = [(v["at"], 1) for v in entry["versions"]] + [(m["at"], 0) for m in entry["markers"]]
        if times and max(times)[1] == 0:
            found.add(key)
    return found


def operations(h: Harness, action: str) -> list[dict[str, Any]]:
    return [r for r in h.engine.store.list_state(kind="sandbox.ops").values() if r["action"] == action]


def test_an_undelete_drill_copies_the_deleted_versions_undeletes_nothing_and_deletes_its_copies(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    objects_provider(h).plan(action="undelete", params={"bucket": STAGING_BUCKET, "prefix": "docs/", "since": None})
    before = bucket_objects(h)
    gone = sorted(deleted_keys(before))
    assert len(gone) == 12 and all(k.startswith("docs/") for k in gone)

    reply = h.say("/dr drill accidental-deletion staging prefix=docs/")
    assert "Drill INC-1 opened" in reply.text and "DRILL — no live resource is changed" in reply.text
    h.settle()
    run_ = h.engine.store.get_run("R-1")
    assert run_ is not None and run_.drill and run_.status is RunStatus.SUCCEEDED, run_
    incident = h.engine.store.get_incident("INC-1")
    assert incident is not None and incident.drill and incident.status is IncidentStatus.RESOLVED

    # the plan: what it copies (the counts an undelete's plan gives), what it creates and what it deletes
    planned = h.recorder.last(EventKind.RUN_PLANNED)
    assert planned.text.startswith("Drill plan for R-1")
    assert f"Creates: object copies s3://{STAGING_BUCKET}/{DRILL_PREFIX}." in planned.text
    assert "Delete the drill's copies" in planned.text
    plan = planned.data["plan"]
    assert [s["action"] for s in plan["steps"]] == ["objects.copy_versions", "builtin.report"]
    assert [s["id"] for s in plan["cleanup"]] == ["delete_drill_copies"]
    assert plan["steps"][0]["params"]["to_prefix"] == DRILL_PREFIX
    details = plan["steps"][0]["details"]
    assert (details["keys_to_restore"], details["delete_markers"], details["keys_to_copy"]) == (12, 12, 12)
    assert details["keys"] == gone[:10]

    # the copies appeared under drill-r1/: the version each key had before its marker
    [copied] = operations(h, "copy_versions")
    assert copied["outputs"] == {"copied": 12, "keys": [DRILL_PREFIX + k for k in gone]}
    [(_, _, written)] = copied["writes"]
    made = {k: v for k, v in written["objects"].items() if k.startswith(DRILL_PREFIX)}
    assert sorted(made) == [DRILL_PREFIX + k for k in gone]
    for key in gone:
        [version] = before[key]["versions"]
        [copy_] = made[DRILL_PREFIX + key]["versions"]
        assert (copy_["etag"], copy_["size"]) == (version["etag"], version["size"]) and not made[
            DRILL_PREFIX + key]["markers"]
    steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
    assert steps["undelete"].outputs["copied"] == 12

    # ... and were deleted at the end; the live keys are exactly as they were, their delete markers still there
    [deleted] = operations(h, "delete_prefix")
    assert deleted["outputs"] == {"deleted": 12}
    after = bucket_objects(h)
    assert not [k for k in after if k.startswith("drill-")]
    assert after == before and sorted(deleted_keys(after)) == gone, "nothing was undeleted"

    report = h.recorder.last(EventKind.RUN_REPORT).text
    assert "Drill: copied the last versions of 12 objects deleted under docs/" in report
    assert f"to {DRILL_PREFIX} in the same bucket. Nothing was undeleted" in report
    cleanup = h.recorder.wait_for(EventKind.RUN_CLEANUP, timeout=60)
    assert cleanup.text.startswith("Clean-up of R-1: everything it made is gone.")
    assert [(r["kind"], r["name"]) for r in cleanup.data["resources"]] == [
        ("object copies", f"s3://{STAGING_BUCKET}/{DRILL_PREFIX}")] and cleanup.data["left"] == 0
    assert Ledger(h.engine.store).leaks(now=h.engine.clock.now() + timedelta(days=1)) == []
    assert EventKind.INCIDENT_RESTORED not in h.recorder.kinds(), "a drill never marks anything restored"


def test_a_failed_copy_still_runs_the_clean_up_which_finds_an_empty_prefix(harness: Callable[..., Harness]) -> None:
    data = copy.deepcopy(SANDBOX_CONFIG)
    data["environments"]["staging"]["objects"]["failures"] = {
        "copy_versions": {"message": "injected copy_versions failure", "at": "start", "times": 5}}
    h = harness(config=data)
    h.say("/dr drill accidental-deletion staging prefix=docs/")
    paused = h.recorder.wait_for(EventKind.RUN_PAUSED, timeout=60)
    assert paused.data["step_id"] == "undelete" and "injected copy_versions failure" in paused.text
    h.settle()
    h.press(EventKind.RUN_PAUSED, "Abort", actor="bob")
    cleanup = h.recorder.wait_for(EventKind.RUN_CLEANUP, timeout=60)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.FAILED  # type: ignore[union-attr]
    assert cleanup.text.startswith("Clean-up of R-1: everything it made is gone.") and cleanup.data["left"] == 0
    [deleted] = operations(h, "delete_prefix")
    assert deleted["outputs"] == {"deleted": 0}
    assert len(deleted_keys(bucket_objects(h))) == 12


# --------------------------------------------------------------------------------------------- the sandbox twin


def test_the_sandbox_delete_prefix_refuses_a_live_prefix_and_copies_again_as_new_versions() -> None:
    state, clock = MemoryState(), FakeClock()
    s3 = make("objects", state, clock)
    live = {"bucket": "rag-engine-documents", "prefix": "docs/"}
    assert s3.preflight(action="delete_prefix", params=live) == [REFUSED.format(bucket="rag-engine-documents")]
    assert "problem" in s3.plan(action="delete_prefix", params=live)
    with pytest.raises(PermanentError, match="Refusing to delete under `docs/`"):
        s3.start(action="delete_prefix", params=live, run_id="R-1")
    assert s3.preflight(action="copy_versions", params={**VALID["objects.copy_versions"](clock), "to_prefix": ""})[
        0].startswith("`to_prefix` is empty")

    params = VALID["objects.copy_versions"](clock)
    assert run(s3, "copy_versions", params, clock).outputs["copied"] == 12
    assert run(s3, "copy_versions", params, clock, run_id="R-2").outputs["copied"] == 12  # over the same keys
    objects = state.list_state(kind=S3_KIND)["rag-engine-documents"]["objects"]
    drilled = {k: v for k, v in objects.items() if k.startswith(DRILL_PREFIX)}
    assert len(drilled) == 12 and all(len(v["versions"]) == 2 for v in drilled.values())
    assert s3.plan(action="delete_prefix", params=VALID["objects.delete_prefix"](clock))["versions"] == 24
    assert run(s3, "delete_prefix", VALID["objects.delete_prefix"](clock), clock).outputs == {"deleted": 24}
    assert run(s3, "delete_prefix", VALID["objects.delete_prefix"](clock), clock, run_id="R-2").outputs == {
        "deleted": 0}
    objects = state.list_state(kind=S3_KIND)["rag-engine-documents"]["objects"]
    assert not [k for k in objects if k.startswith("drill-")] and len(deleted_keys(objects)) == 12


# --------------------------------------------------------------------------------------------- real S3 (moto)

BUCKET = "rag-engine-documents"
DOCS = {f"docs/{i:02d}.pdf": f"doc {i}".encode() for i in range(6)}


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


def aws(moto: MotoServer, *, page_size: int = 1000, state: MemoryState | None = None) -> AwsS3:
    return AwsS3(environment="prod", resource="objects", settings={"bucket": BUCKET, "page_size": page_size},
                 client=moto.client("s3"), state=state)


def finish(p: Provider, op: Operation) -> OperationStatus:
    status = p.poll(operation=op)
    assert status.done, status
    return status


def readable(s3: Any, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def versions_under(s3: Any, prefix: str) -> list[tuple[str, bool]]:
    """(key, is a delete marker) for every version and marker under `prefix`."""
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
    return sorted([(v["Key"], False) for v in listed.get("Versions", [])]
                  + [(m["Key"], True) for m in listed.get("DeleteMarkers", [])])


@pytest.mark.parametrize("page_size", [1000, 2])
def test_copy_versions_copies_the_version_before_each_marker_and_leaves_the_keys_deleted(
        moto: MotoServer, page_size: int) -> None:
    s3 = seed_bucket(moto, BUCKET, {**DOCS, "images/logo.png": b"png"})
    time.sleep(1.1)  # S3 timestamps have one-second resolution on the wire
    s3.put_object(Bucket=BUCKET, Key="docs/01.pdf", Body=b"doc 1, second version")
    time.sleep(1.1)
    for key in ["docs/00.pdf", "docs/01.pdf", "docs/02.pdf", "images/logo.png"]:
        s3.delete_object(Bucket=BUCKET, Key=key)
    s3.delete_object(Bucket=BUCKET, Key="docs/00.pdf")  # deleted twice: two markers
    provider = aws(moto, page_size=page_size, state=MemoryState())
    params = {"bucket": BUCKET, "prefix": "docs/", "since": None, "to_prefix": DRILL_PREFIX}
    assert provider.preflight(action="objects.copy_versions", params=params) == []
    plan = provider.plan(action="objects.copy_versions", params=params)
    assert (plan["keys_to_restore"], plan["delete_markers"], plan["keys_to_copy"]) == (3, 4, 3)
    undelete = provider.plan(action="objects.undelete", params={k: v for k, v in params.items() if k != "to_prefix"})
    assert (undelete["keys_to_restore"], undelete["delete_markers"]) == (3, 4), "the counts an undelete's plan gives"

    status = finish(provider, provider.start(action="objects.copy_versions", params=params, run_id="R-1"))
    copies = [f"{DRILL_PREFIX}docs/0{i}.pdf" for i in range(3)]
    assert status.outputs == {"copied": 3, "keys": copies}
    assert [readable(s3, k) for k in copies] == [b"doc 0", b"doc 1, second version", b"doc 2"]
    assert [readable(s3, f"docs/0{i}.pdf") for i in range(3)] == [None, None, None], "still deleted"
    assert readable(s3, "docs/03.pdf") == b"doc 3" and readable(s3, f"{DRILL_PREFIX}docs/03.pdf") is None
    assert readable(s3, f"{DRILL_PREFIX}images/logo.png") is None, "another prefix is not copied"
    assert [m for m in versions_under(s3, "docs/") if m[1]] == [
        ("docs/00.pdf", True), ("docs/00.pdf", True), ("docs/01.pdf", True), ("docs/02.pdf", True)]
    again = finish(provider, provider.start(action="objects.copy_versions", params=params, run_id="R-1"))
    assert again.outputs == status.outputs, "a restarted start copies over the same keys and reports them"
    assert versions_under(s3, DRILL_PREFIX) == sorted([(k, False) for k in copies] * 2)

    cleanup = {"bucket": BUCKET, "prefix": DRILL_PREFIX}
    assert provider.plan(action="objects.delete_prefix", params=cleanup)["versions"] == 6
    assert finish(provider, provider.start(action="objects.delete_prefix", params=cleanup,
                                           run_id="R-1")).outputs == {"deleted": 6}
    assert versions_under(s3, DRILL_PREFIX) == []
    assert [readable(s3, f"docs/0{i}.pdf") for i in range(6)] == [None, None, None, b"doc 3", b"doc 4", b"doc 5"]


def test_delete_prefix_refuses_a_live_prefix_and_removes_every_version_under_a_drill_prefix(
        moto: MotoServer) -> None:
    s3 = seed_bucket(moto, BUCKET, {**DOCS, f"{DRILL_PREFIX}docs/00.pdf": b"copy", f"{DRILL_PREFIX}docs/01.pdf": b"x",
                                    "drill-r2/docs/00.pdf": b"another drill's copy"})
    s3.put_object(Bucket=BUCKET, Key=f"{DRILL_PREFIX}docs/00.pdf", Body=b"copy again")
    s3.delete_object(Bucket=BUCKET, Key=f"{DRILL_PREFIX}docs/01.pdf")
    provider = aws(moto, page_size=2, state=MemoryState())

    live = {"bucket": BUCKET, "prefix": "docs/"}
    refused = REFUSED.format(bucket=BUCKET)
    assert provider.preflight(action="objects.delete_prefix", params=live) == [refused]
    assert provider.plan(action="objects.delete_prefix", params=live)["problem"] == refused
    with pytest.raises(PermanentError, match="Refusing to delete under `docs/`"):
        provider.start(action="objects.delete_prefix", params=live, run_id="R-1")
    assert [readable(s3, k) for k in DOCS] == list(DOCS.values()), "nothing live was touched"

    params = {"bucket": BUCKET, "prefix": DRILL_PREFIX}
    assert provider.preflight(action="objects.delete_prefix", params=params) == []
    plan = provider.plan(action="objects.delete_prefix", params=params)
    assert (plan["objects"], plan["versions"]) == (2, 4)
    status = finish(provider, provider.start(action="objects.delete_prefix", params=params, run_id="R-1"))
    assert status.outputs == {"deleted": 4}
    assert versions_under(s3, DRILL_PREFIX) == []
    assert readable(s3, "drill-r2/docs/00.pdf") == b"another drill's copy"
    assert [readable(s3, k) for k in DOCS] == list(DOCS.values())
    again = finish(provider, provider.start(action="objects.delete_prefix", params=params, run_id="R-2"))
    assert again.outputs == {"deleted": 0}, "an already empty prefix is success"
