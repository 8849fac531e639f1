"""Approver user groups over Slack: a member may cancel like a direct approver, and membership is asked of Slack
at every click, so a removal counts at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.fake_slack import FakeSlack
from tests.slack_harness import ALICE, DAVE, MALLORY, ServedDrbot

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServedDrbot, FakeSlack]]:
    with FakeSlack(token="xoxb-test-token") as fake:
        fake.groups = {"S0SRE": [DAVE]}
        bot = ServedDrbot(tmp_path, fake_base_url=fake.base_url)
        try:
            yield bot, fake
        finally:
            bot.close()


def _ephemerals(fake: FakeSlack, user: str) -> list[str]:
    return [str(c.params.get("text", "")) for c in fake.calls("chat.postEphemeral") if c.params.get("user") == user]


def _status(bot: ServedDrbot, run_id: str) -> str:
    run = bot.engine.store.get_run(run_id)
    return run.status.value if run is not None else ""


def test_a_group_member_cancels_by_text_and_by_button(served: tuple[ServedDrbot, FakeSlack]) -> None:
    bot, fake = served
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    assert _status(bot, "R-1") == "awaiting_approval"
    bot.command("cancel R-1", user=MALLORY)
    bot.settle()
    assert any("Only U0ALICE" in t for t in _ephemerals(fake, MALLORY))
    bot.command("cancel R-1", user=DAVE)  # DAVE is an approver only through the S0SRE group
    bot.settle()
    assert _status(bot, "R-1") == "cancelled", _ephemerals(fake, DAVE)

    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    bot.click("dr_cancel", "R-2", user=DAVE)
    bot.settle()
    assert _status(bot, "R-2") == "cancelled"


def test_leaving_the_group_counts_at_once(served: tuple[ServedDrbot, FakeSlack]) -> None:
    bot, fake = served
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    request = bot.engine.store.requests_for(run_id="R-1")[0].id
    calls = len(fake.calls("usergroups.users.list"))
    fake.groups = {"S0SRE": []}  # DAVE leaves @sre a moment before clicking
    bot.click("dr_approve", request, user=DAVE)
    bot.settle()
    assert any("not an approver" in t for t in _ephemerals(fake, DAVE))
    assert _status(bot, "R-1") == "awaiting_approval"
    assert len(fake.calls("usergroups.users.list")) > calls, "membership was asked of Slack at the click"
    fake.groups = {"S0SRE": [DAVE]}  # and joining counts at the next click
    bot.click("dr_approve", request, user=DAVE)
    bot.settle()
    assert _status(bot, "R-1") == "succeeded"
