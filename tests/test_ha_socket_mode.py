"""Two `drbot serve` replicas in Socket Mode (issue 11): each opens its own connection to Slack, Slack sends each
envelope to one of them, and whichever replica's front acknowledges a command, the leader runs it, once.

Real processes on one fresh PostgreSQL database, one fake Slack Web API and one fake Socket Mode server. Which
connection belongs to which replica is read from the jobs table (each job names the front that queued it): the
first command goes to connection 0, the second to connection 1, so one of them lands on the standby's front and
the other on the leader's, whichever won the election.

Both replicas start at once on an empty database (each creates the tables, in turn). Stopping waits for each
front's worker process too, so none outlives the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.doubles.fake_slack import FakeSlack
from tests.doubles.fake_socket_mode import FakeSocketMode
from tests.doubles.slack_requests import slash_command
from tests.slack_harness import ALICE, CHANNEL, free_port, slack_config, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN, APP_TOKEN = "xoxb-test-token", "xapp-1-A0DRBOT-test-token"
REPLICAS = ("alpha", "beta")


class Replica:
    """One `drbot serve` subprocess in Socket Mode, its /healthz client and its log file."""

    def __init__(self, name: str, *, tmp: Path, fake: FakeSlack, database_url: str, config: Path) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
        env.update({"DRBOT_DATABASE_URL": database_url, "DRBOT_REPLICA_ID": name, "DRBOT_CONFIG": str(config),
                    "DRBOT_SANDBOX_SPEED": "100000", "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
                    "SLACK_API_URL": fake.base_url, "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], cwd=tmp,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.http.get("/healthz")
        except httpx.TransportError:
            return None
        return dict(response.json()) if response.status_code == 200 else None

    def log(self) -> str:
        self._log.flush()
        return f"--- {self.name} (exit code {self.proc.poll()}) ---\n{self.log_path.read_text()[-4000:]}"

    def workers(self) -> set[int]:
        """The front's child processes (its drbot worker, multiprocessing's resource tracker): from /proc while
        the front lives, and the worker's pid from the log line the front prints once it serves."""
        pids: set[int] = set()
        with suppress(OSError, ValueError):
            pids |= {int(pid) for pid in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                     .read_text().split()}
        self._log.flush()
        pids |= {int(pid) for pid in re.findall(r"\(worker process (\d+)\)", self.log_path.read_text())}
        return pids

    def close(self) -> None:
        self.http.close()
        self._log.close()


def stop(replicas: list[Replica], *, grace: float = 30.0) -> None:
    """SIGTERM to every front at once, as a supervisor would; SIGKILL to a front, or to a front's worker, still
    running after `grace` seconds. The workers are waited for as well: a front that dies without stopping its
    worker (as `drbot serve` did when uvicorn re-raised the SIGTERM it had handled) leaves it to stop by itself."""
    deadline = time.monotonic() + grace
    children: set[int] = set()
    for replica in replicas:
        if replica.proc.poll() is None:
            children |= replica.workers()
            replica.proc.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            replica.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait(timeout=10)
        children |= replica.workers()
    while (alive := {pid for pid in children if running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie does not; one re-parented to this process is reaped here)."""
    with suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


@contextmanager
def replicas(tmp: Path, fake: FakeSlack, database_url: str) -> Iterator[dict[str, Replica]]:
    config = tmp / "drbot.yml"
    config.write_text(yaml.safe_dump(slack_config()))
    started: dict[str, Replica] = {}
    try:
        for name in REPLICAS:
            started[name] = Replica(name, tmp=tmp, fake=fake, database_url=database_url, config=config)
        yield started
    finally:
        try:
            stop(list(started.values()))
        finally:
            for replica in started.values():
                replica.close()


def command(text: str) -> dict[str, str]:
    """A slash command's payload as Socket Mode carries it: the fields of the HTTP form body, as a JSON object."""
    return dict(parse_qsl(slash_command(text, user_id=ALICE, channel_id=CHANNEL).decode()))


def jobs(database_url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, kind, front, state, epoch FROM drbot_jobs ORDER BY id")).all()
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def leader_row(database_url: str) -> dict[str, Any]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT replica, epoch FROM drbot_leader")).one()._mapping)
    finally:
        engine.dispose()


def headers(fake: FakeSlack, title: str) -> list[Any]:
    """The incident threads' first messages posted for `title` (a thread's replies carry thread_ts)."""
    return [call for call in fake.calls("chat.postMessage")
            if title in str(call.params.get("text", "")) and not call.params.get("thread_ts")]


def test_two_socket_mode_replicas_each_ack_their_envelopes_and_the_leader_runs_each_once(
        tmp_path: Path, fresh_pg_url: str) -> None:
    began = time.monotonic()
    with FakeSlack(token=BOT_TOKEN) as fake, FakeSocketMode() as socket:
        fake.app_token, fake.socket_url = APP_TOKEN, socket.url
        with replicas(tmp_path, fake, fresh_pg_url) as served:
            run(fake, socket, served, fresh_pg_url, began=began)
    print(f"wall time {time.monotonic() - began:.1f} s")


def run(fake: FakeSlack, socket: FakeSocketMode, served: dict[str, Replica], database_url: str, *,
        began: float) -> None:
    def logs() -> str:
        return "\n".join(replica.log() for replica in served.values())

    try:
        socket.wait_connected(count=2, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    assert len(fake.calls("apps.connections.open")) == 2
    assert socket.open_connections() == [0, 1]

    def agreed() -> bool:
        seen = [replica.health() for replica in served.values()]
        return all(h is not None and h["leader"] in REPLICAS for h in seen) and \
            len({h["leader"] for h in seen if h is not None}) == 1
    wait_until(agreed, timeout=30)
    health = {name: replica.health() for name, replica in served.items()}
    leader = next(name for name, h in health.items() if h is not None and h["role"] == "leader")
    standby = next(name for name in REPLICAS if name != leader)
    assert health[standby] == {"ok": True, "replica": standby, "role": "standby", "leader": leader}, health
    assert health[leader] == {"ok": True, "replica": leader, "role": "leader", "leader": leader}, health
    print(f"connected and elected in {time.monotonic() - began:.1f} s; leader {leader}")

    titles = ("Checkout returns 500", "Search is slow")
    owner: dict[int, str] = {}
    for connection, title in enumerate(titles):
        envelope = f"env-{connection}"
        sent = time.monotonic()
        assert socket.send_envelope(envelope_id=envelope, kind="slash_commands",
                                    payload=command(f"incident open {title} sev2 staging"),
                                    connection=connection) == connection
        ack = socket.wait_ack(envelope, timeout=3)
        assert time.monotonic() - sent < 3.0
        assert ack.connection == connection, ack
        assert ack.get("payload", {}).get("text") == f"On it: `/dr incident open {title} sev2 staging`", ack
        queued = jobs(database_url)
        assert len(queued) == connection + 1, queued
        owner[connection] = queued[-1]["front"]  # the replica whose front took it: that connection's owner
    assert sorted(owner.values()) == sorted(REPLICAS), f"each connection belongs to one replica: {owner}"

    wait_until(lambda: all(headers(fake, title) for title in titles)
               and all(job["state"] == "done" for job in jobs(database_url)), timeout=20)
    time.sleep(1.0)  # a second run, on either replica, would post again within this
    for title in titles:
        assert len(headers(fake, title)) == 1, [c.params for c in headers(fake, title)]
    assert sorted(str(headers(fake, title)[0].params["text"]).split(":")[0] for title in titles) == \
        ["INC-1", "INC-2"], "one incident per command"
    done = jobs(database_url)
    elected = leader_row(database_url)
    assert elected["replica"] == leader
    assert [(job["kind"], job["state"], job["epoch"]) for job in done] == \
        [("SlashCommand", "done", elected["epoch"])] * 2, done
    assert {job["front"] for job in done} == {leader, standby}
    assert all(replica.proc.poll() is None for replica in served.values()), logs()
    print(f"connections: {owner}; {len(fake.calls('chat.postMessage'))} chat.postMessage calls")
