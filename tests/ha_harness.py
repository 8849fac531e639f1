"""Several real `drbot serve` replicas on one PostgreSQL database, each in its own process group (its front and
its worker), so a test can kill -9, SIGSTOP or SIGTERM a whole replica as a host or a pod would go."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from runbooks.store import Store
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import block_action, sign, slash_command
from tests.slack_harness import ALICE, CHANNEL, SECRET, free_port, slack_config, wait_until

ROOT = Path(__file__).resolve().parents[1]


class Replica:
    """One `drbot serve` (front and worker) started with `start_new_session`, its stderr in `<name>.log`."""

    def __init__(self, name: str, *, database_url: str, fake: FakeSlack, tmp: Path, config: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
        environ.update({"DRBOT_DATABASE_URL": database_url, "DRBOT_REPLICA_ID": name, "DRBOT_CONFIG": str(config),
                        "DRBOT_SANDBOX_SPEED": "200", "SLACK_BOT_TOKEN": "xoxb-test-token",
                        "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.base_url, "PYTHONUNBUFFERED": "1",
                        "DRBOT_LEADER_STALE": "3",
                        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
        environ.update(env or {})
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(self.port)],
                                     cwd=tmp, env=environ, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    # ------------------------------------------------------------------------------------------- asking

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.http.get("/healthz", timeout=2)
        except httpx.TransportError:
            return None
        return dict(response.json()) if response.status_code == 200 else None

    def role(self) -> str | None:
        found = self.health()
        return str(found["role"]) if found else None

    def metrics(self) -> dict[str, float]:
        text = self.http.get("/metrics").text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                if line.startswith("drbot_") and "{" not in line}

    def post_signed(self, body: bytes) -> httpx.Response:
        headers = sign(body, SECRET)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.http.post("/slack/events", content=body, headers=headers)

    def command(self, text: str, *, user: str = ALICE) -> httpx.Response:
        return self.post_signed(slash_command(text, user_id=user, channel_id=CHANNEL,
                                              trigger_id=f"trigger-{time.monotonic_ns()}"))

    def click(self, action_id: str, value: str, *, user: str) -> httpx.Response:
        return self.post_signed(block_action(action_id=action_id, value=value, user_id=user, channel_id=CHANNEL,
                                             message_ts="1700000000.000100"))

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------------------------------- ending

    def signal(self, sig: signal.Signals) -> None:
        """To the whole replica: its front and its worker (as a host's death or a container freeze would)."""
        os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind
        self.http.close()
        self._log.close()
        return self.proc.returncode


@contextmanager
def replicas(names: list[str], *, database_url: str, fake: FakeSlack, tmp: Path, config: dict[str, Any] | None = None,
             env: dict[str, str] | None = None) -> Iterator[list[Replica]]:
    path = tmp / "drbot.yml"
    path.write_text(yaml.safe_dump(config or slack_config()))
    started: list[Replica] = []
    try:
        for name in names:
            started.append(Replica(name, database_url=database_url, fake=fake, tmp=tmp, config=path, env=env))
        yield started
    except BaseException:
        for replica in started:  # what each replica said, in the failure's report
            print(f"----- log of replica {replica.name} (last 12,000 characters) -----\n{replica.log()[-12000:]}",
                  file=sys.stderr)
        print(f"----- DBOS's workflows and steps -----\n{dbos_tables(database_url)}", file=sys.stderr)
        for replica in started:
            print(f"----- stacks of replica {replica.name} -----\n{stacks(replica.proc.pid)}", file=sys.stderr)
        raise
    finally:
        for replica in started:
            replica.stop()


def stacks(pid: int) -> str:
    """Every thread's stack in the process group `pid` leads (its front and worker), when py-spy is installed."""
    import shutil

    if shutil.which("py-spy") is None:
        return "(py-spy is not installed)"
    found = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    out = []
    for member in found:
        dump = subprocess.run(["py-spy", "dump", "--pid", member], capture_output=True, text=True, timeout=30)
        out.append(f"== pid {member}\n{dump.stdout[-15000:]}{dump.stderr[-500:]}")
    return "\n".join(out)


def dbos_tables(database_url: str) -> str:
    """DBOS's view of the workflows (status, owner, attempts) and of their recorded steps, for a failure's report."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    lines = []
    try:
        with engine.connect() as conn:
            for row in conn.execute(sa.text(
                    "SELECT * FROM dbos.workflow_status ORDER BY created_at")).mappings():
                lines.append("W " + " ".join(f"{k}={str(v)[:60]}" for k, v in row.items()
                                             if k not in ("inputs", "output", "request", "authenticated_roles")))
            for row in conn.execute(sa.text(
                    "SELECT application_name, pid, state, wait_event_type, wait_event, left(query, 160) AS query "
                    "FROM pg_stat_activity WHERE datname = current_database()")).mappings():
                lines.append("A " + " ".join(f"{k}={v}" for k, v in row.items()))
            for row in conn.execute(sa.text(
                    "SELECT workflow_uuid, function_id, function_name, left(coalesce(error, ''), 120) AS error, "
                    "child_workflow_id FROM dbos.operation_outputs ORDER BY workflow_uuid, function_id")).mappings():
                lines.append("S " + " ".join(f"{k}={v}" for k, v in row.items()))
    except Exception as exc:  # the report must not hide the failure it reports
        lines.append(f"(could not read DBOS's tables: {exc})")
    finally:
        engine.dispose()
    return "\n".join(lines)


def leader_of(group: list[Replica], timeout: float = 60) -> Replica:
    """The one replica that says it leads, once every other live one agrees it does."""
    found: list[Replica] = []

    def agreed() -> bool:
        views = {r.name: r.health() for r in group if r.proc.poll() is None}
        leaders = [r for r in group if (views.get(r.name) or {}).get("role") == "leader"]
        if len(leaders) != 1 or any(v is None or v.get("leader") != leaders[0].name for v in views.values()):
            return False
        found[:] = leaders
        return True

    wait_until(agreed, timeout=timeout)
    return found[0]


def thread_posts(fake: FakeSlack) -> list[str]:
    """The text of every message posted into a thread (not the headers or cards themselves)."""
    return [str(c.params.get("text") or "") + json.dumps(c.params.get("blocks") or "")
            for c in fake.calls("chat.postMessage") if c.params.get("thread_ts")]


def run_status(store: Store, run_id: str) -> str | None:
    run = store.get_run(run_id)
    return run.status.value if run is not None else None
