"""Drills, `/dr rto`, `/dr rpo` and RPO notices through Slack: signed requests into the served app, the fake Web API
out (issue 12, item 8 and the Slack half of items 1, 3 and 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bot.slack.blocks import validate_message
from tests.doubles.fake_slack import FakeSlack
from tests.slack_harness import ALICE, BOB, CHANNEL, ServedDrbot, slack_config

pytestmark = pytest.mark.slow


def posted_texts(fake: FakeSlack, *, thread: bool) -> list[str]:
    found = []
    for call in fake.calls("chat.postMessage"):
        if bool(call.params.get("thread_ts")) != thread:
            continue
        blocks = call.params.get("blocks") or []
        found.append(json.dumps(json.loads(blocks) if isinstance(blocks, str) else blocks) + str(call.params["text"]))
    return found


def test_a_drill_through_slack_shows_the_drill_plan_and_the_clean_up_in_its_own_thread(
        serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    assert bot.command("drill database-pitr staging time=latest", user=ALICE).status_code == 200
    bot.settle()
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.status.value == "succeeded"
    parents = [c for c in fake.calls("chat.postMessage") if not c.params.get("thread_ts")]
    assert len(parents) == 1 and parents[0].params["channel"] == CHANNEL
    assert "Drill: Restore the database to a point in time (staging)" in json.dumps(parents[0].params)
    thread = posted_texts(fake, thread=True)
    plan = next(t for t in thread if "Drill plan" in t)
    assert "DRILL \\u2014 no live resource is changed" in plan or "DRILL — no live resource is changed" in plan
    assert "rag-engine-staging-drill-r1" in plan and ":broom:" in plan
    assert any("Clean-up of R-1: everything it made is gone." in t for t in thread)
    assert any("Drill over: R-1 succeeded." in t for t in thread)
    for call in fake.calls("chat.postMessage") + fake.calls("chat.update"):
        blocks = call.params.get("blocks")
        if blocks:
            validate_message(json.loads(blocks) if isinstance(blocks, str) else blocks)

    assert bot.command("rto", user=BOB).status_code == 200
    bot.settle()
    rto = [str(c.params.get("text")) for c in fake.calls("chat.postEphemeral") if c.params.get("user") == BOB]
    assert rto and "database-pitr" in rto[-1]


def test_dr_rpo_answers_the_asker_and_a_breach_is_posted_once_to_the_incident_channel(
        serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    config: dict[str, Any] = slack_config()
    config["environments"]["staging"]["database"]["stale"] = "3h"
    bot = serve(config=config)
    assert bot.command("rpo", user=ALICE).status_code == 200
    bot.settle()
    answer = [str(c.params.get("text")) for c in fake.calls("chat.postEphemeral") if c.params.get("user") == ALICE]
    assert answer and answer[-1].startswith("RPO: 8 stores, 1 over target")
    assert "database of staging: newest recovery point 3h 05m" in answer[-1]
    assert not [t for t in posted_texts(fake, thread=False) if "RPO breach" in t], "/dr rpo only reads"

    bot.engine.rpo.scan()
    bot.engine.rpo.scan()
    bot.settle()
    breaches = [c for c in fake.calls("chat.postMessage") if "RPO breach" in str(c.params.get("text"))]
    assert len(breaches) == 1, "posted once however many scans see it"
    assert breaches[0].params["channel"] == CHANNEL and not breaches[0].params.get("thread_ts")
    assert "database of staging" in str(breaches[0].params["text"])
    assert "likely cause: backups stopped 3h 00m 00s ago" in str(breaches[0].params["text"])

    # a notifier that was down catches up from the store, and still posts it once
    before = len(fake.calls("chat.postMessage"))
    bot.surface.notifier.catch_up()
    bot.settle()
    assert len(fake.calls("chat.postMessage")) == before
