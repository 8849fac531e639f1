"""drbot served for real on 127.0.0.1 (uvicorn + Starlette + Bolt), talking to a local fake Slack Web API."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bot.config import SANDBOX_CONFIG, Settings, build_config
from bot.http import build_asgi
from bot.slack.app import build_app
from bot.wiring import build_engine, pagerduty_webhook, start_engine
from runbooks.engine import Engine, PollPolicy
from runbooks.ports import Clock
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import block_action, sign, slash_command

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0INCIDENT"
ALICE, BOB, CAROL, MALLORY, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0MALLORY", "U0DAVE"


def slack_config(*, required: int = 1) -> dict[str, Any]:
    data = copy.deepcopy(SANDBOX_CONFIG)
    data["slack"] = {"incident_channel": CHANNEL}
    data["environments"]["prod"]["approvals"] = {"required": required, "approvers": [BOB, CAROL, "S0SRE"],
                                                 "expire_after": "30m"}
    return data


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `check` until it holds; an AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout:g} s")


def newest_button(fake: FakeSlack, action_id: str) -> str:
    """The value of the newest button with this action id among the messages the bot posted or updated."""
    found = ""
    for call in fake.calls("chat.postMessage") + fake.calls("chat.update"):
        raw = call.params.get("blocks") or []
        for block in json.loads(raw) if isinstance(raw, str) else raw:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    found = str(element["value"])
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedDrbot:
    def __init__(self, tmp: Path, *, fake_base_url: str, config: dict[str, Any] | None = None,
                 clock: Clock | None = None, pagerduty_secrets: str | None = None,
                 database_url: str | None = None, extra_settings: dict[str, Any] | None = None) -> None:
        self.settings = Settings(drbot_database_url=database_url or f"sqlite:///{tmp / 'drbot.db'}",
                                 drbot_sandbox_speed=1e5, slack_bot_token="xoxb-test-token",
                                 slack_signing_secret=SECRET, slack_api_url=fake_base_url,
                                 pagerduty_webhook_secrets=pagerduty_secrets, **(extra_settings or {}))
        cfg = build_config(config or slack_config(), source="test")
        self.engine: Engine = build_engine(settings=self.settings, config=cfg,
                                           poll=PollPolicy(initial=0.005, factor=1.5, maximum=0.02), clock=clock)
        self.bolt, self.surface = build_app(self.engine, self.settings, default_channel=CHANNEL)
        start_engine(self.engine, settings=self.settings, budget_ticker=False)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(build_asgi(engine=self.engine, bolt_app=self.bolt,
                                                               surface=self.surface,
                                                               pagerduty=pagerduty_webhook(self.engine,
                                                                                           self.settings)),
                                                    host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def post_signed(self, body: bytes, *, timestamp: int | None = None, extra: dict[str, str] | None = None,
                    secret: str = SECRET) -> httpx.Response:
        headers = sign(body, secret, timestamp=timestamp)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers.update(extra or {})
        return self.http.post("/slack/events", content=body, headers=headers)

    def command(self, text: str, *, user: str, channel: str = CHANNEL) -> httpx.Response:
        return self.post_signed(slash_command(text, user_id=user, channel_id=channel))

    def click(self, action_id: str, value: str, *, user: str, channel: str = CHANNEL) -> httpx.Response:
        return self.post_signed(block_action(action_id=action_id, value=value, user_id=user, channel_id=channel,
                                             message_ts="1700000000.000100"))

    def settle(self, timeout: float = 60) -> None:
        assert self.surface.wait_idle(timeout=timeout)
        assert self.engine.wait_settled(timeout=timeout)
        assert self.surface.wait_idle(timeout=timeout)
        assert self.surface.notifier.drain(timeout=timeout)

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.surface.close()
        self.engine.stop()
