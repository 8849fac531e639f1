"""Replicas (issue 11, first part): every `drbot serve` has a replica id, and on SQLite a second `drbot serve` on
the same database refuses to start with a sentence that says high availability needs PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.replica import SingleServer, replica_id, serving_alone
from tests.doubles.fake_slack import FakeSlack
from tests.slack_harness import SECRET, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


def serve(tmp_path: Path, fake: FakeSlack, *, replica: str) -> tuple[subprocess.Popen[str], httpx.Client]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
    env.update({"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "DRBOT_REPLICA_ID": replica,
                "SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.base_url,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)


def healthz(client: httpx.Client) -> dict[str, object] | None:
    try:
        response = client.get("/healthz")
    except httpx.TransportError:
        return None
    return dict(response.json()) if response.status_code == 200 else None


@pytest.mark.slow
def test_a_second_serve_on_one_sqlite_file_refuses_and_a_crash_leaves_no_stale_lock(tmp_path: Path) -> None:
    with FakeSlack(token="xoxb-test-token") as fake:
        first, client = serve(tmp_path, fake, replica="alpha")
        try:
            wait_until(lambda: healthz(client) is not None, timeout=60)
            assert healthz(client) == {"ok": True, "replica": "alpha", "role": "leader", "leader": "alpha"}
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"ok": True, "ready": True, "replica": "alpha", "role": "leader", "leader": "alpha"}

            second, other = serve(tmp_path, fake, replica="beta")
            _, err = second.communicate(timeout=60)
            other.close()
            assert second.returncode == 2, err
            assert "Another drbot serve is already running" in err and "replica alpha" in err, err
            assert "need PostgreSQL" in err and "DRBOT_DATABASE_URL=postgresql+psycopg://" in err, err
            assert "Traceback" not in err
            assert healthz(client) == {"ok": True, "replica": "alpha", "role": "leader", "leader": "alpha"}, \
                "the first one was not disturbed"

            first.send_signal(signal.SIGKILL)  # dies holding the lock: the OS releases it
            first.wait(timeout=30)
        finally:
            client.close()
            if first.poll() is None:
                first.kill()
        third, client = serve(tmp_path, fake, replica="gamma")
        try:
            wait_until(lambda: healthz(client) is not None, timeout=60)
            assert healthz(client) == {"ok": True, "replica": "gamma", "role": "leader", "leader": "gamma"}
        finally:
            client.close()
            third.send_signal(signal.SIGTERM)
            try:
                third.wait(timeout=60)
            except subprocess.TimeoutExpired:
                third.kill()


def test_the_guard_is_per_database_and_postgres_needs_none(tmp_path: Path) -> None:
    one = Settings(drbot_database_url=f"sqlite:///{tmp_path / 'a.db'}")
    other = Settings(drbot_database_url=f"sqlite:///{tmp_path / 'b.db'}")
    with serving_alone(one, replica="r1"):
        with pytest.raises(SingleServer, match="replica r1"), serving_alone(one, replica="r2"):
            pass
        with serving_alone(other, replica="r3"):  # another file: no conflict
            pass
    with serving_alone(one, replica="r4"):  # released on leaving
        pass
    postgres = Settings(drbot_database_url="postgresql+psycopg://drbot@127.0.0.1:1/drbot")
    with serving_alone(postgres, replica="p1"), serving_alone(postgres, replica="p2"):
        pass


def test_the_replica_id_defaults_to_host_and_pid() -> None:
    assert replica_id(Settings(drbot_replica_id="eu-west-1a")) == "eu-west-1a"
    assert replica_id(Settings()).endswith(f"-{os.getpid()}")
