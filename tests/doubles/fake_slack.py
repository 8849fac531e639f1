"""A local Slack Web API that speaks the real wire protocol, so tests drive the real `slack_sdk.WebClient`.

Why a server and not a mocked client: drbot's Slack code is only trustworthy if the bytes slack_sdk puts on the
wire (JSON bodies for `chat.*`, form bodies for `files.*`, query strings for GETs, the raw upload to a
pre-signed URL, `Retry-After` on 429) are the ones exercised. Point a client at it with
`WebClient(token=fake.token, base_url=fake.base_url)` (or `SLACK_API_URL=fake.base_url`).

Every request is recorded as a `Call` (parsed params, lower-cased headers, raw body, what was answered), so a
test can assert on what drbot sent and on the messages as Slack would now show them (`message(ts)`).

It fails the ways Slack does: a 429 with `Retry-After`, an `ok: false` error, a 5xx — and the ambiguous ones, where
Slack has done the work and the caller cannot tell: `fail_next(..., stored=True)` stores the message and then
answers 500, `drop_next` stores it and closes the connection without an answer, `fail_for` answers 5xx to every
call for a while (an outage). `conversations.replies`/`conversations.history` return what was stored, with each
message's `metadata` only when asked for `include_all_metadata`, as Slack does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from tests.doubles import fake_slack_methods as methods

TOKEN = "xoxb-test-token"


@dataclass(frozen=True)
class Call:
    """One request as the fake saw it. `headers` keys are lower-case; `params` merges query and body."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    http_method: str
    body: bytes
    status: int
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def token(self) -> str | None:
        return _token(self.params, self.headers)

    def json(self, name: str) -> Any:
        """A param that may arrive JSON-encoded (form bodies carry `blocks`/`files` as strings)."""
        return methods.decoded(self.params.get(name))


@dataclass
class Upload:
    """A file in the three-step upload flow: URL issued, bytes received, completion (shared where)."""

    file_id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    completed: bool = False


@dataclass(frozen=True)
class _Failure:
    error: str
    status: int  # 0: close the connection without an answer
    retry_after: int | None
    stored: bool = False  # do the work first (store the message), then fail


@dataclass(frozen=True)
class _Outage:
    until: float  # time.monotonic()
    failure: _Failure


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


class FakeSlack:
    """The fake Web API. Configure `groups` ({group id: [user ids]}) and `users` ({user id: real name or a
    dict merged into the user object}) before the code under test asks."""

    def __init__(self, *, token: str = TOKEN, team_id: str = "T0TEAM", team_domain: str = "drbot-test",
                 bot_user_id: str = "U0DRBOT", bot_id: str = "B0DRBOT") -> None:
        self.token = token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_token: str | None = None  # Socket Mode: `apps.connections.open` takes the xapp token
        self.socket_url: str | None = None
        self.groups: dict[str, list[str]] = {}
        self.users: dict[str, str | dict[str, Any]] = {}
        self.uploads: dict[str, Upload] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self._messages: dict[str, dict[str, Any]] = {}
        self._calls: list[Call] = []
        self._failures: dict[str, deque[_Failure]] = {}
        self._outages: dict[str, _Outage] = {}
        self.lock = threading.RLock()  # guards all state; method handlers hold it while they change it
        self._changed = threading.Condition(self.lock)
        self._ts = 0
        self._ids = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeSlack:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-slack", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not started: use `with FakeSlack() as fake:` or call fake.start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """For `WebClient(base_url=...)`: Web API methods are POST/GET {base_url}{method}."""
        return f"{self.url}/api/"

    def response_url(self, kind: str = "commands") -> str:
        """A `response_url` for signed requests that points here; posts to it are recorded as "response_url"."""
        with self.lock:
            self._ids += 1
            n = self._ids
        return f"{self.url}/{kind}/{self.team_id}/{n}/hook{n:06d}"

    # ------------------------------------------------------------------------------------------- assertions

    def calls(self, method: str | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for(self, method: str, *, count: int = 1, timeout: float = 10,
                 where: Callable[[Call], bool] | None = None) -> Call:
        """The `count`-th matching call, waiting for it; an AssertionError listing what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self._calls if c.method == method and (where is None or where(c))]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(f"{c.method}({'ok' if c.ok else c.response.get('error')})"
                                     for c in self._calls) or "none"
                    raise AssertionError(f"expected {count} matching {method} call(s) within {timeout}s, "
                                         f"got {len(found)}; calls received: {seen}")
                self._changed.wait(remaining)

    def reset(self) -> None:
        """Forget calls, messages, uploads and queued failures; `groups`/`users` stay, ts keep increasing."""
        with self.lock:
            self._calls.clear()
            self._messages.clear()
            self._failures.clear()
            self._outages.clear()
            self.uploads.clear()
            self.ephemerals.clear()

    def fail_next(self, method: str, *, error: str = "ratelimited", status: int = 429, retry_after: int | None = 1,
                  times: int = 1, stored: bool = False) -> None:
        """Answer the next `times` calls of `method` with an error: HTTP 429 + `Retry-After` (as Slack rate
        limits), with status=200 `{"ok": false, "error": error}` (as Slack reports every other error), or a 5xx.
        `stored=True` does the call's work first — the message is posted and shows in the channel — and then
        answers the error: Slack's ambiguous failure, where a blind retry posts it twice."""
        with self.lock:
            queue = self._failures.setdefault(method, deque())
            queue.extend(_Failure(error=error, status=status, retry_after=retry_after, stored=stored)
                         for _ in range(times))

    def drop_next(self, method: str, *, times: int = 1, stored: bool = True) -> None:
        """Close the connection of the next `times` calls of `method` without answering, after doing their work
        when `stored` (the connection dropped after Slack stored the message)."""
        with self.lock:
            queue = self._failures.setdefault(method, deque())
            queue.extend(_Failure(error="connection dropped", status=0, retry_after=None, stored=stored)
                         for _ in range(times))

    def fail_for(self, method: str, *, seconds: float, status: int = 500, error: str = "internal_error",
                 stored: bool = False) -> None:
        """Answer every call of `method` with `status` for the next `seconds` (an outage; `method="*"` for every
        Web API method). Queued `fail_next` failures come first."""
        with self.lock:
            self._outages[method] = _Outage(until=time.monotonic() + seconds, failure=_Failure(
                error=error, status=status, retry_after=None, stored=stored))

    def message(self, ts: str) -> dict[str, Any]:
        """The message with this ts as it reads now (after every chat.update)."""
        with self.lock:
            if ts not in self._messages:
                raise KeyError(f"no message with ts {ts}; posted: {sorted(self._messages)}")
            return dict(self._messages[ts])

    def messages(self, *, channel: str | None = None, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """Posted messages in order; `thread_ts` selects the replies in that thread."""
        with self.lock:
            return [dict(m) for m in self._messages.values()
                    if (channel is None or m["channel"] == channel)
                    and (thread_ts is None or m.get("thread_ts") == thread_ts)]

    # ------------------------------------------------------------------------------------------- used by methods

    def next_ts(self) -> str:
        with self.lock:
            self._ts += 1
            micros = 1_732_440_000_000_000 + 100 * self._ts
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def next_file_id(self) -> str:
        with self.lock:
            self._ids += 1
            return f"F{self._ids:010d}"

    def store_message(self, message: dict[str, Any]) -> None:
        with self.lock:
            self._messages[str(message["ts"])] = message

    # ------------------------------------------------------------------------------------------- serving

    def _handle(self, *, http_method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> _Reply:
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        files: dict[str, bytes] = {}
        params.update(_parse_body(headers.get("content-type", ""), body, files))
        method, reply = self._route(path=path, params=params, headers=headers, body=body, files=files)
        payload = reply.payload if isinstance(reply.payload, dict) else {"ok": reply.status == 200}
        call = Call(method=method, params=params, headers=headers, http_method=http_method, body=body,
                    status=reply.status, response=payload)
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()
        return reply

    def _route(self, *, path: str, params: dict[str, Any], headers: dict[str, str], body: bytes,
               files: dict[str, bytes]) -> tuple[str, _Reply]:
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "upload":
            return "upload", self._upload(parts[1], body=body, files=files)
        if parts and parts[0] in ("commands", "actions"):
            return "response_url", _Reply(200, "ok")
        method = parts[-1] if parts else ""
        failure = self._failure_for(method)
        if failure is not None:
            if failure.stored:
                self._answer(method, params, headers)
            if failure.status == 0:
                return method, _Reply(0, {"ok": False, "error": failure.error})
            extra = {"Retry-After": str(failure.retry_after)} \
                if failure.status == 429 and failure.retry_after is not None else {}
            return method, _Reply(failure.status, {"ok": False, "error": failure.error}, extra)
        return method, self._answer(method, params, headers)

    def _failure_for(self, method: str) -> _Failure | None:
        with self.lock:
            queue = self._failures.get(method)
            if queue:
                return queue.popleft()
            for name in (method, "*"):
                outage = self._outages.get(name)
                if outage is not None and time.monotonic() < outage.until:
                    return outage.failure
        return None

    def _answer(self, method: str, params: dict[str, Any], headers: dict[str, str]) -> _Reply:
        call_token = _token(params, headers)
        if method == "apps.connections.open":
            if self.app_token is None or call_token != self.app_token:
                return _Reply(200, {"ok": False, "error": "invalid_auth"})
            return _Reply(200, {"ok": True, "url": self.socket_url})
        if not call_token:
            return _Reply(200, {"ok": False, "error": "not_authed"})
        if call_token != self.token:
            return _Reply(200, {"ok": False, "error": "invalid_auth"})
        answer = methods.HANDLERS.get(method)
        return _Reply(200, answer(self, params) if answer else {"ok": True})

    def _upload(self, file_id: str, *, body: bytes, files: dict[str, bytes]) -> _Reply:
        with self.lock:
            upload = self.uploads.get(file_id)
            if upload is None:
                return _Reply(404, f"no upload URL was issued for {file_id}")
            upload.content = next(iter(files.values())) if files else body
            size = len(upload.content)
        return _Reply(200, f"OK - {size}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSlack


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake = cast(_Server, self.server).fake
        reply = fake._handle(http_method=self.command, path=split.path, query=split.query, headers=headers,
                             body=body)
        if reply.status == 0:  # the work is done; the caller never hears of it
            self.close_connection = True
            return
        if isinstance(reply.payload, dict):
            data, content_type = json.dumps(reply.payload).encode(), "application/json; charset=utf-8"
        else:
            data, content_type = reply.payload.encode(), "text/plain; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the recorded calls when an assertion fails."""


def _token(params: dict[str, Any], headers: dict[str, str]) -> str | None:
    """Slack takes the token as a bearer header (slack_sdk's way) or as a `token` param."""
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ")
    token = params.get("token")
    return str(token) if token else None


def _parse_body(content_type: str, body: bytes, files: dict[str, bytes]) -> dict[str, Any]:
    """Params from any body slack_sdk sends: JSON, form-encoded, or multipart (file parts go to `files`)."""
    if not body:
        return {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        parsed = json.loads(body)
        return parsed if isinstance(parsed, dict) else {"_json": parsed}
    if kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = cast(bytes, part.get_payload(decode=True) or b"")
            if part.get_filename() is not None:
                files[str(name)] = payload
            elif name:
                fields[str(name)] = payload.decode("utf-8")
        return fields
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return {}
