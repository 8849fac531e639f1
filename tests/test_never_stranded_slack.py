"""Nothing strands, over Slack: signed requests into drbot served over HTTP (one process, and the two-process
layout `drbot serve` uses), a fake Slack Web API out, faults injected with the sandbox's `failures:`.

Each of the five injection points (plan, pre-flight, start, poll, verify) ends visible: before any change the run
ends failed, in the thread and privately to the requester; after a change the run pauses with Retry / Skip / Abort.
The same request right after is never refused as "already running", and no traceback reaches Slack. Then the whole
PITR story with a drbot.yml shaped like DESIGN §6 — no `settings:` block — and `/dr cancel` / `/dr retry`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from bot.config import Settings
from bot.serve import build_front
from runbooks.store import Store
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import block_action, sign, slash_command
from tests.slack_harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    DAVE,
    MALLORY,
    SECRET,
    ServedDrbot,
    free_port,
    slack_config,
    wait_until,
)

pytestmark = pytest.mark.slow

ERROR_ID = re.compile(r"[Ee]rror [0-9a-f]{8}")

# Five injections on five resources of prod, so one served drbot covers every point.
CRASHES = {
    "database": {"restore_pitr": {"at": "plan", "crash": True, "message": "boom at plan"}},
    "dns": {"switch": {"at": "preflight", "crash": True, "message": "boom at preflight"}},
    "kubernetes": {"velero_restore": {"at": "start", "crash": True, "message": "boom at start"}},
    "vectors": {"restore_snapshot": {"at": "poll", "crash": True, "message": "boom at poll"}},
    "objects": {"undelete": {"at": "verify", "crash": True, "message": "boom at verify"}},
}


@dataclass
class Served:
    """drbot behind real HTTP, whichever layout; `store` reads the same database the engine writes."""

    fake: FakeSlack
    http: httpx.Client
    store: Store
    settle: Callable[[], None]

    def post(self, body: bytes) -> httpx.Response:
        headers = sign(body, SECRET)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = self.http.post("/slack/events", content=body, headers=headers)
        assert response.status_code == 200, response.text
        return response

    def command(self, text: str, *, user: str) -> None:
        self.post(slash_command(text, user_id=user, channel_id=CHANNEL))
        self.settle()

    def click(self, action_id: str, value: str, *, user: str) -> None:
        self.post(block_action(action_id=action_id, value=value, user_id=user, channel_id=CHANNEL,
                               message_ts="1700000000.000100"))
        self.settle()

    # ---- what reached Slack

    def sent_texts(self) -> list[str]:
        return [json.dumps(c.params) for c in self.fake.calls()]

    def thread_posts(self) -> list[str]:
        return [json.dumps(c.params.get("blocks")) + str(c.params.get("text", ""))
                for c in self.fake.calls("chat.postMessage") if c.params.get("thread_ts")]

    def ephemerals(self, user: str) -> list[str]:
        return [str(c.params.get("text", "")) for c in self.fake.calls("chat.postEphemeral")
                if c.params.get("user") == user]

    def buttons(self, action_id: str) -> list[str]:
        """Values of every button with this action id, oldest first, on messages as they are now."""
        found: list[str] = []
        for message in self.fake.messages():
            for block in message.get("blocks") or []:
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if element.get("action_id") == action_id and element["value"] not in found:
                        found.append(str(element["value"]))
        return found

    def run(self, run_id: str) -> str:
        """The run's status, or "" while it does not exist yet (a job may still be on its way to the worker)."""
        run = self.store.get_run(run_id)
        return run.status.value if run is not None else ""


def _config(base: dict[str, Any] | None = None, *, crashes: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(base or slack_config())
    if crashes:
        for resource, failures in CRASHES.items():
            data["environments"]["prod"][resource]["failures"] = copy.deepcopy(failures)
    return data


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-test-token") as server:
        server.groups = {"S0SRE": [DAVE]}
        yield server


def _one_process(tmp_path: Path, fake: FakeSlack, config: dict[str, Any],
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    bot = ServedDrbot(tmp_path, fake_base_url=fake.base_url, config=config)

    def settle() -> None:
        bot.settle()

    try:
        yield Served(fake=fake, http=bot.http, store=bot.engine.store, settle=settle)
    finally:
        bot.close()


def _two_processes(tmp_path: Path, fake: FakeSlack, config: dict[str, Any],
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    path = tmp_path / "drbot.yml"
    path.write_text(yaml.safe_dump(config))
    env = {"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "DRBOT_CONFIG": str(path),
           "DRBOT_SANDBOX_SPEED": "100000", "SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": fake.base_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the worker is a spawned process: it reads them like `drbot serve`
    front = build_front(settings=Settings(), config_path=path, exit_on_loss=False)
    server = uvicorn.Server(uvicorn.Config(front.asgi, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=10)

    def settle() -> None:
        assert front.worker.settle(timeout=60)

    try:
        yield Served(fake=fake, http=client, store=front.surface.engine.store, settle=settle)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
        front.close()


LAYOUTS = {"one-process": _one_process, "two-processes": _two_processes}


@pytest.fixture(params=list(LAYOUTS))
def serve(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeSlack,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], Served]]:
    started: list[Iterator[Served]] = []

    def start(config: dict[str, Any]) -> Served:
        made = LAYOUTS[request.param](tmp_path, fake, config, monkeypatch)
        started.append(made)
        return next(made)

    yield start
    for made in started:
        next(made, None)


def _no_traceback(bot: Served) -> None:
    for text in bot.sent_texts():
        assert "Traceback" not in text and 'File \\"' not in text, text


def test_every_injection_point_ends_visible_and_blocks_nothing(serve: Callable[[dict[str, Any]], Served]) -> None:
    bot = serve(_config(crashes=True))
    # Before any change: plan (database PITR) and pre-flight (DNS switch) end the run failed, and the same
    # request right after goes ahead (each crash is injected once).
    for command, first, again in [("restore database prod 10:00Z", "R-1", "R-2"), ("failover dns prod", "R-3", "R-4")]:
        approvals = len(bot.buttons("dr_approve"))
        bot.command(command, user=ALICE)
        wait_until(lambda r=first: bot.run(r) == "failed", timeout=30)  # type: ignore[misc]
        stopped = [p for p in bot.thread_posts() if f"{first} (" in p and "stopped" in p]
        assert stopped and ERROR_ID.search(stopped[-1]), bot.thread_posts()[-3:]
        assert any(f"{first} (" in t and "Nothing was changed" in t for t in bot.ephemerals(ALICE)), \
            "the requester is told privately too"
        bot.command(command, user=ALICE)
        wait_until(lambda n=approvals: len(bot.buttons("dr_approve")) > n, timeout=30)  # type: ignore[misc]
        assert bot.run(again) == "awaiting_approval", "the failed run did not block the request"
        assert not any("already" in t for t in bot.ephemerals(ALICE))

    # After approval: start (Velero), poll (Qdrant), verify (S3) fail the step and pause the run; a second person
    # retries and the run finishes.
    for command, run_id in [("restore k8s prod", "R-5"), ("restore vectors prod", "R-6"),
                            ("undelete objects prod docs/", "R-7")]:
        approvals = len(bot.buttons("dr_approve"))
        bot.command(command, user=ALICE)
        wait_until(lambda n=approvals: len(bot.buttons("dr_approve")) > n, timeout=30)  # type: ignore[misc]
        assert bot.run(run_id) == "awaiting_approval"
        bot.click("dr_approve", bot.buttons("dr_approve")[-1], user=BOB)
        wait_until(lambda r=run_id: bot.run(r) == "paused", timeout=30)  # type: ignore[misc]
        wait_until(lambda: bool(bot.buttons("dr_retry")), timeout=30)
        failed = [s for s in bot.store.steps_for(run_id=run_id) if s.status.value == "failed"]
        assert failed and "SandboxCrash" in failed[-1].error and ERROR_ID.search(failed[-1].error), failed
        assert bot.buttons("dr_skip") and bot.buttons("dr_abort"), "Retry, Skip and Abort are offered"
        bot.click("dr_retry", bot.buttons("dr_retry")[-1], user=CAROL)
        wait_until(lambda r=run_id: bot.run(r) == "succeeded", timeout=60)  # type: ignore[misc]
        wait_until(lambda: not bot.buttons("dr_retry"), timeout=30)  # the decided question loses its buttons
    _no_traceback(bot)


DESIGN_SKETCH = """
tiers: {critical: {rpo: 15m, rto: 1h}, standard: {rpo: 1h, rto: 4h}}
slack: {incident_channel: C0INCIDENT}
pagerduty:
  services: {PSVC1: {channel: C0INCIDENT, environment: prod, runbooks: [database-pitr]}}
environments:
  prod:
    tier: critical
    approvals: {required: 1, approvers: [U0BOB, S0SRE], expire_after: 30m}   # Slack user/group IDs
    database: {provider: aws-rds, instance: rag-engine-prod, region: us-west-2,
               replica: {instance: rag-engine-prod-replica, region: us-east-1}}
    dns: {provider: route53, zone_id: Z123, record: api.rag-engine.com, type: A, dr_target: 203.0.113.10}
    kubernetes: {provider: kubernetes, context: prod, namespace: rag-engine, deployment: rag-engine-api,
                 velero_namespace: velero}
    vectors: {provider: qdrant, url: http://qdrant:6333, collection: documents}
    objects: {provider: s3, bucket: rag-engine-documents}
"""
"""DESIGN.md §6's sketch as written (no `settings:` block); the tests switch the providers to the sandbox."""


def design_sketch() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DESIGN_SKETCH)
    for resource in data["environments"]["prod"].values():
        if isinstance(resource, dict) and "provider" in resource:
            resource["provider"] = "sandbox"
    assert "settings" not in data["environments"]["prod"]
    return data


def test_the_pitr_story_on_the_design_sketch_without_settings(serve: Callable[[dict[str, Any]], Served]) -> None:
    bot = serve(design_sketch())
    bot.command("run backup-verification prod", user=ALICE)
    refused = [t for t in bot.ephemerals(ALICE) if "backup-verification" in t]
    assert refused and "needs environments.prod.settings.integrity_query" in refused[-1], bot.ephemerals(ALICE)
    assert "SELECT count(*) FROM documents" in refused[-1]
    assert bot.store.get_run("R-1") is None, "a refused request creates no run"

    bot.command("restore database prod 10:00Z", user=ALICE)
    wait_until(lambda: bool(bot.buttons("dr_approve")), timeout=30)
    plan = [p for p in bot.fake.messages() if "Check the restored data" in json.dumps(p.get("blocks"))]
    assert plan and "environments.prod.settings.integrity_query" in json.dumps(plan[-1]["blocks"])
    request = bot.buttons("dr_approve")[-1]
    bot.click("dr_approve", request, user=ALICE)
    assert any("two-person rule" in t for t in bot.ephemerals(ALICE))
    bot.click("dr_approve", request, user=MALLORY)
    assert any("not an approver" in t for t in bot.ephemerals(MALLORY))
    assert bot.run("R-1") == "awaiting_approval"
    bot.click("dr_approve", request, user=BOB)
    wait_until(lambda: bot.run("R-1") == "succeeded", timeout=60)
    steps = {s.step_id: s.status.value for s in bot.store.steps_for(run_id="R-1")}
    assert steps["integrity"] == "skipped" and steps["cutover"] == "succeeded", steps

    bot.command("timeline md", user=BOB)
    done = bot.fake.wait_for("files.completeUploadExternal")
    assert done.params.get("channel_id") == CHANNEL
    content = "".join(u.content.decode() for u in bot.fake.uploads.values() if u.content)
    assert "NOT DONE: Check the restored data (R-1) did not run" in content, content[:2000]
    _no_traceback(bot)


def test_cancel_and_retry_by_text_over_slack(serve: Callable[[dict[str, Any]], Served]) -> None:
    bot = serve(_config())
    bot.command("restore database prod 2h ago", user=ALICE)
    wait_until(lambda: bool(bot.buttons("dr_approve")), timeout=30)
    bot.command("cancel R-1", user=MALLORY)
    assert any("Only U0ALICE" in t for t in bot.ephemerals(MALLORY)), bot.ephemerals(MALLORY)
    assert bot.run("R-1") == "awaiting_approval"
    bot.command("cancel R-1", user=ALICE)
    wait_until(lambda: bot.run("R-1") == "cancelled", timeout=30)
    bot.command("retry R-1", user=BOB)
    wait_until(lambda: bot.store.get_run("R-2") is not None and bot.run("R-2") == "awaiting_approval", timeout=30)
    first, second = bot.store.get_run("R-1"), bot.store.get_run("R-2")
    assert first is not None and second is not None and second.params == first.params
    wait_until(lambda: len(bot.buttons("dr_approve")) >= 1, timeout=30)
    bot.click("dr_approve", bot.buttons("dr_approve")[-1], user=BOB)
    assert any("two-person rule" in t for t in bot.ephemerals(BOB)), "whoever retried cannot approve it"
    bot.click("dr_approve", bot.buttons("dr_approve")[-1], user=CAROL)
    wait_until(lambda: bot.run("R-2") == "succeeded", timeout=60)
