"""At the door (issue 14, items 1–4): hostile bodies, replays and slow clients against `drbot serve` over real HTTP.

Every server here runs under `bot.http.server_config`, as `drbot serve` does. Each test sends the request from the
finding first — unsigned and signed where it matters — and then asserts the answer (400/401/408/413, never 500),
the one log line (WARNING, no traceback, never the body), and that nothing ran.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
import yaml

import bot.door
import bot.http
from bot.config import Settings
from bot.door import MAX_DEPTH, SEEN_KIND, Delivery, Refused, SeenSignatures, loads, verify_slack
from bot.http import server_config
from bot.jobqueue import jobs_table
from bot.serve import Front, build_front
from runbooks.queries import Marks
from runbooks.store import Store
from tests.doubles import pagerduty_webhooks as pdw
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import block_action, sign, slash_command
from tests.slack_harness import ALICE, BOB, CHANNEL, SECRET, ServedDrbot, free_port, slack_config, wait_until

PD_SECRET = "whsec-door-0123"
FORM = "application/x-www-form-urlencoded"
DEEP = b"[" * 50_000 + b"]" * 50_000
MiB = 1024 * 1024


# ------------------------------------------------------------------------------------------------- serving


class Door:
    """An ASGI app served by uvicorn under `server_config` on 127.0.0.1, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(server_config(app, host="127.0.0.1", port=self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: bool(self.server.started), timeout=10)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def slack(self, body: bytes, *, signed: bool = True, content_type: str = FORM,
              headers: dict[str, str] | None = None) -> httpx.Response:
        sent = sign(body, SECRET) if signed else {"X-Slack-Request-Timestamp": str(int(time.time()))}
        sent.update({"Content-Type": content_type, **(headers or {})})
        return self.http.post("/slack/events", content=body, headers=sent)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-test-token") as server:
        yield server


@dataclass
class OneProcess:
    bot: ServedDrbot
    door: Door


@pytest.fixture
def served(tmp_path: Path, fake: FakeSlack) -> Iterator[Callable[[], OneProcess]]:
    """One process (engine, Bolt and the routes), served under `server_config`; call again to restart it on the
    same database."""
    running: list[OneProcess] = []

    def start() -> OneProcess:
        for old in running:
            old.door.close()
            old.bot.close()
        running.clear()
        bot = ServedDrbot(tmp_path, fake_base_url=fake.base_url, pagerduty_secrets=PD_SECRET)
        running.append(OneProcess(bot=bot, door=Door(bot.server.config.app)))
        return running[0]

    yield start
    for old in running:
        old.door.close()
        old.bot.close()


@pytest.fixture
def front(tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Front, Door]]:
    """`drbot serve`'s two processes: this process is the front, a spawned worker runs the engine."""
    path = tmp_path / "drbot.yml"
    path.write_text(yaml.safe_dump(slack_config()))
    env = {"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "DRBOT_CONFIG": str(path),
           "DRBOT_SANDBOX_SPEED": "100000", "SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": fake.base_url, "PAGERDUTY_WEBHOOK_SECRETS": PD_SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the worker is a spawned process: it reads them like `drbot serve`
    made = build_front(settings=Settings(), config_path=path, exit_on_loss=False)
    door = Door(made.asgi)
    try:
        yield made, door
    finally:
        door.close()
        made.close()


# ------------------------------------------------------------------------------------------------- helpers


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def one_line_naming(caplog: pytest.LogCaptureFixture, reason: str, *, never: bytes = b"") -> None:
    """Exactly one WARNING (or worse) was logged, it names `reason`, and it carries no traceback nor the body."""
    found = warnings_logged(caplog)
    assert len(found) == 1, [r.getMessage() for r in found]
    [record] = found
    assert record.levelno == logging.WARNING and record.exc_info is None and record.stack_info is None
    assert reason in record.getMessage(), record.getMessage()
    assert "Traceback" not in caplog.text
    if never:
        assert never.decode("latin-1") not in caplog.text


def head(path: str, *, length: int | None = None, content_type: str = FORM, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}{extra}"
            "\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, everything until the server closed): a response read off a raw socket."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1]), data


def closed_after(sock: socket.socket, *, drip: bytes, every: float, limit: float) -> tuple[float | None, bytes]:
    """Send `drip` a byte every `every` seconds: the seconds until the server closed (None if it had not within
    `limit`), and what it answered before."""
    started = time.monotonic()
    received = b""
    sock.settimeout(every)
    for byte in drip:
        try:
            sock.sendall(bytes([byte]))
            chunk = sock.recv(65536)
            if chunk == b"":
                return time.monotonic() - started, received
            received += chunk
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started, received
        if time.monotonic() - started > limit:
            break
    return None, received


def upload(sock: socket.socket, size: int) -> int:
    """Send a `size`-byte chunked body at about 60 MB/s (slow enough for /healthz to be asked meanwhile) until
    done or the server closes; the bytes sent."""
    chunk = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
    sent = 0
    try:
        while sent < size:
            sock.sendall(chunk)
            sent += 65536
            time.sleep(0.001)
    except OSError:  # the server answered 413 and closed
        pass
    return sent


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------------------------------- without a server


def test_the_findings_raise_in_the_libraries_and_the_door_refuses_them_first() -> None:
    """What each finding's 500 was, reproduced in the library that raised it, and the door's refusal of it."""
    from slack_bolt.request import BoltRequest
    from slack_sdk.signature import SignatureVerifier

    with pytest.raises(RecursionError):
        json.loads(DEEP)
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH}"):
        loads(DEEP)
    with pytest.raises(json.JSONDecodeError):
        BoltRequest(body="payload=%7Bnot-json", headers={"content-type": FORM})
    with pytest.raises(ValueError):
        SignatureVerifier(SECRET).is_valid(b"x", "abc", "v0=00")
    with pytest.raises(Refused, match="not a Unix time") as refused:
        verify_slack(b"x", timestamp="abc", signature="v0=00", secret=SECRET)
    assert refused.value.status == 401
    with pytest.raises(UnicodeDecodeError):
        b"text=\xff".decode()


def test_nesting_is_measured_without_recursing() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError, match="nested deeper"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper"):
        loads('{"a":' * 70 + "1" + "}" * 70)
    # brackets inside strings, escaped quotes included, are text, not nesting
    text = json.dumps({"title": "[" * 5000 + '"\\' + "{" * 5000, "blocks": [[{"t": "]]]"}]]})
    assert loads(text)["blocks"] == [[{"t": "]]]"}]]
    with pytest.raises(ValueError, match="do not match"):
        loads("[}" * 100)
    with pytest.raises(ValueError, match="do not match"):
        loads("[" * 50_000 + "}")
    started = time.perf_counter()
    for hostile in ("[" * MiB, "[]" * (MiB // 2), "[" * (MiB // 2) + "]" * (MiB // 2)):
        with pytest.raises(ValueError):
            loads(hostile)
    assert time.perf_counter() - started < 2.0


def test_the_timestamp_must_be_plain_seconds_within_five_minutes() -> None:
    body = b"token=x&text=hi"
    now = int(time.time())
    good = sign(body, SECRET, timestamp=now)
    assert verify_slack(body, timestamp=good["X-Slack-Request-Timestamp"], signature=good["X-Slack-Signature"],
                        secret=SECRET) == now
    for timestamp, reason in (("abc", "not a Unix time"), (f"+{now}", "not a Unix time"),
                              (f" {now}", "not a Unix time"), ("1_700_000_000", "not a Unix time"),
                              ("", "no X-Slack-Request-Timestamp"), (str(now - 301), "301 s old"),
                              (str(now + 400), "ahead")):
        with pytest.raises(Refused, match=reason):
            verify_slack(body, timestamp=timestamp, signature=good["X-Slack-Signature"], secret=SECRET, now=now)
    for signature in (None, "v0=" + "0" * 64, good["X-Slack-Signature"].upper(), "v0=é"):
        with pytest.raises(Refused):
            verify_slack(body, timestamp=str(now), signature=signature, secret=SECRET, now=now)
    with pytest.raises(Refused, match="SLACK_SIGNING_SECRET is not set"):  # Socket Mode: HTTP takes nothing
        verify_slack(body, timestamp=str(now), signature=sign(body, "")["X-Slack-Signature"], secret="")


def test_seen_signatures_are_pruned_after_the_window(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    try:
        store.claim_once(kind=SEEN_KIND, key="v0=old", value={"at": int(time.time()) - 1000})
        seen = SeenSignatures(Marks(store), prune_every=0)
        assert seen.first_time(Delivery(signature="v0=new", timestamp=int(time.time())))
        assert not seen.first_time(Delivery(signature="v0=new", timestamp=int(time.time())))
        assert set(store.list_state(kind=SEEN_KIND)) == {"v0=new"}
    finally:
        store.close()


# --------------------------------------------------------------------------------------- malformed (item 1)


@pytest.mark.slow
def test_malformed_requests_get_4xx_and_one_log_line(served: Callable[[], OneProcess], fake: FakeSlack,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    one = served()
    door = one.door
    caplog.set_level(logging.WARNING)
    opened = slash_command("incident open Door probe sev3 staging", user_id=ALICE, channel_id=CHANNEL)
    cases: list[tuple[str, bytes, dict[str, Any], int, str]] = [
        # (what, body, how it is sent, status, what the log line names)
        ("unsigned form with \\xff", opened + b"\xff", {"signed": False}, 401, "no X-Slack-Signature"),
        ("unsigned JSON 'x'", b"x", {"signed": False, "content_type": "application/json"}, 401,
         "no X-Slack-Signature"),
        ("unsigned 50,000-deep", DEEP, {"signed": False, "content_type": "application/json"}, 401,
         "no X-Slack-Signature"),
        ("unsigned bad payload", b"payload=%7Bnot-json", {"signed": False}, 401, "no X-Slack-Signature"),
        ("timestamp abc", opened, {"signed": False, "headers": {"X-Slack-Request-Timestamp": "abc",
                                                                "X-Slack-Signature": "v0=" + "0" * 64}},
         401, "not a Unix time"),
        ("forged", opened, {"signed": False, "headers": {"X-Slack-Signature": "v0=" + "0" * 64}}, 401,
         "does not match the body"),
        ("signed form with \\xff", opened + b"\xff", {}, 400, "not UTF-8"),
        ("signed JSON 'x'", b"x", {"content_type": "application/json"}, 400, "the body is not JSON"),
        ("signed 50,000-deep", DEEP, {"content_type": "application/json"}, 400, f"nested deeper than {MAX_DEPTH}"),
        ("signed bad payload", b"payload=%7Bnot-json", {}, 400, "the payload field is not JSON"),
        ("signed deep payload", b"payload=" + DEEP, {}, 400, "nested deeper"),
        ("signed JSON array", b"[1]", {"content_type": "application/json"}, 400, "not an object"),
    ]
    for what, body, how, status, reason in cases:
        caplog.clear()
        response = door.slack(body, **how)
        assert response.status_code == status, (what, response.status_code, response.text)
        one_line_naming(caplog, reason, never=b"Door+probe")
    # PagerDuty: verified before parsing, deep nesting refused (signed), never a 500
    for what, body, signature, status, reason in (
            ("unsigned deep", DEEP, None, 401, "signature does not match"),
            ("signed deep", DEEP, pdw.sign(DEEP, [PD_SECRET]), 400, f"nested deeper than {MAX_DEPTH}"),
            ("signed \\xff", b'{"event": "\xff"}', pdw.sign(b'{"event": "\xff"}', [PD_SECRET]), 400, "not JSON")):
        caplog.clear()
        headers = {pdw.SIGNATURE_HEADER: signature} if signature else {}
        response = door.http.post("/pagerduty/webhook", content=body, headers=headers)
        assert response.status_code == status, (what, response.text)
        one_line_naming(caplog, reason)
    one.bot.settle()
    assert one.bot.engine.store.list_incidents() == []
    assert fake.calls("chat.postMessage") == [] and fake.calls("chat.postEphemeral") == []
    # and the door still opens for Slack's own requests
    caplog.clear()
    response = door.slack(opened)
    assert response.status_code == 200 and "On it" in response.text
    one.bot.settle()
    assert [i.title for i in one.bot.engine.store.list_incidents()] == ["Door probe"]
    assert warnings_logged(caplog) == []


# ---------------------------------------------------------------------------------------- oversized (item 1)


@pytest.mark.slow
def test_oversized_bodies_get_413_without_being_read(served: Callable[[], OneProcess],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    door = served().door
    caplog.set_level(logging.WARNING)
    rss_before = max_rss_mib()
    # Content-Length over the cap: 413 at once, before a byte of the body is sent
    for path, size in (("/slack/events", 40 * MiB), ("/pagerduty/webhook", 100 * MiB)):
        caplog.clear()
        with door.connect() as sock:
            started = time.perf_counter()
            sock.sendall(head(path, length=size))
            status, answer = read_response(sock)
        assert status == 413 and b"connection: close" in answer.lower()
        assert time.perf_counter() - started < 1.0
        one_line_naming(caplog, f"Content-Length is {size} bytes")

    # No Content-Length (chunked): 413 as soon as the cap is passed, while /healthz keeps answering
    latencies: list[float] = []
    probing = threading.Event()
    probing.set()

    def probe() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{door.port}", timeout=10) as client:
            while probing.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for path, size in (("/slack/events", 40 * MiB), ("/pagerduty/webhook", 100 * MiB)):
            caplog.clear()
            with door.connect() as sock, ThreadPoolExecutor(1) as pool:
                sock.sendall(head(path))
                uploading = pool.submit(upload, sock, size)
                status, _ = read_response(sock)
                sent = uploading.result(timeout=30)
            assert status == 413
            assert sent < size / 4, f"{sent} bytes were taken"
            one_line_naming(caplog, f"passed the {MiB}-byte limit")
    finally:
        probing.clear()
        prober.join(timeout=10)
    assert latencies and max(latencies) < 1.0, latencies
    assert max_rss_mib() - rss_before < 40  # no 40 MB body was ever held


# ---------------------------------------------------------------------------------- slow clients (item 3)


@pytest.mark.slow
def test_slow_heads_idle_connections_and_slow_bodies_are_cut_off(served: Callable[[], OneProcess],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bot.http, "HEAD_TIMEOUT", 1.0)
    monkeypatch.setattr(bot.door, "BODY_TIMEOUT", 1.0)
    door = served().door
    caplog.set_level(logging.WARNING)
    # headers at 5 bytes a second (the finding: 1 byte/s, held open for ever)
    with door.connect() as sock:
        took, answered = closed_after(sock, drip=head("/slack/events", length=10), every=0.2, limit=8)
    assert took is not None and took < 4 and answered == b"", (took, answered)
    one_line_naming(caplog, "no complete request head within 1 s")
    # a connection that sends nothing at all
    caplog.clear()
    with door.connect() as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
    assert time.monotonic() - started < 4
    one_line_naming(caplog, "no complete request head")
    # a body at 5 bytes a second: 408 once the body deadline passes, and it never counted as in flight
    caplog.clear()
    with door.connect() as sock:
        sock.sendall(head("/slack/events", length=100))
        took, answered = closed_after(sock, drip=b"a" * 100, every=0.2, limit=8)
    assert took is not None and took < 4 and answered.startswith(b"HTTP/1.1 408 "), (took, answered)
    one_line_naming(caplog, "the body was not complete after 1 s")
    # a keep-alive client that is quick is not disturbed
    caplog.clear()
    with httpx.Client(base_url=f"http://127.0.0.1:{door.port}") as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.5)
    assert warnings_logged(caplog) == []


def test_server_config_sets_the_limits() -> None:
    config = server_config(object(), host="127.0.0.1", port=1)
    assert config.http is bot.http.BoundedH11Protocol
    assert (config.timeout_keep_alive, config.limit_concurrency, config.h11_max_incomplete_event_size) == \
        (bot.http.KEEP_ALIVE, bot.http.MAX_CONNECTIONS, bot.http.MAX_HEAD)


# --------------------------------------------------------------------------------------------- replays (item 2)


def incident_open(door: Door, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return door.http.post("/slack/events", content=body, headers={**headers, "Content-Type": FORM})


def replays_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in warnings_logged(caplog) if "a replay" in r.getMessage()]


@pytest.mark.slow
def test_a_replayed_command_runs_once_even_after_a_restart(served: Callable[[], OneProcess], fake: FakeSlack,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    one = served()
    caplog.set_level(logging.WARNING)
    body = slash_command("incident open Replay probe sev3 staging", user_id=ALICE, channel_id=CHANNEL)
    signed = sign(body, SECRET)
    answers = [incident_open(one.door, body, signed) for _ in range(3)]
    # each delivery is acknowledged as Slack expects (the ack never waits for the database) ...
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("On it" in a.text for a in answers)
    one.bot.settle()
    # ... and only the first runs: the work claims the signature before it starts
    assert [i.id for i in one.bot.engine.store.list_incidents()] == ["INC-1"]
    replays = replays_logged(caplog)
    assert len(replays) == 2 and all("nothing was run" in r for r in replays), replays

    restore = slash_command("restore k8s staging latest", user_id=ALICE, channel_id=CHANNEL)
    restore_signed = sign(restore, SECRET)
    assert "On it" in incident_open(one.door, restore, restore_signed).text
    one.bot.settle()
    assert incident_open(one.door, restore, restore_signed).status_code == 200
    one.bot.settle()
    assert one.bot.engine.store.get_run("R-1") is not None and one.bot.engine.store.get_run("R-2") is None
    velero = one.bot.engine.store.load_state(kind="sandbox.velero", key="staging/velero")
    assert velero is not None and len(velero["restores"]) == 1

    # the record is in the database: a restarted drbot runs nothing for the same bytes either
    one = served()
    caplog.clear()
    assert incident_open(one.door, body, signed).status_code == 200
    assert incident_open(one.door, restore, restore_signed).status_code == 200
    one.bot.settle()
    assert [i.id for i in one.bot.engine.store.list_incidents()] == ["INC-1"]
    assert one.bot.engine.store.get_run("R-2") is None
    assert len(replays_logged(caplog)) == 2
    # while a fresh signature of the same command (as Slack would send) is taken
    again = sign(body, SECRET, timestamp=int(signed["X-Slack-Request-Timestamp"]) - 1)
    assert "On it" in incident_open(one.door, body, again).text
    one.bot.settle()
    assert [i.id for i in one.bot.engine.store.list_incidents()] == ["INC-1", "INC-2"]


@pytest.mark.slow
def test_a_replayed_click_decides_nothing_twice(served: Callable[[], OneProcess], fake: FakeSlack,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A replayed Approve is acknowledged and counts nothing: the request it named stays as the first click
    left it, and no second decision reaches the timeline."""
    one = served()
    caplog.set_level(logging.WARNING)
    click = block_action(action_id="dr_approve", value="AR-999", user_id=BOB, channel_id=CHANNEL,
                         message_ts="1700000000.000100")
    signed = sign(click, SECRET)
    answers = [incident_open(one.door, click, signed) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    one.bot.settle()
    # the first click was run (and refused: there is no AR-999), the replay was not
    told = [c.params for c in fake.calls("chat.postEphemeral") if c.params.get("user") == BOB]
    assert len(told) == 1, told
    assert len(replays_logged(caplog)) == 1


@pytest.mark.slow
def test_the_two_process_front_runs_replays_once(front: tuple[Front, Door], fake: FakeSlack) -> None:
    made, door = front
    body = slash_command("incident open Replay probe sev3 staging", user_id=ALICE, channel_id=CHANNEL)
    signed = sign(body, SECRET)
    answers = [incident_open(door, body, signed) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200] and all("On it" in a.text for a in answers)
    assert made.worker.settle(timeout=60)
    assert [i.id for i in made.surface.engine.store.list_incidents()] == ["INC-1"]
    # claimed where the front queued it, for the leader: one job, keyed by the request's signature
    with made.queue.engine.connect() as conn:
        jobs = conn.execute(sa.select(jobs_table.c.once, jobs_table.c.state)).all()
    assert [(once, state) for once, state in jobs] == [(signed["X-Slack-Signature"], "done")]


# ----------------------------------------------------------------------------------- slow uploads (item 4)


def finished(fake: FakeSlack, run_id: str) -> bool:
    return any(f"{run_id} (k8s-restore) finished successfully" in str(c.params.get("text"))
               for c in fake.calls("chat.postMessage"))


def timed_restore(door: Door, fake: FakeSlack, run_id: str) -> float:
    """Seconds from `/dr restore k8s staging latest` to its thread saying it finished."""
    started = time.perf_counter()
    # Slack's trigger_id differs per invocation: without it, the same command signed in the same second would
    # be the same bytes, refused as a replay
    response = door.slack(slash_command("restore k8s staging latest", user_id=ALICE, channel_id=CHANNEL,
                                        trigger_id=f"trigger-{run_id}"))
    assert response.status_code == 200 and "On it" in response.text
    wait_until(lambda: finished(fake, run_id), timeout=60)
    return time.perf_counter() - started


@pytest.mark.slow
def test_a_slow_upload_does_not_delay_a_runs_thread(front: tuple[Front, Door], fake: FakeSlack,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    made, door = front
    caplog.set_level(logging.WARNING)
    baseline = timed_restore(door, fake, "R-1")
    assert made.worker.settle(timeout=60)

    # a client sending its body a byte every 0.2 s for 6 s (within the 10 s body deadline)
    body = b"x" * 30
    answer: list[int] = []

    def slow_upload() -> None:
        with door.connect() as sock:
            sock.sendall(head("/slack/events", length=len(body)))
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
            answer.append(read_response(sock)[0])

    uploader = threading.Thread(target=slow_upload)
    uploader.start()
    time.sleep(0.5)
    assert made.surface.inflight == 0 and made.worker.inflight.value == 0  # a body being read is not in flight
    slowed = timed_restore(door, fake, "R-2")
    assert uploader.is_alive(), "the run was measured while the upload was still being sent"
    uploader.join(timeout=30)
    assert slowed < 2 * baseline + 1.0, (baseline, slowed)
    assert answer == [401]  # and once complete, the unsigned body is refused
    assert [r.getMessage() for r in warnings_logged(caplog) if "no X-Slack-Request-Timestamp" in r.getMessage()]
    assert made.worker.settle(timeout=60)
    assert [r.status.value for r in (made.surface.engine.store.get_run("R-1"),
                                     made.surface.engine.store.get_run("R-2")) if r] == ["succeeded", "succeeded"]
