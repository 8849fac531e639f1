"""An HTTP proxy in front of moto server that makes AWS operations finish at a known moment T.

moto makes a restored RDS instance `available` and a Route53 change `INSYNC` at once, so nothing measured against
it can say when the operation "finished". This proxy passes every request through to moto unchanged and, until
T = the creating request + `timer.duration` (on the `OperationTimer`'s clock, see timing.py), rewrites what the
client reads:

    RDS  RestoreDBInstanceToPointInTime / RestoreDBInstanceFromDBSnapshot / CreateDBInstance(ReadReplica)
         → that instance's `<DBInstanceStatus>available` reads `creating` in every response until T
    Route53 ChangeResourceRecordSets
         → that change's `<Status>INSYNC` reads `PENDING` (in its own answer and in GetChange) until T

T is in `proxy.finished_at`, keyed by the DB instance identifier or by the bare change id (`C0123…`, without
`/change/`). The boto3 clients are pointed at `proxy.url` instead of moto's: `MotoServer(proxy.url).client("rds")`.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.timing import OperationTimer

CREATING_ACTIONS = {"RestoreDBInstanceToPointInTime": "TargetDBInstanceIdentifier",
                    "RestoreDBInstanceFromDBSnapshot": "DBInstanceIdentifier",
                    "CreateDBInstance": "DBInstanceIdentifier",
                    "CreateDBInstanceReadReplica": "DBInstanceIdentifier"}
RRSET_PATH = re.compile(r"^/2013-04-01/hostedzone/[^/]+/rrset/?$")
CHANGE_PATH = re.compile(r"^/2013-04-01/change/([^/]+)$")
DB_INSTANCE = re.compile(rb"<DBInstance>.*?</DBInstance>", re.S)
DB_IDENTIFIER = re.compile(rb"<DBInstanceIdentifier>([^<]+)</DBInstanceIdentifier>")
CHANGE_ID = re.compile(rb"<ChangeInfo>.*?<Id>(?:/change/)?([^<]+)</Id>", re.S)
HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "date", "server"}


class TimedAwsProxy:
    """The proxy's state; `rewritten` counts the answers it changed, so a test can see it was in the path."""

    def __init__(self, *, upstream: str, timer: OperationTimer) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timer = timer
        self.rewritten = 0
        self.url = ""
        self.lock = threading.Lock()

    @property
    def finished_at(self) -> dict[str, float]:
        return self.timer.finished_at

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str,
                                                                                                        str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            status = response.status
        finally:
            connection.close()
        if status < 300:
            self._note_creation(method, path, headers, body, data)
        return status, kept, self._rewrite(path, data)

    def _note_creation(self, method: str, path: str, headers: dict[str, str], body: bytes, answer: bytes) -> None:
        bare = urlsplit(path).path
        if method == "POST" and RRSET_PATH.match(bare):
            found = CHANGE_ID.search(answer)
            if found:
                self.timer.begin(found.group(1).decode())
            return
        if method == "POST" and "x-www-form-urlencoded" in headers.get("Content-Type", headers.get("content-type",
                                                                                                     "")):
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            key = CREATING_ACTIONS.get(form.get("Action", ""))
            if key and form.get(key):
                self.timer.begin(form[key])

    def _rewrite(self, path: str, data: bytes) -> bytes:
        if b"<DBInstance>" in data:
            return DB_INSTANCE.sub(self._rewrite_instance, data)
        bare = urlsplit(path).path
        change = CHANGE_PATH.match(bare)
        change_id = change.group(1) if change else None
        if change_id is None and RRSET_PATH.match(bare):
            found = CHANGE_ID.search(data)
            change_id = found.group(1).decode() if found else None
        if change_id and self.timer.tracks(change_id) and not self.timer.done(change_id) \
                and b"<Status>INSYNC</Status>" in data:
            with self.lock:
                self.rewritten += 1
            return data.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        return data

    def _rewrite_instance(self, block: re.Match[bytes]) -> bytes:
        text = block.group(0)
        found = DB_IDENTIFIER.search(text)
        name = found.group(1).decode() if found else ""
        if name and self.timer.tracks(name) and not self.timer.done(name) \
                and b"<DBInstanceStatus>available</DBInstanceStatus>" in text:
            with self.lock:
                self.rewritten += 1
            return text.replace(b"<DBInstanceStatus>available</DBInstanceStatus>",
                                b"<DBInstanceStatus>creating</DBInstanceStatus>")
        return text


def _handler(proxy: TimedAwsProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            status, kept, data = proxy.forward(self.command, self.path, headers, body)
            self.send_response(status)
            for key, value in kept:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            return

    return Handler


@contextmanager
def timed_aws_proxy(*, upstream: str, timer: OperationTimer) -> Iterator[TimedAwsProxy]:
    """A proxy on 127.0.0.1 and an ephemeral port in front of `upstream` (moto server's URL), stopped on exit."""
    proxy = TimedAwsProxy(upstream=upstream, timer=timer)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
