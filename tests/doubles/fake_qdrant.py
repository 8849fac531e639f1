"""A fake Qdrant REST server speaking the wire protocol as qdrant-client 1.20 calls it (see APIS.md §5).

There is no Qdrant server binary on PyPI and local mode has no snapshots, so the provider is tested through the
real client against this: a stdlib `ThreadingHTTPServer` on 127.0.0.1, ephemeral port. Responses are wrapped as
`{"result": ..., "status": "ok", "time": ...}`; errors as `{"status": {"error": "..."}, "time": ...}`.

It can: require an `api-key` header; recover from its own snapshot URLs, checking the checksum — also a snapshot of
another collection, into a collection it then creates (with no snapshots of its own), as Qdrant does; simulate a
slow recovery (`wait=false` returns 202 at once and the collection shows `yellow` for `recovery_polls` collection
reads, then `green` with the snapshot's points); delete a collection (`DELETE /collections/{name}`: `true`, or
`false` when it does not exist — Qdrant's delete is idempotent); fail the next N matching requests with a status
code.

Timed mode (`FakeQdrant(timer=OperationTimer(...))`, see timing.py): a `wait=false` recovery keeps the collection
`yellow` until T = the request + `timer.duration`, whatever the number of reads; T is in
`fake.finished_at[collection]` (a later recovery of the same collection replaces it).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.doubles.timing import OperationTimer


@dataclass
class Snapshot:
    name: str
    creation_time: str  # naive UTC, as Qdrant reports it
    size: int
    checksum: str
    points_count: int

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "creation_time": self.creation_time, "size": self.size,
                "checksum": self.checksum}


@dataclass
class Collection:
    name: str
    points_count: int
    status: str = "green"
    snapshots: list[Snapshot] = field(default_factory=list)
    yellow_left: int = 0
    pending_points: int | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Failure:
    method: str
    pattern: str
    status: int
    times: int
    message: str


def _collection_info(c: Collection) -> dict[str, Any]:
    return {
        "status": c.status, "optimizer_status": "ok", "indexed_vectors_count": c.points_count,
        "points_count": c.points_count, "segments_count": 4, "payload_schema": {},
        "config": {
            "params": {"vectors": {"size": 384, "distance": "Cosine"}, "shard_number": 1, "replication_factor": 1,
                       "write_consistency_factor": 1, "on_disk_payload": True},
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
            "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                                 "default_segment_number": 0, "flush_interval_sec": 5},
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        },
    }


class FakeQdrant:
    """Start with `with FakeQdrant() as q:`; `q.url` is the base URL. All state is guarded by one lock."""

    def __init__(self, *, api_key: str | None = None, recovery_polls: int = 3,
                 timer: OperationTimer | None = None) -> None:
        self.api_key = api_key
        self.recovery_polls = recovery_polls
        self.timer = timer
        self.collections: dict[str, Collection] = {}
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- test set-up

    def add_collection(self, name: str, *, points_count: int) -> Collection:
        with self.lock:
            self.collections[name] = Collection(name=name, points_count=points_count)
            return self.collections[name]

    def add_snapshot(self, collection: str, *, at: datetime, points_count: int, size: int = 1_288_490_188,
                     checksum: str | None = None) -> Snapshot:
        with self.lock:
            name = f"{collection}-7240612512913241-{at.astimezone(UTC):%Y-%m-%d-%H-%M-%S}.snapshot"
            snap = Snapshot(name=name, creation_time=at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), size=size,
                            checksum=checksum or _sha(collection, name),
                            points_count=points_count)
            self.collections[collection].snapshots.append(snap)
            return snap

    def fail(self, method: str, pattern: str, *, status: int = 500, times: int = 1,
             message: str = "Service internal error: injected") -> None:
        """Fail the next `times` requests whose method matches and whose path matches the regex `pattern`."""
        with self.lock:
            self.failures.append(Failure(method, pattern, status, times, message))

    @property
    def finished_at(self) -> dict[str, float]:
        return self.timer.finished_at if self.timer is not None else {}

    def calls(self, method: str, suffix: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # ---- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeQdrant is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeQdrant:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---- protocol

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        started = time.perf_counter()
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self.lock:
            self.requests.append(Recorded(method, path, query, body, {k.lower(): v for k, v in h.headers.items()}))
            status, payload = self._route(method, path, query, body, h.headers.get("api-key"))
        payload["time"] = time.perf_counter() - started
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               key: str | None) -> tuple[int, dict[str, Any]]:
        if self.api_key is not None:
            if not key:
                return _error(401, "Must provide an API key or an Authorization bearer token")
            if key != self.api_key:
                return _error(401, "Invalid API key or JWT")
        for failure in self.failures:
            if failure.times > 0 and failure.method == method and re.search(failure.pattern, path):
                failure.times -= 1
                return _error(failure.status, failure.message)
        if method == "GET" and path == "/collections":
            return _ok({"collections": [{"name": n} for n in sorted(self.collections)]})
        m = re.fullmatch(r"/collections/([^/]+)(/.*)?", path)
        if m is None:
            return _error(404, f"Not found: {path}")
        name, rest = m.group(1), m.group(2) or ""
        c = self.collections.get(name)
        if method == "DELETE" and rest == "":
            return _ok(self.collections.pop(name, None) is not None)
        if c is None and method == "PUT" and rest == "/snapshots/recover":  # recovery creates the collection
            fresh = Collection(name=name, points_count=0)
            status, payload = self._recover(fresh, query, body or {})
            if status < 300:
                self.collections[name] = fresh
            return status, payload
        if c is None:
            return _error(404, f"Not found: Collection `{name}` doesn't exist!")
        if method == "GET" and rest == "":
            if c.yellow_left > 0 and self.timer is not None:
                if self.timer.done(name):
                    self._finish_recovery(c)
            elif c.yellow_left > 0:
                c.yellow_left -= 1
                if c.yellow_left == 0:
                    self._finish_recovery(c)
            return _ok(_collection_info(c))
        if method == "POST" and rest == "/points/count":
            return _ok({"count": c.points_count})
        if method == "GET" and rest == "/snapshots":
            return _ok([s.describe() for s in c.snapshots])
        if method == "POST" and rest == "/snapshots":
            snap = Snapshot(name=f"{name}-7240612512913241-{datetime.now(UTC):%Y-%m-%d-%H-%M-%S}.snapshot",
                            creation_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), size=1_048_576,
                            checksum=_sha(name, str(len(c.snapshots))),
                            points_count=c.points_count)
            c.snapshots.append(snap)
            return _ok(snap.describe())
        if method == "PUT" and rest == "/snapshots/recover":
            return self._recover(c, query, body or {})
        m = re.fullmatch(r"/snapshots/([^/]+)", rest)
        if method == "DELETE" and m:
            before = len(c.snapshots)
            c.snapshots = [s for s in c.snapshots if s.name != m.group(1)]
            if len(c.snapshots) == before:
                return _error(404, f"Not found: Snapshot {m.group(1)} not found")
            return _ok(True)
        return _error(404, f"Not found: {method} {path}")

    def _recover(self, c: Collection, query: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        location = str(body.get("location") or "")
        m = re.fullmatch(r"(https?://[^/]+)/collections/([^/]+)/snapshots/([^/]+)", location)
        if m is None:
            return _error(400, f"Bad request: Invalid snapshot location: {location}")
        source = self.collections.get(m.group(2))
        snap = next((s for s in source.snapshots if s.name == m.group(3)), None) if source else None
        if m.group(1) != self.url or snap is None:
            return _error(400, f"Service internal error: Failed to download snapshot from {location}: 404 Not Found")
        priority = body.get("priority")
        if priority is not None and priority not in ("snapshot", "replica", "no_sync"):
            return _error(400, f"Format error in JSON body: unknown variant `{priority}`")
        checksum = body.get("checksum")
        if checksum and checksum != snap.checksum:
            return _error(400, f"Wrong input: Snapshot checksum mismatch: expected {checksum}, got {snap.checksum}")
        if self.timer is not None and query.get("wait", "true") != "true":
            self.timer.begin(c.name)
            c.status, c.yellow_left, c.pending_points = "yellow", 1, snap.points_count
            return 202, {"result": None, "status": "accepted"}
        if query.get("wait", "true") == "true" or self.recovery_polls <= 0:
            c.pending_points = snap.points_count
            self._finish_recovery(c)
            return _ok(True)
        c.status, c.yellow_left, c.pending_points = "yellow", self.recovery_polls, snap.points_count
        return 202, {"result": None, "status": "accepted"}

    @staticmethod
    def _finish_recovery(c: Collection) -> None:
        c.status, c.yellow_left = "green", 0
        if c.pending_points is not None:
            c.points_count, c.pending_points = c.pending_points, None


def _ok(result: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"result": result, "status": "ok"}


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"status": {"error": message}}


def _sha(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()
