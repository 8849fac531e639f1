"""A local HTTPS double of the PagerDuty REST API v2 paths drbot's provider calls.

Why TLS: `pagerduty.RestApiV2Client` refuses a base URL that is not https:// (APIS.md §6), so the fake serves a
throwaway self-signed certificate for IP:127.0.0.1 (made by fake_azure's `make_certificate`) and the client trusts
it through `verify=<cert path>` — the same code path production takes.

Wire behaviour, as PagerDuty documents it:
- `Authorization: Token token=<key>` on every call, else 401 `{"error": {"message": "Authentication failed",
  "code": 2006}}`;
- PUT and POST need a `From` header naming a user's email, else 400 with code 2001 ("Invalid Input Provided") and
  an `errors` entry saying so;
- `GET /incidents/{id}` → `{"incident": {...}}`; unknown id → 404 code 2100 ("Not Found");
- `PUT /incidents/{id}` with `{"incident": {"type": "incident_reference", "status": ..., "resolution": ...}}`;
  acknowledging a resolved incident is refused with 400 "Incident Already Resolved", like PagerDuty;
  a `resolution` becomes a note on the incident;
- `POST /incidents/{id}/notes` with `{"note": {"content": ...}}` → `{"note": {"id", "content", "created_at",
  "user"}}`; `GET /incidents/{id}/notes` → `{"notes": [...]}`; `GET /abilities` → `{"abilities": [...]}`.
Faults are queued with `fail_next` (429 with Retry-After, 5xx) and fire before anything else, on any path.
Every call is recorded with its headers (the Authorization value replaced by whether it matched) and JSON body.
"""

from __future__ import annotations

import json
import re
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.doubles.fake_azure import make_certificate

ACCEPT = "application/vnd.pagerduty+json;version=2"
INCIDENT = re.compile(r"^/incidents/([A-Za-z0-9]+)$")
NOTES = re.compile(r"^/incidents/([A-Za-z0-9]+)/notes$")
ABILITIES = ["teams", "read_only_users", "urgencies", "response_play", "event_rules"]
Reply = tuple[int, Any, dict[str, str]]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pd_error(message: str, code: int, errors: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return {"error": body}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    """Without the query string."""
    query: str
    headers: dict[str, str]
    """Lower-cased names; `authorization` is replaced by `ok` or `bad`, so a recorded call never holds the token."""
    body: Any


@dataclass
class Fault:
    status: int
    retry_after: str | None = None


@dataclass
class FakePagerDuty:
    """Seed incidents, queue faults, then read `calls` and `incidents` to see what the client did."""

    token: str = "pd-test-token-0123456789"
    url: str = ""
    cert: Path = Path()
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    # ---- test set-up

    def seed_incident(self, incident_id: str, *, status: str = "triggered", title: str = "prod-db corrupted",
                      service_id: str = "PSVC1", number: int | None = None) -> dict[str, Any]:
        number = number if number is not None else len(self.incidents) + 1
        incident = {
            "id": incident_id, "type": "incident", "summary": f"[#{number}] {title}", "title": title,
            "incident_number": number, "status": status, "urgency": "high",
            "created_at": iso(datetime.now(UTC)), "incident_key": f"key-{incident_id.lower()}",
            "self": f"{self.url}/incidents/{incident_id}",
            "html_url": f"https://example.pagerduty.com/incidents/{incident_id}",
            "service": {"id": service_id, "type": "service_reference", "summary": "rag-engine"},
            "resolve_reason": None,
        }
        with self.lock:
            self.incidents[incident_id] = incident
            self.notes.setdefault(incident_id, [])
        return incident

    def fail_next(self, *, status: int, retry_after: float | str | None = None, times: int = 1) -> None:
        """The next `times` requests (any path) answer `status`, with a Retry-After header when given."""
        with self.lock:
            self.faults.extend(Fault(status, None if retry_after is None else str(retry_after))
                               for _ in range(times))

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method.upper() and c.path == path]

    # ---- life cycle

    def start(self) -> FakePagerDuty:
        self._tmp = tempfile.TemporaryDirectory()
        self.cert, key = make_certificate(Path(self._tmp.name))
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(key))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakePagerDuty:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- behaviour

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: Any) -> Reply:
        path, _, query = raw_path.partition("?")
        auth_ok = headers.get("authorization") == f"Token token={self.token}"
        shown = {k: v for k, v in headers.items() if k != "authorization"}
        shown["authorization"] = "ok" if auth_ok else "bad"
        with self.lock:
            self.calls.append(Call(method, path, query, shown, body))
            if self.faults:
                fault = self.faults.pop(0)
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                if fault.status == 429:
                    return 429, pd_error("Rate Limit Exceeded", 2020), extra
                return fault.status, pd_error("Internal Server Error", 2000 + fault.status % 100), extra
            if not auth_ok:
                return 401, pd_error("Authentication failed", 2006), {}
            if headers.get("accept") != ACCEPT:
                return 406, pd_error("Not Acceptable", 2001, [f"Accept must be {ACCEPT}"]), {}
            if method in ("PUT", "POST") and not headers.get("from"):
                return 400, pd_error("Invalid Input Provided", 2001,
                                     ["You must specify a user's email address in the \"From\" header to perform "
                                      "this action"]), {}
            if method == "GET" and path == "/abilities":
                return 200, {"abilities": ABILITIES}, {}
            found = INCIDENT.match(path) or NOTES.match(path)
            if not found:
                return 404, pd_error("Not Found", 2100, [f"The fake has no route {method} {path}."]), {}
            incident = self.incidents.get(found.group(1))
            if incident is None:
                return 404, pd_error("Not Found", 2100, ["Incident Not Found"]), {}
            if INCIDENT.match(path) and method == "GET":
                return 200, {"incident": incident}, {}
            if INCIDENT.match(path) and method == "PUT":
                return self._update(incident, body, headers["from"])
            if NOTES.match(path) and method == "GET":
                return 200, {"notes": list(self.notes.get(incident["id"], []))}, {}
            if NOTES.match(path) and method == "POST":
                content = str(((body or {}).get("note") or {}).get("content") or "")
                if not content:
                    return 400, pd_error("Invalid Input Provided", 2001, ["Note content can't be blank"]), {}
                return 201, {"note": self._add_note(incident["id"], content, headers["from"])}, {}
            return 405, pd_error("Method Not Allowed", 2001, [f"{method} {path}"]), {}

    def _update(self, incident: dict[str, Any], body: Any, author: str) -> Reply:
        update = (body or {}).get("incident") if isinstance(body, dict) else None
        if not isinstance(update, dict) or update.get("type") != "incident_reference":
            return 400, pd_error("Invalid Input Provided", 2001, ["Incident type must be incident_reference"]), {}
        status = update.get("status")
        if status not in (None, "acknowledged", "resolved"):
            return 400, pd_error("Invalid Input Provided", 2001, [f"Status {status!r} is invalid"]), {}
        if status == "acknowledged" and incident["status"] == "resolved":
            return 400, pd_error("Invalid Input Provided", 2001, ["Incident Already Resolved"]), {}
        if status is not None:
            incident["status"] = status
        if update.get("resolution"):
            self._add_note(incident["id"], str(update["resolution"]), author)
        return 200, {"incident": incident}, {}

    def _add_note(self, incident_id: str, content: str, author: str) -> dict[str, Any]:
        notes = self.notes.setdefault(incident_id, [])
        note = {"id": f"PNOTE{sum(len(n) for n in self.notes.values()) + 1}", "content": content,
                "created_at": iso(datetime.now(UTC)),
                "user": {"id": "PUSER1", "type": "user_reference", "summary": author}}
        notes.append(note)
        return note


def _handler(fake: FakePagerDuty) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = {"unparsable": raw.decode("utf-8", "replace")}
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload, extra = fake.handle(self.command, self.path, headers, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded calls say what happened when an assertion needs them."""

    return Handler


def serve() -> Iterator[FakePagerDuty]:
    """For a pytest fixture: `yield from serve()` starts the fake and stops it when the test ends."""
    with FakePagerDuty() as fake:
        yield fake
