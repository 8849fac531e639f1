"""The Slack surface end to end over real HTTP: signed requests into the served app, a fake Slack Web API out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.slack.blocks import validate_message
from integrations.sandbox.database import create_count
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import event_callback, retry_headers
from tests.slack_harness import ALICE, BOB, CAROL, CHANNEL, DAVE, MALLORY, ServedDrbot, slack_config

pytestmark = pytest.mark.slow


def ephemerals(fake: FakeSlack, user: str) -> list[str]:
    return [str(c.params.get("text", "")) for c in fake.calls("chat.postEphemeral") if c.params.get("user") == user]


def request_id(fake: FakeSlack, action_id: str = "dr_approve") -> str:
    """The value of the newest button with this action id among the messages the bot posted or updated."""
    found = ""
    for call in fake.calls("chat.postMessage") + fake.calls("chat.update"):
        blocks = call.params.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        for block in blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    found = str(element.get("value"))
    assert found, f"no {action_id} button was posted"
    return found


def every_payload_is_valid(fake: FakeSlack) -> None:
    for call in fake.calls("chat.postMessage") + fake.calls("chat.update") + fake.calls("chat.postEphemeral"):
        blocks = call.params.get("blocks")
        if blocks:
            validate_message(json.loads(blocks) if isinstance(blocks, str) else blocks)


def test_pitr_story_in_a_thread(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    started = time.perf_counter()
    response = bot.command("restore database prod 10:00Z", user=ALICE)
    assert response.status_code == 200 and time.perf_counter() - started < 3.0
    bot.settle()
    parent = fake.calls("chat.postMessage")[0]
    assert parent.params["channel"] == CHANNEL and "thread_ts" not in parent.params
    thread_ts = fake.wait_for("chat.postMessage", where=lambda c: c.params.get("thread_ts") is not None)
    assert thread_ts.params["thread_ts"]
    rid = request_id(fake)

    assert bot.click("dr_approve", rid, user=ALICE).status_code == 200
    bot.settle()
    assert any("two-person rule" in t for t in ephemerals(fake, ALICE))
    assert bot.click("dr_approve", rid, user=MALLORY).status_code == 200
    bot.settle()
    assert any("not an approver" in t for t in ephemerals(fake, MALLORY))

    assert bot.click("dr_approve", rid, user=BOB).status_code == 200
    bot.settle()
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded"
    assert create_count(bot.engine.store, target="rag-engine-prod-pitr-r1") == 1
    card = bot.engine.store.load_state(kind="slack.card", key="R-1")
    assert card is not None
    updates = [c for c in fake.calls("chat.update") if c.params.get("ts") == card["ts"]]
    assert len(updates) >= 5, "the run card is updated in place as the run moves"

    bot.command("timeline md", user=BOB)
    bot.settle()
    done = fake.wait_for("files.completeUploadExternal")
    assert done.params.get("channel_id") == CHANNEL
    assert done.params.get("thread_ts") == parent_ts(bot)
    assert "RTO" in str(done.params.get("initial_comment"))
    every_payload_is_valid(fake)


def parent_ts(bot: ServedDrbot) -> str:
    incident = bot.engine.store.get_incident("INC-1")
    assert incident is not None
    return str(incident.external["slack"]["ts"])


def test_bad_signature_and_stale_timestamp_are_refused(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    from tests.doubles.slack_requests import slash_command

    body = slash_command("incident open forged", user_id=ALICE, channel_id=CHANNEL)
    assert bot.post_signed(body, secret="not-the-secret").status_code == 401
    assert bot.post_signed(body, timestamp=int(time.time()) - 301).status_code == 401
    bot.settle()
    assert bot.engine.store.list_incidents() == []
    assert fake.calls("chat.postMessage") == []


def test_parse_errors_are_ephemeral_and_change_nothing(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    response = bot.command("restore databse prod 10:00Z", user=ALICE)
    assert response.status_code == 200
    # the ack is mrkdwn: `<env>` is sent escaped, which Slack shows as <env> (raw, Slack would read it as a link)
    assert "databse" in response.text and "/dr restore database &lt;env&gt; &lt;time&gt;" in response.text
    assert bot.engine.store.list_incidents() == []


def test_slack_retries_and_repeated_events_run_nothing_twice(serve: Callable[..., ServedDrbot],
                                                             fake: FakeSlack) -> None:
    bot = serve()
    from tests.doubles.slack_requests import slash_command

    body = slash_command("incident open api down sev1 prod", user_id=ALICE, channel_id=CHANNEL)
    assert bot.post_signed(body).status_code == 200
    assert bot.post_signed(body, extra=retry_headers(1)).status_code == 200
    bot.settle()
    assert [i.id for i in bot.engine.store.list_incidents()] == ["INC-1"]
    mention = event_callback({"type": "app_mention", "user": ALICE, "text": "<@U0BOT> help", "channel": CHANNEL,
                              "ts": "1700000000.000200"}, event_id="Ev0001")
    headers = {"Content-Type": "application/json"}
    for _ in range(3):
        assert bot.post_signed(mention, extra=headers).status_code == 200
    bot.settle()
    hints = [c for c in fake.calls("chat.postMessage") if "/dr help" in str(c.params.get("text"))]
    assert len(hints) == 1


def test_concurrent_approvals_each_count_once(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve(config=slack_config(required=2))
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    rid = request_id(fake)
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def click(user: str) -> None:
        barrier.wait()
        codes.append(bot.click("dr_approve", rid, user=user).status_code)

    threads = [threading.Thread(target=click, args=(u,)) for u in (BOB, CAROL, BOB, CAROL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bot.settle()
    assert codes == [200, 200, 200, 200]
    assert sorted(v.actor for v in bot.engine.store.votes(request_id=rid)) == [BOB, CAROL]
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded"


def test_group_member_approves_and_late_clicks_are_explained(serve: Callable[..., ServedDrbot],
                                                             fake: FakeSlack) -> None:
    bot = serve()
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    rid = request_id(fake)
    bot.click("dr_approve", rid, user=DAVE)  # DAVE is in S0SRE, resolved at click time
    bot.settle()
    assert fake.calls("usergroups.users.list")
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded"
    bot.click("dr_approve", rid, user=CAROL)
    bot.settle()
    assert any("granted" in t or "no longer" in t or "already" in t for t in ephemerals(fake, CAROL))


def test_checklist_ticks_are_timestamped_events(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    bot.command('incident open "search is down" sev1 prod', user=ALICE)
    bot.settle()
    from tests.doubles.slack_requests import checkbox_action

    body = checkbox_action(action_id="dr_tick:immediate", values=["INC-1:immediate.ack-page"], user_id=BOB,
                           channel_id=CHANNEL, message_ts=parent_ts(bot))
    assert bot.post_signed(body).status_code == 200
    bot.settle()
    item = next(i for i in bot.engine.store.checklist(incident_id="INC-1") if i.item_id == "immediate.ack-page")
    assert item.done_by == BOB and item.done_at is not None
    checklist = bot.engine.store.load_state(kind="slack.card", key="INC-1:checklist")
    assert checklist is not None
    assert any(c.params.get("ts") == checklist["ts"] for c in fake.calls("chat.update"))


def test_health_and_metrics(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    assert bot.http.get("/healthz").json() == {"ok": True}
    bot.command("incident open db slow sev2 prod", user=ALICE)
    bot.settle()
    text = bot.http.get("/metrics").text
    assert 'drbot_rto_elapsed_seconds{incident="INC-1",environment="prod"}' in text
    assert 'drbot_ack_seconds_count{kind="command"} 1' in text
    assert "drbot_approvals_pending 0" in text


def test_restart_mid_run_keeps_updating_the_same_messages(tmp_path: Path, fake: FakeSlack) -> None:
    first = ServedDrbot(tmp_path, fake_base_url=fake.base_url)
    try:
        first.command("failover dns prod", user=ALICE)
        first.settle()
        card = first.engine.store.load_state(kind="slack.card", key="R-1")
        assert card is not None
        rid = request_id(fake)
    finally:
        first.close()
    second = ServedDrbot(tmp_path, fake_base_url=fake.base_url)
    try:
        second.click("dr_approve", rid, user=BOB)
        second.settle()
        run = second.engine.store.get_run("R-1")
        assert run is not None and run.status.value == "succeeded"
        after = [c for c in fake.calls("chat.update") if c.params.get("ts") == card["ts"]]
        assert after, "the card posted before the restart is the one updated after it"
        parents = [c for c in fake.calls("chat.postMessage") if "thread_ts" not in c.params]
        assert len(parents) == 1, "one incident, one thread"
    finally:
        second.close()


def test_several_open_incidents_ask_which_one(serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    bot.command("incident open api down sev1 prod", user=ALICE)
    bot.settle()
    bot.command("incident open search down sev2 prod", user=ALICE)
    bot.settle()
    response = bot.command("incident detected -10m", user=BOB)
    assert response.status_code == 200
    bot.settle()
    asked = [c for c in fake.calls("chat.postEphemeral") if c.params.get("user") == BOB][-1]
    assert "Several incidents are open" in str(asked.params["text"])
    blocks_sent = asked.params["blocks"]
    blocks_sent = json.loads(blocks_sent) if isinstance(blocks_sent, str) else blocks_sent
    buttons = [e for b in blocks_sent if b["type"] == "actions" for e in b["elements"]]
    assert sorted(e["value"] for e in buttons) == ["INC-1", "INC-2"]
    assert all(i.detected_at == i.opened_at for i in bot.engine.store.list_incidents()), "nothing changed yet"
    chosen = next(e for e in buttons if e["value"] == "INC-2")
    bot.click(chosen["action_id"], "INC-2", user=BOB)
    bot.settle()
    first, second = bot.engine.store.list_incidents()
    assert first.detected_at == first.opened_at
    assert (second.opened_at - second.detected_at).total_seconds() >= 599


def test_group_membership_is_asked_anew_at_every_click() -> None:
    from bot.slack.identity import GroupResolver

    class Client:
        members = ["U1", "U2"]
        calls = 0

        def usergroups_users_list(self, *, usergroup: str) -> dict[str, Any]:
            Client.calls += 1
            return {"ok": True, "users": list(Client.members)}

    resolver = GroupResolver(Client())
    assert resolver.groups_for(["S0SRE", "U0BOB"]) == {"S0SRE": ("U1", "U2")}
    Client.members = ["U1"]  # U2 leaves the group: it counts at once, not a minute later
    assert resolver.groups_for(["S0SRE"]) == {"S0SRE": ("U1",)}
    assert Client.calls == 2


def test_rto_budget_warnings_reach_the_thread_and_the_header(serve: Callable[..., ServedDrbot],
                                                             fake: FakeSlack) -> None:
    from tests.doubles.clock import FakeClock

    clock = FakeClock()
    bot = serve(clock=clock)
    bot.command("incident open checkout down sev1 prod", user=ALICE)
    bot.settle()
    ts = parent_ts(bot)
    header_updates = len([c for c in fake.calls("chat.update") if c.params.get("ts") == ts])
    clock.advance(46 * 60)  # critical tier: 46 minutes of a 1 h RTO target
    bot.engine.tick()
    bot.settle()
    warnings = [c for c in fake.calls("chat.postMessage")
                if c.params.get("thread_ts") == ts and "RTO budget" in str(c.params.get("text"))]
    assert [("50%" in str(w.params["text"]), "75%" in str(w.params["text"])) for w in warnings] == [
        (True, False), (False, True)]
    assert len([c for c in fake.calls("chat.update") if c.params.get("ts") == ts]) > header_updates
    every_payload_is_valid(fake)


def test_a_refusal_reaches_the_user_where_the_bot_is_not_a_member(serve: Callable[..., ServedDrbot],
                                                                   fake: FakeSlack) -> None:
    """chat.postEphemeral needs the bot in the channel; the command's response_url does not."""
    from tests.doubles.slack_requests import slash_command

    bot = serve()
    fake.fail_next("chat.postEphemeral", error="not_in_channel", status=200)
    hook = fake.response_url("commands")
    body = slash_command("status", user_id=ALICE, channel_id="C0PRIVATE", response_url=hook)
    assert bot.post_signed(body).status_code == 200
    bot.settle()
    [sent] = fake.calls("response_url")
    assert sent.json("response_type") == "ephemeral" and sent.json("replace_original") is False
    assert "incident" in str(sent.json("text")).lower()


def test_other_ephemeral_errors_are_not_hidden_behind_the_response_url(serve: Callable[..., ServedDrbot],
                                                                        fake: FakeSlack) -> None:
    from tests.doubles.slack_requests import slash_command

    bot = serve()
    fake.fail_next("chat.postEphemeral", error="invalid_blocks", status=200)
    body = slash_command("status", user_id=ALICE, channel_id=CHANNEL, response_url=fake.response_url("commands"))
    assert bot.post_signed(body).status_code == 200
    bot.settle()
    assert fake.calls("response_url") == []


def unposted(bot: ServedDrbot, incident_id: str = "INC-1") -> list[int]:
    """Events that should have a thread message but have none yet."""
    from bot.slack import blocks as slack_blocks

    done = bot.engine.store.list_state(kind="slack.posted", prefix=f"{incident_id}:")
    return [e.seq or 0 for e in bot.engine.store.events_for(incident_id=incident_id)
            if slack_blocks.event_message(e) is not None and f"{incident_id}:{e.seq}" not in done]


def test_thread_posts_that_never_reached_slack_are_made_by_the_catch_up(serve: Callable[..., ServedDrbot],
                                                                        fake: FakeSlack) -> None:
    bot = serve(config=slack_config(required=0))
    bot.command("incident open documents table corrupted sev1 prod", user=ALICE)
    bot.settle()
    assert unposted(bot) == []
    # the process stops with events still queued for Slack: here, they are stored but never reach the notifier
    notifier = bot.surface.notifier
    bot.engine.notifiers.remove(notifier)
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    missing = unposted(bot)
    assert missing, "the run's outcome should be waiting to be posted"
    posts_before = len(fake.calls("chat.postMessage"))
    bot.engine.notifiers.append(notifier)
    assert notifier.catch_up() == len(missing)
    assert notifier.drain(timeout=30)
    assert unposted(bot) == []
    assert len(fake.calls("chat.postMessage")) > posts_before
    assert notifier.catch_up() == 0, "nothing is posted twice"
    texts = [json.dumps(c.params.get("blocks")) for c in fake.calls("chat.postMessage")]
    assert sum("Run succeeded" in t for t in texts) == 1
