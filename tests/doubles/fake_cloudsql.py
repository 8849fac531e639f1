"""A local double of the Cloud SQL Admin API v1, speaking the REST paths the discovery client calls:

    GET    /v1/projects/{p}/instances/{i}                         DatabaseInstance or 404
    DELETE /v1/projects/{p}/instances/{i}                         Operation (instance goes PENDING_DELETE → gone)
    POST   /v1/projects/{p}/instances/{i}/clone                   Operation; the target appears PENDING_CREATE
    POST   /v1/projects/{p}/instances/{i}/promoteReplica          Operation
    GET    /v1/projects/{p}/instances/{i}/getLatestRecoveryTime   {earliestRecoveryTime, latestRecoveryTime}
    GET    /v1/projects/{p}/instances/{i}/backupRuns              {items: [BackupRun]}
    GET    /v1/projects/{p}/operations/{op}                       Operation: PENDING → RUNNING → DONE over GETs

Failures are injectable: `fail_next(status, path_part)` answers one matching request with that HTTP status, and
`fail_clone(code, message)` makes the next clone's operation end DONE with `error.errors`.

Timed mode (`timer=OperationTimer(...)`, see timing.py): an operation stays RUNNING until T = its creation +
`timer.duration` on the timer's clock, then is DONE on the next GET; T is in `world.finished_at[op_name]`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.doubles.timing import OperationTimer


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CloudSqlWorld:
    """The double's state; tests seed it and read `requests` to see what the client sent."""

    def __init__(self, *, project: str, now: Callable[[], datetime], timer: OperationTimer | None = None) -> None:
        self.project, self.now, self.timer = project, now, timer
        self.instances: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.backups: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.failures: list[tuple[int, str]] = []
        self.clone_error: dict[str, str] | None = None
        self.omit_earliest = False
        self.lock = threading.Lock()
        self._ops = 0

    # ---- seeding and injection

    def seed(self, name: str, *, region: str = "us-central1", master: str | None = None, pitr: bool = True,
             state: str = "RUNNABLE") -> None:
        self.instances[name] = self._instance(name, region=region, state=state, pitr=pitr)
        if master:
            self.instances[name].update(instanceType="READ_REPLICA_INSTANCE", masterInstanceName=f"{self.project}:"
                                        f"{master}")
        self.backups[name] = [
            {"id": "1700000001", "status": "SUCCESSFUL", "endTime": rfc3339(self.now() - timedelta(hours=30))},
            {"id": "1700000002", "status": "SUCCESSFUL", "endTime": rfc3339(self.now() - timedelta(hours=6))},
            {"id": "1700000003", "status": "FAILED", "endTime": rfc3339(self.now() - timedelta(hours=1))},
        ]

    def fail_next(self, status: int, path_part: str = "") -> None:
        self.failures.append((status, path_part))

    def fail_clone(self, code: str, message: str) -> None:
        self.clone_error = {"code": code, "message": message}

    def window(self) -> tuple[datetime, datetime]:
        now = self.now().replace(microsecond=0)
        return now - timedelta(days=7), now - timedelta(minutes=1)

    @property
    def finished_at(self) -> dict[str, float]:
        """T of each timed operation by name (empty unless a timer was given)."""
        return self.timer.finished_at if self.timer is not None else {}

    def calls(self, suffix: str) -> int:
        return sum(1 for _, path, _ in self.requests if path.endswith(suffix))

    # ---- behaviour

    def _instance(self, name: str, *, region: str, state: str, pitr: bool) -> dict[str, Any]:
        n = len(self.instances) + 10
        return {"kind": "sql#instance", "name": name, "project": self.project, "region": region, "state": state,
                "databaseVersion": "POSTGRES_16", "instanceType": "CLOUD_SQL_INSTANCE",
                "ipAddresses": [{"type": "PRIMARY", "ipAddress": f"10.1.0.{n}"}],
                "settings": {"tier": "db-custom-2-7680", "userLabels": {},
                             "backupConfiguration": {"enabled": True, "pointInTimeRecoveryEnabled": pitr,
                                                     "transactionLogRetentionDays": 7}}}

    def _operation(self, kind: str, target: str, on_done: Callable[[], None], on_fail: Callable[[], None],
                   error: dict[str, str] | None = None) -> dict[str, Any]:
        self._ops += 1
        name = f"op-{kind.lower()}-{self._ops}"
        self.operations[name] = {"op": {"kind": "sql#operation", "name": name, "operationType": kind,
                                        "status": "PENDING", "targetId": target, "targetProject": self.project,
                                        "insertTime": rfc3339(self.now())},
                                 "on_done": on_done, "on_fail": on_fail, "error": error}
        if self.timer is not None:
            self.timer.begin(name)
        return dict(self.operations[name]["op"])

    def _advance(self, name: str) -> dict[str, Any]:
        entry = self.operations[name]
        op = entry["op"]
        if self.timer is None:  # per poll: PENDING, RUNNING, DONE
            still_running = op["status"] == "PENDING"
        else:  # timed: RUNNING until T
            still_running = op["status"] != "DONE" and not self.timer.done(name)
        if still_running:
            op["status"] = "RUNNING"
        elif op["status"] in ("PENDING", "RUNNING"):
            op["status"] = "DONE"
            op["endTime"] = rfc3339(self.now())
            if entry["error"]:
                op["error"] = {"kind": "sql#operationErrors", "errors": [{"kind": "sql#operationError",
                                                                         **entry["error"]}]}
                entry["on_fail"]()
            else:
                entry["on_done"]()
        return dict(op)

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path, body))
            for i, (status, part) in enumerate(self.failures):
                if part in path:
                    del self.failures[i]
                    return status, _error(status, f"injected HTTP {status}")
            parts = path.strip("/").split("/")
            if parts[:3] != ["v1", "projects", self.project]:
                return 403, _error(403, f"The client is not authorized to access project {parts[2:3]}.")
            rest = parts[3:]
            if rest[:1] == ["operations"] and len(rest) == 2 and method == "GET":
                if rest[1] not in self.operations:
                    return 404, _error(404, f"The operation {rest[1]} does not exist.")
                return 200, self._advance(rest[1])
            if rest[:1] != ["instances"] or len(rest) < 2:
                return 404, _error(404, "Not found.")
            name, verb = rest[1], (rest[2] if len(rest) > 2 else "")
            found = self.instances.get(name)
            if found is None:
                return 404, _error(404, "The Cloud SQL instance does not exist.")
            return self._instance_call(method, found, verb, body)

    def _instance_call(self, method: str, found: dict[str, Any], verb: str,
                       body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = str(found["name"])
        if method == "GET" and verb == "":
            if found["state"] == "PENDING_DELETE":
                del self.instances[name]
            return 200, found
        if method == "DELETE" and verb == "":
            found["state"] = "PENDING_DELETE"
            return 200, self._operation("DELETE", name, lambda: None, lambda: None)
        if verb == "getLatestRecoveryTime":
            earliest, latest = self.window()
            answer = {"kind": "sql#getLatestRecoveryTime", "latestRecoveryTime": rfc3339(latest)}
            if not self.omit_earliest:
                answer["earliestRecoveryTime"] = rfc3339(earliest)
            return 200, answer
        if verb == "backupRuns":
            return 200, {"kind": "sql#backupRunsList", "items": list(self.backups.get(name, []))}
        if verb == "clone" and method == "POST":
            return self._clone(found, body.get("cloneContext") or {})
        if verb == "promoteReplica" and method == "POST":
            if found.get("instanceType") != "READ_REPLICA_INSTANCE":
                return 400, _error(400, "The instance is not a read replica.")

            def promoted() -> None:
                found.update(instanceType="CLOUD_SQL_INSTANCE")
                found.pop("masterInstanceName", None)
            return 200, self._operation("PROMOTE_REPLICA", name, promoted, lambda: None)
        return 404, _error(404, f"No such method {method} {verb}.")

    def _clone(self, source: dict[str, Any], context: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        target = str(context.get("destinationInstanceName") or "")
        if target in self.instances:
            return 409, _error(409, "The Cloud SQL instance already exists.")
        if context.get("pointInTime"):
            moment = datetime.fromisoformat(str(context["pointInTime"]).replace("Z", "+00:00"))
            earliest, latest = self.window()
            if not earliest <= moment <= latest:
                return 400, _error(400, "Invalid request: the point in time is outside the recovery window.")
        self.instances[target] = self._instance(target, region=str(source["region"]), state="PENDING_CREATE",
                                                pitr=True)
        error, self.clone_error = self.clone_error, None

        def ready() -> None:
            self.instances[target]["state"] = "RUNNABLE"

        def failed() -> None:
            self.instances.pop(target, None)
        return 200, self._operation("CLONE", target, ready, failed, error)


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "errors": [{"message": message, "domain": "global"}]}}


class _Handler(BaseHTTPRequestHandler):
    world: CloudSqlWorld

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        status, answer = self.world.handle(self.command, urlsplit(self.path).path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return


@contextmanager
def fake_cloudsql(*, project: str, now: Callable[[], datetime],
                  timer: OperationTimer | None = None) -> Iterator[tuple[CloudSqlWorld, str]]:
    """(world, endpoint_url) of a double on 127.0.0.1 and an ephemeral port, stopped on exit."""
    world = CloudSqlWorld(project=project, now=now, timer=timer)
    handler = type("Handler", (_Handler,), {"world": world})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield world, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
