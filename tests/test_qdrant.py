"""The Qdrant provider through the real qdrant-client, over REST, against the fake server in tests/doubles."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import UnexpectedResponse

from integrations.qdrant import OPS_KIND, QdrantProvider, build_qdrant_provider
from runbooks.errors import ConfigError, PermanentError, TransientError
from runbooks.ports import Operation, OperationStatus
from tests.doubles.clock import FakeClock
from tests.doubles.fake_qdrant import FakeQdrant, Snapshot

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = "qk-test-7f3a9c1e5b"
RESTORE = "vectors.restore_snapshot"
# The client rightly warns that an api-key over plain http is unsafe; the fake has no TLS.
pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


class MemoryState:
    """Dict-backed StateStore; values go through JSON so anything unserialisable fails here, as it would in SQL."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None:
        raw = self.data.get(kind, {}).get(key)
        return None if raw is None else dict(json.loads(raw))

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None:
        self.data.setdefault(kind, {})[key] = json.dumps(dict(value))

    def list_state(self, *, kind: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.data.get(kind, {}).items()}


@pytest.fixture
def fake() -> Iterator[FakeQdrant]:
    with FakeQdrant(api_key=KEY, recovery_polls=3) as server:
        server.add_collection("documents", points_count=221_184)
        yield server


@pytest.fixture
def snaps(fake: FakeQdrant) -> list[Snapshot]:
    """Listed out of time order on purpose, so `latest` must sort rather than take the last one listed."""
    newest = fake.add_snapshot("documents", at=T0 - timedelta(hours=11), points_count=221_100, size=1_288_490_188)
    oldest = fake.add_snapshot("documents", at=T0 - timedelta(days=2, hours=11), points_count=220_900)
    middle = fake.add_snapshot("documents", at=T0 - timedelta(days=1, hours=11), points_count=221_000)
    return [oldest, middle, newest]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


def provider(fake: FakeQdrant, state: MemoryState, clock: FakeClock, **settings: Any) -> QdrantProvider:
    built = build_qdrant_provider(environment="prod", resource="vectors",
                                  settings={"url": fake.url, "collection": "documents", "api_key_env": "QDRANT_KEY",
                                            **settings},
                                  state=state, clock=clock, environ={"QDRANT_KEY": KEY})
    assert isinstance(built, QdrantProvider)
    return built


def finish(p: QdrantProvider, op: Operation, clock: FakeClock) -> list[OperationStatus]:
    seen = [p.poll(operation=op)]
    while not seen[-1].done:
        clock.advance(1)
        seen.append(p.poll(operation=op))
        assert len(seen) < 50
    return seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- plan and preflight


def test_plan_resolves_latest_and_says_it_overwrites(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                                     clock: FakeClock) -> None:
    plan = provider(fake, state, clock).plan(action=RESTORE, params={"collection": "documents", "snapshot": "latest"})
    newest = snaps[-1]
    assert plan["snapshot"] == newest.name
    assert plan["snapshot_time"] == "2026-11-24T01:00:00Z"
    assert plan["snapshot_size_bytes"] == newest.size and plan["snapshot_size"] == "1.20 GiB"
    assert plan["points_now"] == 221_184
    assert plan["priority"] == "snapshot" and plan["checksum"] == newest.checksum
    assert plan["location"] == f"{fake.url}/collections/documents/snapshots/{newest.name}"
    assert "OVERWRITES" in plan["warning"] and newest.name in plan["warning"] and "221,184" in plan["warning"]
    assert not fake.calls("PUT") and not fake.calls("DELETE"), "plan must have no side effect"


def test_preflight_refuses_with_sentences(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                          clock: FakeClock) -> None:
    p = provider(fake, state, clock)
    assert p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": snaps[0].name}) == []
    [missing] = p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "nightly-1"})
    assert "`nightly-1` does not exist" in missing and snaps[1].name in missing and "latest" in missing
    [bad_sum] = p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "latest",
                                                     "checksum": "0" * 64})
    assert "does not match" in bad_sum and snaps[-1].checksum in bad_sum
    [no_coll] = p.preflight(action=RESTORE, params={"collection": "docs", "snapshot": "latest"})
    assert "`docs` doesn't exist" in no_coll and "documents" in no_coll and "drbot.yml" in no_coll
    [prio] = p.preflight(action=RESTORE, params={"collection": "documents", "snapshot": "latest",
                                                  "priority": "newest"})
    assert "snapshot, replica, no_sync" in prio
    [param] = p.preflight(action=RESTORE, params={"collection": "documents"})
    assert "Missing parameter `snapshot`" in param
    assert not fake.calls("PUT")


def test_preflight_with_no_snapshots(fake: FakeQdrant, state: MemoryState, clock: FakeClock) -> None:
    [problem] = provider(fake, state, clock).preflight(action=RESTORE,
                                                       params={"collection": "documents", "snapshot": "latest"})
    assert problem == "Collection `documents` has no snapshots; create one first."


# ---- start and poll


def test_start_recovers_from_own_url_without_waiting(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                                    clock: FakeClock) -> None:
    op = provider(fake, state, clock).start(action=RESTORE, params={"collection": "documents", "snapshot": "latest"},
                                            run_id="R-1")
    [put] = fake.calls("PUT", "/snapshots/recover")
    assert put.path == "/collections/documents/snapshots/recover" and put.query == {"wait": "false"}
    assert put.body["location"] == f"{fake.url}/collections/documents/snapshots/{snaps[-1].name}"
    assert put.body["priority"] == "snapshot" and put.body["checksum"] == snaps[-1].checksum
    assert put.headers["api-key"] == KEY and put.body["api_key"] == KEY
    assert op.target == "documents" and op.data["snapshot"] == snaps[-1].name
    assert KEY not in json.dumps(state.data) and KEY not in op.model_dump_json()


def test_start_twice_attaches(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState, clock: FakeClock) -> None:
    params = {"collection": "documents", "snapshot": "latest", "priority": "replica"}
    first = provider(fake, state, clock).start(action=RESTORE, params=params, run_id="R-1")
    again = provider(fake, state, clock).start(action=RESTORE, params=params, run_id="R-1")
    assert again == first
    assert len(fake.calls("PUT")) == 1
    assert fake.calls("PUT")[0].body["priority"] == "replica"
    other = provider(fake, state, clock).start(action=RESTORE, params=params, run_id="R-2")
    assert other.id != first.id and len(fake.calls("PUT")) == 2


def test_start_failed_midway_resends_on_retry(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                              clock: FakeClock) -> None:
    fake.fail("PUT", r"/snapshots/recover$", status=503, message="Service internal error: node is restarting")
    params = {"collection": "documents", "snapshot": "latest"}
    with pytest.raises(TransientError, match="answered 503.*node is restarting"):
        provider(fake, state, clock).start(action=RESTORE, params=params, run_id="R-1")
    [record] = state.list_state(kind=OPS_KIND).values()
    assert record["submitted"] is False
    op = provider(fake, state, clock).start(action=RESTORE, params=params, run_id="R-1")
    assert len(fake.calls("PUT")) == 2 and state.list_state(kind=OPS_KIND)[op.data["key"]]["submitted"] is True


def test_poll_follows_yellow_to_green_with_outputs(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                                   clock: FakeClock) -> None:
    p = provider(fake, state, clock)
    op = p.start(action=RESTORE, params={"collection": "documents", "snapshot": "latest"}, run_id="R-1")
    seen = finish(p, op, clock)
    assert [s.status for s in seen] == ["yellow", "yellow", "green"]
    assert not seen[0].done and seen[-1].done and not seen[-1].failed
    assert seen[-1].outputs == {"snapshot": snaps[-1].name, "points_count": 221_100,
                                "snapshot_time": "2026-11-24T01:00:00Z"}


def test_fast_recovery_is_done_only_after_settling(snaps: list[Snapshot], fake: FakeQdrant, state: MemoryState,
                                                   clock: FakeClock) -> None:
    fake.recovery_polls = 0
    p = provider(fake, state, clock, settle_seconds=5)
    op = p.start(action=RESTORE, params={"collection": "documents", "snapshot": snaps[0].name}, run_id="R-1")
    first = p.poll(operation=op)
    assert first.status == "green" and not first.done
    clock.advance(5)
    assert p.poll(operation=op).outputs["points_count"] == 220_900


def test_start_refuses_bad_checksum_without_recovering(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                                       clock: FakeClock) -> None:
    with pytest.raises(PermanentError, match="does not match"):
        provider(fake, state, clock).start(action=RESTORE, params={"collection": "documents", "snapshot": "latest",
                                                                   "checksum": "f" * 64}, run_id="R-1")
    assert not fake.calls("PUT") and not state.list_state(kind=OPS_KIND)


def test_poll_reports_recreation_and_red(fake: FakeQdrant, snaps: list[Snapshot], state: MemoryState,
                                        clock: FakeClock) -> None:
    p = provider(fake, state, clock)
    op = p.start(action=RESTORE, params={"collection": "documents", "snapshot": "latest"}, run_id="R-1")
    documents = fake.collections.pop("documents")
    gone = p.poll(operation=op)
    assert (gone.done, gone.status) == (False, "recovering")
    fake.collections["documents"] = documents
    documents.status, documents.yellow_left = "red", 0
    red = p.poll(operation=op)
    assert red.done and red.failed and red.status == "red" and "server log" in red.message


# ---- count_points


def test_count_points_and_verify(fake: FakeQdrant, state: MemoryState, clock: FakeClock) -> None:
    p = provider(fake, state, clock)
    op = p.start(action="vectors.count_points", params={"collection": "documents"}, run_id="R-1")
    status = p.poll(operation=op)
    assert status.done and status.outputs == {"points_count": 221_184}
    assert fake.calls("POST", "/points/count")[0].body["exact"] is True
    assert p.verify(action="count_points", params={"collection": "documents", "min_count": 1000},
                    outputs=status.outputs) == []
    [problem] = p.verify(action="count_points", params={"collection": "documents", "min_count": 300_000},
                         outputs=status.outputs)
    assert "221,184 points, below the minimum 300,000" in problem
    assert p.preflight(action="count_points", params={"collection": "nope"})[0].startswith("Collection `nope`")


# ---- errors


def test_connection_refused_is_transient(state: MemoryState, clock: FakeClock) -> None:
    p = QdrantProvider(environment="prod", resource="vectors",
                       settings={"url": f"http://127.0.0.1:{free_port()}", "collection": "documents"},
                       state=state, clock=clock)
    with pytest.raises(TransientError, match="unreachable"):
        p.preflight(action="count_points", params={"collection": "documents"})


def test_server_errors_are_transient_and_refusals_permanent(fake: FakeQdrant, snaps: list[Snapshot],
                                                            state: MemoryState, clock: FakeClock) -> None:
    p = provider(fake, state, clock)
    fake.fail("GET", r"/snapshots$", status=500)
    with pytest.raises(TransientError, match="answered 500"):
        p.plan(action=RESTORE, params={"collection": "documents", "snapshot": "latest"})
    fake.fail("POST", r"/points/count$", status=429, message="Too many requests")
    with pytest.raises(TransientError, match="answered 429"):
        p.start(action="vectors.count_points", params={"collection": "documents"}, run_id="R-1")
    fake.fail("PUT", r"/recover$", status=400, message=f"Wrong input: storage full (key {KEY})")
    with pytest.raises(PermanentError) as refused:
        p.start(action=RESTORE, params={"collection": "documents", "snapshot": "latest"}, run_id="R-1")
    assert "Wrong input: storage full" in refused.value.message and KEY not in refused.value.message
    assert refused.value.code == "400"


def test_wrong_api_key_is_permanent_and_never_echoed(fake: FakeQdrant, state: MemoryState, clock: FakeClock) -> None:
    p = build_qdrant_provider(environment="prod", resource="vectors",
                              settings={"url": fake.url, "collection": "documents", "api_key_env": "QDRANT_KEY"},
                              state=state, clock=clock, environ={"QDRANT_KEY": "qk-wrong-123456"})
    with pytest.raises(PermanentError) as refused:
        p.preflight(action="count_points", params={"collection": "documents"})
    assert "(401)" in refused.value.message and "QDRANT_KEY" in refused.value.message
    assert "qk-wrong-123456" not in refused.value.message and "qk-wrong-123456" not in repr(p)


def test_config_refusals(state: MemoryState, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="QDRANT_KEY.*not set"):
        build_qdrant_provider(environment="prod", resource="vectors",
                              settings={"url": "http://q:6333", "api_key_env": "QDRANT_KEY"}, state=state,
                              clock=clock, environ={})
    with pytest.raises(ConfigError, match="never go in drbot.yml"):
        build_qdrant_provider(environment="prod", resource="vectors",
                              settings={"url": "http://q:6333", "api_key": "x"}, state=state, clock=clock, environ={})
    with pytest.raises(ConfigError, match=r"environments\.prod\.vectors\.url"):
        build_qdrant_provider(environment="prod", resource="vectors", settings={"url": "q:6333"}, state=state,
                              clock=clock, environ={})


# ---- the double itself behaves like Qdrant where the provider relies on it


def test_fake_refuses_checksum_mismatch_like_qdrant(fake: FakeQdrant, snaps: list[Snapshot]) -> None:
    client = QdrantClient(url=fake.url, prefer_grpc=False, api_key=KEY, check_compatibility=False)
    location = f"{fake.url}/collections/documents/snapshots/{snaps[0].name}"
    with pytest.raises(UnexpectedResponse) as refused:
        client.recover_snapshot("documents", location=location, checksum="bad", wait=True)
    assert refused.value.status_code == 400
    assert refused.value.structured()["status"]["error"].startswith("Wrong input: Snapshot checksum mismatch")
    assert client.recover_snapshot("documents", location=location, checksum=snaps[0].checksum, wait=True) is True
    assert client.count("documents").count == snaps[0].points_count
    created = client.create_snapshot("documents")
    assert created is not None and created.name in [s.name for s in client.list_snapshots("documents")]
    assert client.delete_snapshot("documents", created.name) is True
    no_key = QdrantClient(url=fake.url, prefer_grpc=False, check_compatibility=False)
    with pytest.raises(UnexpectedResponse, match="401"):
        no_key.get_collection("documents")
