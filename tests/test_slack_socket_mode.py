"""Socket Mode: the same app reached over Slack's WebSocket (a local fake), acking envelopes within 3 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.config import Settings, build_config
from bot.slack.app import build_app
from bot.slack.socket_mode import open_socket_mode
from bot.wiring import build_engine, start_engine
from runbooks.engine import PollPolicy
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.fake_socket_mode import FakeSocketMode
from tests.slack_harness import ALICE, BOB, CHANNEL, slack_config

pytestmark = pytest.mark.slow


def command_payload(text: str, *, user: str) -> dict[str, str]:
    return {"token": "x", "team_id": "T0TEAM", "team_domain": "drbot-test", "channel_id": CHANNEL,
            "channel_name": "incident", "user_id": user, "user_name": user.lower(), "command": "/dr", "text": text,
            "api_app_id": "A0DRBOT", "is_enterprise_install": "false", "response_url": "https://hooks.invalid/x",
            "trigger_id": "1.2.3"}


def test_commands_and_clicks_over_socket_mode(tmp_path: Path) -> None:
    with FakeSlack(token="xoxb-test-token") as fake, FakeSocketMode() as socket:
        fake.app_token, fake.socket_url = "xapp-test-token", socket.url
        settings = Settings(drbot_database_url=f"sqlite:///{tmp_path / 'drbot.db'}", drbot_sandbox_speed=1e5,
                            slack_bot_token="xoxb-test-token", slack_app_token="xapp-test-token",
                            slack_api_url=fake.base_url)
        engine = build_engine(settings=settings, config=build_config(slack_config(), source="test"),
                              poll=PollPolicy(initial=0.005, factor=1.5, maximum=0.02))
        bolt, surface = build_app(engine, settings, default_channel=CHANNEL)
        start_engine(engine, settings=settings, budget_ticker=False)
        handler = open_socket_mode(bolt, app_token="xapp-test-token")
        try:
            socket.wait_connected()
            assert fake.calls("apps.connections.open")
            started = time.monotonic()
            socket.send_envelope(envelope_id="env-1", kind="slash_commands",
                                 payload=command_payload("failover dns prod", user=ALICE))
            ack = socket.wait_ack("env-1")
            assert time.monotonic() - started < 3.0
            assert "On it" in str(ack.get("payload", {}).get("text", ""))
            assert surface.wait_idle() and engine.wait_settled(timeout=30)
            request = engine.store.pending_requests()[0]
            socket.send_envelope(envelope_id="env-2", kind="interactive", payload={
                "type": "block_actions", "user": {"id": BOB, "username": "bob", "name": "bob", "team_id": "T0TEAM"},
                "api_app_id": "A0DRBOT", "token": "x", "trigger_id": "1.2.4", "team": {"id": "T0TEAM"},
                "container": {"type": "message", "message_ts": "1.1", "channel_id": CHANNEL},
                "channel": {"id": CHANNEL, "name": "incident"}, "response_url": "https://hooks.invalid/y",
                "actions": [{"action_id": "dr_approve", "block_id": "b", "value": request.id, "type": "button",
                             "action_ts": "1.5", "text": {"type": "plain_text", "text": "Approve"}}]})
            socket.wait_ack("env-2")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                run = engine.store.get_run("R-1")
                if run is not None and run.status.value == "succeeded":
                    break
                time.sleep(0.05)
            run = engine.store.get_run("R-1")
            assert run is not None and run.status.value == "succeeded"
            assert [v.actor for v in engine.store.votes(request_id=request.id)] == [BOB]
        finally:
            handler.close()
            surface.close()
            engine.stop()
