"""A local HTTPS double of the ARM REST paths the azure-mgmt-postgresqlflexibleservers SDK calls.

Why TLS: azure-core refuses to send a bearer token over plain HTTP, and `enforce_https=False` on every call would
mean tests exercise a code path production never takes. So the fake serves a throwaway self-signed certificate
for `IP:127.0.0.1`, generated at start with `cryptography`, and the test client trusts it via `connection_verify`.

Behaviour, as APIS.md §3 found it: PUT/PATCH/DELETE answer **202** with `Azure-AsyncOperation`, `Location` and
`Retry-After: 0`; the operation reports `InProgress` for `polls` GETs, then `Succeeded` (or `Failed` with an
ARM error when `fail_next_operation` was called). Failures can be injected per method (429 with Retry-After,
500). Every request is recorded with its body and Authorization header.

Timed mode (`timer=OperationTimer(...)`, see timing.py): an operation reports `InProgress` until T = its start +
`timer.duration` on the timer's clock, whatever the number of polls; T is in `fake.finished_at[op_id]`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.doubles.timing import OperationTimer

API = "2026-10-01"
RP = "Microsoft.DBforPostgreSQL"
SERVER_PATH = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.DBforPostgreSQL/"
                         r"flexibleServers/([^/?]+)$", re.IGNORECASE)
OP_PATH = re.compile(r"^/subscriptions/([^/]+)/providers/Microsoft\.DBforPostgreSQL/locations/([^/]+)/"
                     r"azureAsyncOperation/([^/?]+)$", re.IGNORECASE)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "fake-azure.crt", directory / "fake-azure.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class StaticToken:
    """A TokenCredential that never looks anything up: the fake accepts any bearer token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("fake-token", int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


@dataclass
class Failure:
    method: str
    status: int
    code: str
    retry_after: str | None = None
    times: int = 1
    match: str = ""
    then: Callable[[], object] | None = None
    """Runs when the failure fires: a test can make the world change behind the client's back (a lost race)."""


@dataclass
class FakeAzure:
    subscription: str = "00000000-0000-0000-0000-0000000000aa"
    polls: int = 2
    url: str = ""
    cert: Path = Path()
    servers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)
    next_failure: dict[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    timer: OperationTimer | None = None

    @property
    def finished_at(self) -> dict[str, float]:
        """T of each timed operation by id (empty unless a timer was given)."""
        return self.timer.finished_at if self.timer is not None else {}

    # ---- test set-up

    def seed_server(self, group: str, name: str, *, location: str = "eastus", state: str = "Ready",
                    earliest: dt.datetime | None = None, role: str = "Primary",
                    tags: dict[str, str] | None = None) -> dict[str, Any]:
        server = {
            "id": self.server_id(group, name), "name": name, "type": f"{RP}/flexibleServers", "location": location,
            "tags": dict(tags or {}),
            "properties": {"state": state, "version": "16", "fullyQualifiedDomainName":
                           f"{name}.postgres.database.azure.com", "replicationRole": role,
                           "replica": {"role": role, "replicationState": "Active" if role != "Primary" else None},
                           "backup": {"backupRetentionDays": 7, "geoRedundantBackup": "Enabled",
                                      "earliestRestoreDate": iso(earliest or dt.datetime.now(dt.UTC))}}}
        self.servers[(group.lower(), name.lower())] = server
        return server

    def inject(self, method: str, status: int, *, code: str = "", retry_after: str | None = None, times: int = 1,
               match: str = "", then: Callable[[], object] | None = None) -> None:
        self.failures.append(Failure(method.upper(), status, code or ("TooManyRequests" if status == 429 else
                                                                      "InternalServerError"), retry_after, times,
                                     match, then))

    def fail_next_operation(self, code: str, message: str) -> None:
        self.next_failure = {"code": code, "message": message}

    def server_id(self, group: str, name: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers/{RP}/flexibleServers/{name}"

    def client(self, *, retry_total: int = 0) -> Any:
        """The real SDK client, aimed here; `retry_total=0` lets a test see one 429 or 500 as it is."""
        from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

        return PostgreSQLManagementClient(StaticToken(), self.subscription, base_url=self.url,
                                          credential_scopes=["https://management.azure.com/.default"],
                                          connection_verify=str(self.cert), polling_interval=0,
                                          retry_total=retry_total, retry_backoff_factor=0.01)

    # ---- behaviour

    def _begin(self, location: str, finish: Callable[[], object], undo: Callable[[], object]) -> dict[str, str]:
        op_id = f"op-{len(self.operations) + 1}"
        self.operations[op_id] = {"left": self.polls, "finish": finish, "undo": undo, "error": self.next_failure,
                                  "status": "InProgress"}
        self.next_failure = None
        if self.timer is not None:
            self.timer.begin(op_id)
        url = (f"{self.url}/subscriptions/{self.subscription}/providers/{RP}/locations/{location}/"
               f"azureAsyncOperation/{op_id}?api-version={API}")
        return {"Azure-AsyncOperation": url, "Location": url, "Retry-After": "0"}

    def _operation(self, op_id: str) -> tuple[int, dict[str, Any]]:
        op = self.operations.get(op_id)
        if op is None:
            return 404, {"error": {"code": "ResourceNotFound", "message": f"Operation {op_id} not found."}}
        if op["status"] == "InProgress":
            op["left"] -= 1
            finished = op["left"] <= 0 if self.timer is None else self.timer.done(op_id)
            if finished:
                if op["error"]:
                    op["status"] = "Failed"
                    op["undo"]()
                else:
                    op["status"] = "Succeeded"
                    op["finish"]()
        body: dict[str, Any] = {"name": op_id, "status": op["status"], "startTime": iso(dt.datetime.now(dt.UTC))}
        if op["status"] == "Failed":
            body["error"] = op["error"]
        return 200, body

    def _put(self, group: str, name: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        props = body.get("properties") or {}
        source_id = str(props.get("sourceServerResourceId") or "")
        if source_id:
            source = self.servers.get((source_id.split("/resourceGroups/")[1].split("/")[0].lower(),
                                       source_id.rsplit("/", 1)[1].lower()))
            if source is None:
                return 404, not_found(source_id.rsplit("/", 1)[1], group), {}
        key = (group.lower(), name.lower())
        server = self.seed_server(group, name, location=str(body.get("location")), state="Provisioning",
                                  tags=body.get("tags"))
        server["properties"].update({k: v for k, v in props.items() if k in {"createMode", "pointInTimeUTC",
                                                                            "sourceServerResourceId"}})

        def finish() -> None:
            server["properties"]["state"] = "Ready"

        headers = self._begin(str(body.get("location")), finish, lambda: self.servers.pop(key, None))
        return 202, None, headers

    def _patch(self, server: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        replica = (body.get("properties") or {}).get("replica") or {}
        previous = server["properties"]["state"]
        server["properties"]["state"] = "Updating"

        def finish() -> None:
            if replica.get("promoteMode"):
                server["properties"]["replica"] = {"role": "Primary", "replicationState": None}
                server["properties"]["replicationRole"] = "Primary"
            server["properties"]["state"] = "Ready"

        def undo() -> None:
            server["properties"]["state"] = previous

        return 202, None, self._begin(str(server["location"]), finish, undo)

    def _delete(self, group: str, name: str, server: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        server["properties"]["state"] = "Dropping"
        return 202, None, self._begin(str(server["location"]), lambda: self.servers.pop((group.lower(),
                                                                                          name.lower()), None),
                                      lambda: server["properties"].update(state="Ready"))

    def handle(self, method: str, path: str, body: dict[str, Any], auth: str) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests.append((method, path, body, auth))
            bare = path.split("?", 1)[0]
            for failure in self.failures:
                if failure.times > 0 and failure.method == method and failure.match in bare:
                    failure.times -= 1
                    if failure.then is not None:
                        failure.then()
                    headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
                    return failure.status, {"error": {"code": failure.code, "message": "Injected failure."}}, headers
            if not auth.startswith("Bearer "):
                return 401, {"error": {"code": "AuthenticationFailed", "message": "No bearer token."}}, {}
            found = OP_PATH.match(bare)
            if found and method == "GET":
                status, payload = self._operation(found.group(3))
                return status, payload, {"Retry-After": "0"}
            found = SERVER_PATH.match(bare)
            if not found:
                return 404, {"error": {"code": "NoRoute", "message": f"The fake has no route {method} {bare}."}}, {}
            group, name = found.group(2), found.group(3)
            server = self.servers.get((group.lower(), name.lower()))
            if method == "PUT":
                return self._put(group, name, body)
            if server is None:
                return 404, not_found(name, group), {}
            if method == "GET":
                return 200, server, {}
            if method == "PATCH":
                return self._patch(server, body)
            if method == "DELETE":
                return self._delete(group, name, server)
            return 405, {"error": {"code": "MethodNotAllowed", "message": method}}, {}


def not_found(name: str, group: str) -> dict[str, Any]:
    return {"error": {"code": "ResourceNotFound", "message": f"The Resource '{RP}/flexibleServers/{name}' under "
                                                             f"resource group '{group}' was not found."}}


def _handler(fake: FakeAzure) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, payload, headers = fake.handle(self.command, self.path, body,
                                                   str(self.headers.get("Authorization") or ""))
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows the recorded requests when an assertion needs them."""

    return Handler


@contextmanager
def fake_azure(*, polls: int = 2, timer: OperationTimer | None = None) -> Iterator[FakeAzure]:
    """Serve a FakeAzure over TLS on an ephemeral 127.0.0.1 port; stopped when the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeAzure(polls=polls, timer=timer)
        fake.cert, key = make_certificate(Path(tmp))
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(fake.cert), str(key))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        fake.url = f"https://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
