"""`drbot serve` over HTTP as it runs in production: the front (this process, uvicorn on 127.0.0.1) acknowledges,
a real worker process runs the engine; signed Slack and PagerDuty requests in, a fake Slack Web API out."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from bot.config import Settings
from bot.serve import Front, build_front
from tests.doubles import pagerduty_webhooks as pdw
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import block_action, sign, slash_command
from tests.slack_harness import ALICE, BOB, CHANNEL, SECRET, free_port, newest_button, slack_config, wait_until

pytestmark = pytest.mark.slow

PD_SECRET = "whsec-split-0123"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Front, httpx.Client, FakeSlack]]:
    config = slack_config()
    config["pagerduty"] = {"services": {"PSVC1": {"channel": "C0PAGED", "environment": "prod"}}}
    path = tmp_path / "drbot.yml"
    path.write_text(yaml.safe_dump(config))
    with FakeSlack(token="xoxb-test-token") as fake:
        env = {"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "DRBOT_CONFIG": str(path),
               "DRBOT_SANDBOX_SPEED": "100000", "SLACK_BOT_TOKEN": "xoxb-test-token",
               "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.base_url,
               "PAGERDUTY_WEBHOOK_SECRETS": PD_SECRET}
        for name, value in env.items():
            monkeypatch.setenv(name, value)  # the worker is a spawned process: it reads them like `drbot serve`
        front = build_front(settings=Settings(), config_path=path, exit_on_loss=False)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(front.asgi, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            yield front, client, fake
        finally:
            client.close()
            server.should_exit = True
            thread.join(timeout=10)
            front.close()


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    headers = sign(body, SECRET)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return client.post("/slack/events", content=body, headers=headers)


def test_the_worker_runs_what_the_front_acknowledged(served: tuple[Front, httpx.Client, FakeSlack]) -> None:
    front, client, fake = served
    assert front.worker.alive() and front.worker.process.pid != os.getpid()
    response = post(client, slash_command("restore database prod 10:00Z", user_id=ALICE, channel_id=CHANNEL))
    assert response.status_code == 200 and "On it" in response.text
    wait_until(lambda: bool(newest_button(fake, "dr_approve")))
    request_id = newest_button(fake, "dr_approve")
    click = block_action(action_id="dr_approve", value=request_id, user_id=BOB, channel_id=CHANNEL,
                         message_ts="1700000000.000100")
    assert post(client, click).status_code == 200
    assert front.worker.settle(timeout=60)
    run = front.surface.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded"
    assert any("Run succeeded" in json.dumps(c.params.get("blocks")) for c in fake.calls("chat.postMessage"))

    # a PagerDuty webhook is stored by the front; its thread is posted by the worker
    raw, headers = pdw.signed_request(pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1SPLIT")),
                                      secrets=[PD_SECRET])
    answer = client.post("/pagerduty/webhook", content=raw, headers=headers)
    assert answer.status_code == 202 and answer.json()["status"] == "created"
    assert front.worker.settle(timeout=60)
    assert [c for c in fake.calls("chat.postMessage")
            if c.params.get("channel") == "C0PAGED" and not c.params.get("thread_ts")], "the thread was posted"
    health = client.get("/healthz").json()
    assert health == {"ok": True, "replica": health["replica"], "role": "leader", "leader": health["replica"]}
    metrics = client.get("/metrics").text
    assert 'drbot_ack_seconds_count{kind="command"} 1' in metrics and 'drbot_runs{state="succeeded"} 1' in metrics


def test_healthz_fails_when_the_worker_is_gone(served: tuple[Front, httpx.Client, FakeSlack]) -> None:
    front, client, _ = served
    front.worker.process.kill()
    front.worker.process.join(timeout=10)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "worker": "stopped", "replica": front.worker.replica}
    assert client.get("/readyz").status_code == 503, "a front without its worker takes no traffic"


def start_serve(tmp_path: Path, fake: FakeSlack) -> tuple[subprocess.Popen[str], int, httpx.Client]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
    env.update({"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "SLACK_BOT_TOKEN": "xoxb-test-token",
                "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.base_url, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    match = None
    while match is None and len(seen) < 50:
        seen.append(proc.stderr.readline())
        match = re.search(r"worker process (\d+)", seen[-1])
        assert seen[-1] or proc.poll() is None, "".join(seen)
    assert match, "".join(seen)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    wait_until(lambda: _healthy(client), timeout=60)
    return proc, int(match.group(1)), client


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_drbot_serve_stops_when_its_worker_dies_and_shuts_both_down_cleanly(tmp_path: Path) -> None:
    with FakeSlack(token="xoxb-test-token") as fake:
        proc, worker, client = start_serve(tmp_path, fake)
        try:
            os.kill(worker, signal.SIGKILL)
            assert proc.wait(timeout=30) == 3, "a front without its worker must not keep acknowledging"
        finally:
            client.close()
            if proc.poll() is None:
                proc.kill()
        proc, worker, client = start_serve(tmp_path, fake)
        try:
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down, then re-raises the signal so the exit status says how it ended
            assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
            wait_until(lambda: not _alive(worker), timeout=30)  # the worker sees its pipe close and stops
        finally:
            client.close()
            if proc.poll() is None:
                proc.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
