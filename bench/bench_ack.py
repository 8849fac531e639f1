"""How fast does drbot acknowledge Slack, next to a Bolt app that does nothing but ack? (`python bench/bench_ack.py`)

Slack shows the user an error unless a slash command or a button click gets its HTTP 2xx (the `ack()`) within
3 seconds, and a slow ack under load is what a busy incident channel feels first. Bolt itself has a floor
(about 10 ms at the median with 20 concurrent clients on two cores), so the absolute figure alone says
little: this measures drbot's served app and a bare Bolt app served the same way, in the same run, and reports
the ratio. drbot's own cost on the ack path (parsing, looking up the channel's open incidents, metrics, handing
the work to its pool, and that work competing for the CPU) is what the ratio shows.

How: each app runs in its own child process (this script with `--serve drbot|bare`), uvicorn on 127.0.0.1 in
front of the Starlette route of `bot.http.build_asgi`; drbot is served as `drbot serve` serves it over HTTP, a
front that acknowledges plus the worker process it starts (`bot.serve`). A third child serves the local fake
Slack Web API both talk to. The load generator is this process: 20 concurrent clients send real signed requests
(`/dr status`, and a `dr_approve` click on a request that does not exist, which drbot acks and then refuses in
the background) and time each response on the client side. Rounds alternate between the two apps, and drbot's
background work is let finish before the bare app is timed, so neither pays for the other. It exits non-zero
only if something crashes or a request is refused: a missed goal is information for a person, not a CI gate.

Two layouts, each against the bare app in rounds of its own: drbot on SQLite (one `drbot serve`: the front
puts each job into `drbot.jobs.db` before the ack, its worker leads alone), then drbot on PostgreSQL, the
highly available layout (the front's INSERT and NOTIFY go to drbot's database on a throw-away server started
by `tests.pg`, and the worker has to win the leadership before it claims). The PostgreSQL pass uses fewer
requests to keep the run short; without PostgreSQL binaries it is skipped, with a line saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = 20
REQUESTS = 1200  # timed, per (app, kind)
PG_REQUESTS = 600  # timed, per (app, kind), on PostgreSQL: fewer, to keep the run short (p99 still has 6 above it)
WARM_UP = 50  # per (app, kind), untimed
ROUNDS = 8  # the timed requests are split into rounds that alternate between the apps
ACK_GOAL_MS = 3000.0  # Slack's limit for an ack
RATIO_GOAL = 1.3
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-test-token"
CHANNEL = "C0INCIDENT"
USER = "U0ALICE"
KINDS = {"command": "/dr status", "button": "dr_approve click"}
APPS = ("drbot", "bare")
LAYOUTS = ("sqlite", "postgresql")
ON = {"sqlite": "", "postgresql": " on PostgreSQL"}  # a suffix to the figures' labels: SQLite's keep theirs

Results = dict[tuple[str, str], tuple[list[float], float]]  # (app, kind) -> (client-side ms, wall seconds)


# ------------------------------------------------------------------------------------------ the served apps


def bare_bolt(fake_base_url: str) -> Any:
    """A Bolt app configured as drbot's (`bot.slack.app.build_app`) whose listeners only ack: the floor."""
    from slack_bolt import App
    from slack_sdk import WebClient

    app = App(client=WebClient(base_url=fake_base_url, token=TOKEN), signing_secret=SECRET,
              process_before_response=True, token_verification_enabled=False)

    @app.command("/dr")
    def dr(ack: Callable[..., None]) -> None:
        ack()

    @app.action(re.compile(r"^dr_.*"))
    def button(ack: Callable[..., None]) -> None:
        ack()

    return app


def bare_asgi(bolt_app: Any) -> Any:
    """The `/slack/events` route of `bot.http.build_asgi`, step for step (the body read under the door's cap,
    the signature checked on the raw bytes, the body checked, dispatch in a worker thread), so both apps are
    served the same way. Keep it in step with that route, or the ratio compares serving code, not listeners."""
    import anyio.to_thread
    from slack_bolt.request import BoltRequest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bot.door import Refused, check_slack_body, read_body, verify_slack

    def take(body: bytes, headers: dict[str, str], query: str) -> Response:
        text = check_slack_body(body, content_type=headers.get("content-type"))
        bolt_response = bolt_app.dispatch(BoltRequest(body=text, query=query, headers=dict(headers)))
        sent = {k: v[0] for k, v in bolt_response.headers.items() if v and k.lower() != "content-length"}
        return Response(content=bolt_response.body, status_code=bolt_response.status, headers=sent)

    async def slack_events(request: Request) -> Response:
        headers = dict(request.headers.items())
        try:
            body = await read_body(request)
            verify_slack(body, timestamp=headers.get("x-slack-request-timestamp"),
                         signature=headers.get("x-slack-signature"), secret=SECRET)
            answer: Response = await anyio.to_thread.run_sync(take, body, headers, request.url.query)
        except Refused as refused:
            return Response(content=refused.reason, status_code=refused.status)
        return answer

    return Starlette(routes=[Route("/slack/events", slack_events, methods=["POST"])])


def drbot_app(tmp: Path, fake_base_url: str, database_url: str = ""
              ) -> tuple[Any, Callable[[], bool], Callable[[], None]]:
    """drbot as `drbot serve` runs it over HTTP (sandbox config; `database_url`, or SQLite in `tmp`): the
    front's ASGI app (its worker process started, and leading), a wait for the worker's background work, and
    the shutdown."""
    import yaml

    from bot.config import Settings
    from bot.serve import build_front
    from tests.slack_harness import slack_config

    config = tmp / "drbot.yml"
    config.write_text(yaml.safe_dump(slack_config()))
    os.environ.update({"DRBOT_DATABASE_URL": database_url or f"sqlite:///{tmp / 'drbot.db'}",
                       "DRBOT_CONFIG": str(config),
                       "DRBOT_SANDBOX_SPEED": "100000", "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                       "SLACK_API_URL": fake_base_url})  # the worker process reads them, as under `drbot serve`
    front = build_front(settings=Settings(), config_path=config)
    # On PostgreSQL the worker starts as a standby and takes the leadership a moment later (its `settle` says
    # False until then): nothing is timed before it leads, or the first jobs would wait for an election.
    deadline = time.monotonic() + 90
    while not front.worker.settle(timeout=10):
        if time.monotonic() > deadline:
            front.close()
            raise RuntimeError("drbot's worker did not take the leadership within 90 s")
        time.sleep(0.1)
    return front.asgi, lambda: front.worker.settle(timeout=60), front.close


def obey(settle: Callable[[], bool]) -> None:
    """A child's side of the protocol: `settle` waits for background work, `stop` (or the parent gone) ends."""
    for line in sys.stdin:
        if line.strip() == "settle":
            print("settled" if settle() else "failed: background work did not finish in 60 s", flush=True)
        elif line.strip() == "stop":
            return


def child(which: str, *, tmp: Path, slack_url: str, database_url: str = "") -> int:
    """Serve the fake Web API, drbot or the bare app until told to stop. The fake has a process of its own, so
    the CPU it spends answering drbot's `chat.postEphemeral`s (Slack's, in production) is not charged to drbot."""
    if which == "fake":
        from tests.doubles.fake_slack import FakeSlack

        # Slack's Web API runs on Slack's machines, not beside drbot: at a lower priority, the fake's CPU (it
        # answers drbot's posts) does not delay the acks being measured, as it would not in production.
        os.nice(10)

        with FakeSlack(token=TOKEN) as fake:
            print(f"ready {fake.base_url}", flush=True)
            obey(lambda: True)
        return 0

    import uvicorn

    from tests.slack_harness import free_port

    if which == "drbot":
        asgi, settle, close = drbot_app(tmp, slack_url, database_url)
    else:
        asgi, settle, close = bare_asgi(bare_bolt(slack_url)), (lambda: True), (lambda: None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{which}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not server.started:
            print("failed: uvicorn did not start", flush=True)
            return 1
        print(f"ready {port}", flush=True)
        obey(settle)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        close()
    return 0


@dataclass
class Served:
    """One app in its child process, driven over its stdin/stdout by one-line commands."""

    name: str
    proc: subprocess.Popen[str]
    address: str  # what the child said when ready: a port, or the fake's base URL

    @property
    def port(self) -> int:
        return int(self.address)

    @classmethod
    def start(cls, name: str, *, tmp: Path, slack_url: str = "", script: Path | None = None,
              args: tuple[str, ...] = ()) -> Served:
        """`script --serve NAME --tmp TMP --slack-url URL ARGS…` in a clean environment (this script by
        default)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["DRBOT_SANDBOX_SPEED"] = "100000"
        script = script or Path(__file__).resolve()
        proc = subprocess.Popen([sys.executable, str(script), "--serve", name, "--tmp", str(tmp),
                                 "--slack-url", slack_url, *args],
                                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        served = cls(name=name, proc=proc, address="")
        try:
            served.address = served.expect("ready").split()[1]
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return served

    def expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            raise RuntimeError(f"{self.name} server: expected {word!r}, got {line.strip()!r} "
                               f"(exit {self.proc.poll()}); its error is above")
        return line

    def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def settle(self) -> None:
        self.tell("settle")
        self.expect("settled")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.tell("stop")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------- the load


def request_body(kind: str) -> bytes:
    from tests.doubles.slack_requests import block_action, slash_command

    if kind == "command":
        return slash_command("status", user_id=USER, channel_id=CHANNEL)
    return block_action(action_id="dr_approve", value="AR-999", user_id=USER, channel_id=CHANNEL,
                        message_ts="1700000000.000100")


def http_request(port: int, body: bytes) -> bytes:
    """One signed `POST /slack/events`, as one write: fresh signature headers, so no request is a stale replay."""
    from tests.doubles.slack_requests import sign

    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/x-www-form-urlencoded",
               "Content-Length": str(len(body)), **sign(body, SECRET)}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /slack/events HTTP/1.1\r\n{head}\r\n".encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one request on a kept-alive connection and read the whole response: (status, body)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")),
                  None)
    if length is None:
        raise RuntimeError(f"response without Content-Length: {head!r}")
    return status, await reader.readexactly(length)


async def load(port: int, *, kind: str, count: int) -> tuple[list[float], float]:
    """Client-side milliseconds of `count` signed requests from CLIENTS concurrent kept-alive connections; and
    the wall seconds. Any non-200 answer is a broken benchmark, not a slow one: it raises.

    The client is a few lines of asyncio rather than httpx on purpose: at 20 concurrent requests httpx spent more
    CPU per request than the servers did and added tails of ~200 ms even against an endpoint that does nothing
    (`AsyncClient`: p99 230 ms, 430 requests/s; this client: p99 5 ms, 4,300 requests/s), so the ratio would have
    measured the client."""
    latencies: list[float] = []
    remaining = count

    async def client() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                remaining -= 1
                request = http_request(port, request_body(kind))  # its own trigger id: Slack never repeats bytes
                started = time.perf_counter()
                status, answer = await exchange(reader, writer, request)
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise RuntimeError(f"{KINDS[kind]} answered {status}: {answer[:200]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies, time.perf_counter() - started


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) by linear interpolation between the closest ranks."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def measure(servers: dict[str, Served], requests: int = REQUESTS) -> Results:
    """Warm each (app, kind) up, then time `requests` of it in rounds that alternate which app goes first."""
    results: Results = {key: ([], 0.0) for key in ((a, k) for a in APPS for k in KINDS)}
    for kind in KINDS:
        for name in APPS:
            asyncio.run(load(servers[name].port, kind=kind, count=WARM_UP))
            servers[name].settle()
    per_round = requests // ROUNDS
    for n in range(ROUNDS):
        order = APPS if n % 2 == 0 else APPS[::-1]
        for kind in KINDS:
            for name in order:
                latencies, seconds = asyncio.run(load(servers[name].port, kind=kind, count=per_round))
                servers[name].settle()  # drbot's background work must not run while the other app is timed
                done, total = results[(name, kind)]
                results[(name, kind)] = (done + latencies, total + seconds)
    return results


def listener_means(port: int) -> dict[str, float]:
    """Mean milliseconds drbot's listeners spent before `ack()` returned, per kind, from its own `/metrics`
    (warm-up included): next to the client's figure it tells listener work from serving and contention."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    found = {(m["what"], m["kind"]): float(m["value"])
             for m in re.finditer(r'^drbot_ack_seconds_(?P<what>sum|count)\{kind="(?P<kind>[^"]+)"\} (?P<value>\S+)$',
                                  text, re.MULTILINE)}
    return {kind: found[("sum", kind)] / found[("count", kind)] * 1000
            for (what, kind) in found if what == "count" and found[("count", kind)]}


def report(results: Results, listeners: dict[str, float], *, layout: str = "sqlite") -> None:
    """The figures of one layout; PostgreSQL's labels end in " on PostgreSQL", SQLite's are the historical ones."""
    on = ON[layout]
    for kind, label in KINDS.items():
        stats = {name: percentiles(results[(name, kind)][0]) for name in APPS}
        for name in APPS:
            latencies, seconds = results[(name, kind)]
            print(f"{label} on {name}{on if name == 'drbot' else ''}: {len(latencies)} requests, "
                  f"{len(latencies) / seconds:.0f} requests/s, min {min(latencies):.1f} ms, "
                  f"max {max(latencies):.1f} ms")
        if kind in listeners:
            print(f"{label}: drbot's listener{on} took {listeners[kind]:.2f} ms on average to ack (its /metrics)")
        (d50, d99), (b50, b99) = stats["drbot"], stats["bare"]
        print(f"ack {label} p50, bare Bolt (timed next to drbot{on or ' on SQLite'}): {b50:.1f} ms; "
              f"p99: {b99:.1f} ms")
        print(f"ack {label} p50{on}: {d50:.1f} ms (goal < {ACK_GOAL_MS:.0f} ms)")
        print(f"ack {label} p99{on}: {d99:.1f} ms (goal < {ACK_GOAL_MS:.0f} ms)")
        print(f"ack {label} p50 ratio drbot/bare{on}: {d50 / b50:.2f} x (goal < {RATIO_GOAL} x)")
        print(f"ack {label} p99 ratio drbot/bare{on}: {d99 / b99:.2f} x (goal < {RATIO_GOAL} x)")


def sqlite_pass(tmp: Path, slack_url: str, bare: Served, requests: int) -> tuple[Results, dict[str, float]]:
    """drbot on SQLite (its default, one `drbot serve`) against the bare app; drbot is stopped after."""
    drbot = Served.start("drbot", tmp=tmp, slack_url=slack_url)
    try:
        results = measure({"drbot": drbot, "bare": bare}, requests)
        return results, listener_means(drbot.port)
    finally:
        drbot.stop()


def lower_priority(pid_file: Path) -> int:
    """PostgreSQL runs on a host of its own in production (a managed service, as Slack's API is Slack's): like
    the fake Web API, give its processes — the postmaster and every backend it forks later — a lower CPU priority,
    so its work does not delay the acks measured on this machine's two cores. Returns how many were lowered."""
    try:
        postmaster = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    lowered = 0
    for pid in [postmaster, *children_of(postmaster)]:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 10)
            lowered += 1
        except OSError:
            pass
    return lowered


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def postgres_pass(tmp: Path, slack_url: str, bare: Served, requests: int
                  ) -> tuple[Results, dict[str, float]] | None:
    """drbot on a throw-away PostgreSQL server against the bare app; None (with a line saying why) when this
    machine cannot run PostgreSQL. The server is stopped and its files removed whatever happens."""
    from tests.pg import PostgresUnavailable, start_server, stop_server

    started = time.perf_counter()
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        print(f"PostgreSQL figures skipped: {exc}", flush=True)
        return None
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # installed, but it would not start
        print(f"PostgreSQL figures skipped: the PostgreSQL server did not start: {str(exc).splitlines()[0]}",
              flush=True)
        return None
    try:
        url = server.create_database("drbot_bench")
        lowered = lower_priority(server.datadir / "postmaster.pid")
        print(f"PostgreSQL {server.pg_ctl.parent.parent.name} started on port {server.port} in "
              f"{time.perf_counter() - started:.1f} s ({lowered} processes at a lower CPU priority, as on a "
              f"database host of its own)", flush=True)
        where = tmp / "postgresql"
        where.mkdir()
        drbot = Served.start("drbot", tmp=where, slack_url=slack_url, args=("--database-url", url))
        try:
            results = measure({"drbot": drbot, "bare": bare}, requests)
            return results, listener_means(drbot.port)
        finally:
            drbot.stop()
    finally:
        stop_server(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", choices=(*APPS, "fake"), help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slack-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help=f"which drbot layouts to time, comma-separated (default: {','.join(LAYOUTS)})")
    parser.add_argument("--requests", type=int, default=REQUESTS,
                        help=f"timed requests per app and kind on SQLite (default: {REQUESTS})")
    parser.add_argument("--pg-requests", type=int, default=PG_REQUESTS,
                        help=f"timed requests per app and kind on PostgreSQL (default: {PG_REQUESTS})")
    args = parser.parse_args()
    if args.serve:
        return child(args.serve, tmp=args.tmp, slack_url=args.slack_url, database_url=args.database_url)
    layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    if not layouts or set(layouts) - set(LAYOUTS):
        parser.error(f"--layouts takes some of {', '.join(LAYOUTS)}")
    requests = {"sqlite": args.requests, "postgresql": args.pg_requests}
    if min(requests[layout] for layout in layouts) < ROUNDS:
        parser.error(f"at least {ROUNDS} requests (one per round)")

    print(f"{CLIENTS} concurrent clients; "
          + ", ".join(f"{requests[layout]} timed requests per app and kind with drbot on "
                      f"{'PostgreSQL' if layout == 'postgresql' else 'SQLite'}" for layout in layouts)
          + f", in {ROUNDS} alternating rounds after {WARM_UP} untimed; client-side time to the HTTP response "
          "(the ack)", flush=True)
    with tempfile.TemporaryDirectory(prefix="drbot-bench-ack-") as tmp:
        children: list[Served] = []
        try:
            children.append(Served.start("fake", tmp=Path(tmp)))
            slack_url = children[0].address
            bare = Served.start("bare", tmp=Path(tmp), slack_url=slack_url)
            children.append(bare)
            for layout in layouts:
                started = time.perf_counter()
                if layout == "sqlite":
                    report(*sqlite_pass(Path(tmp), slack_url, bare, requests[layout]), layout=layout)
                else:
                    found = postgres_pass(Path(tmp), slack_url, bare, requests[layout])
                    if found is None:
                        continue
                    report(*found, layout=layout)
                print(f"(drbot{ON[layout] or ' on SQLite'}: timed in {time.perf_counter() - started:.0f} s)",
                      flush=True)
        finally:
            for served in reversed(children):
                served.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
