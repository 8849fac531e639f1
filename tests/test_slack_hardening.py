"""Hostile text and Slack's ambiguous failures, through drbot served for real and a fake Slack that fails as Slack does.

Escaping: whatever a person typed (an incident title, a resolution note, a command and its parameters) reaches
Slack's mrkdwn and the messages' notification `text` with `&`, `<`, `>` escaped, so it cannot ping the channel,
mention someone or disguise a link; drbot's own mention of the actor still works. A property test runs every
renderer over arbitrary strings.

Exactly once: Slack can store a post and still answer 500, or drop the connection; drbot looks for the message by
its metadata before it posts again, and a post that comes too late to matter is folded into the run card.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import blocks
from runbooks.models import (
    Approval,
    ApprovalRequest,
    ChecklistItem,
    Decision,
    Event,
    Incident,
    Plan,
    PlannedStep,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
    Tier,
)
from runbooks.replies import Reply
from tests.doubles.fake_slack import TOKEN, Call, FakeSlack
from tests.slack_harness import ALICE, BOB, ServedDrbot

TITLE = "<!channel> <@U0BOB> <https://evil.example|click me> & co"
RAW = ("<!channel>", "<!here>", "<@U0BOB>", "<https://evil.example", "click me>")


# --------------------------------------------------------------------------------------------- what Slack renders


def mrkdwn_texts(value: Any) -> list[str]:
    """Every mrkdwn text object's text, anywhere in blocks (sections, fields, context elements)."""
    found: list[str] = []
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn":
            found.append(str(value.get("text", "")))
        for inner in value.values():
            found += mrkdwn_texts(inner)
    elif isinstance(value, list):
        for inner in value:
            found += mrkdwn_texts(inner)
    return found


def rendered(call: Call) -> list[str]:
    """What Slack renders as mrkdwn in a call: the notification `text`, a file's comment, and the blocks."""
    texts = [str(call.json(name)) for name in ("text", "initial_comment") if call.params.get(name)]
    return texts + mrkdwn_texts(call.json("blocks"))


def raw_pieces(texts: list[str]) -> list[tuple[str, str]]:
    return [(piece, text) for text in texts for piece in RAW if piece in text]


# --------------------------------------------------------------------------------------------- item 7: escaping


def test_a_typed_channel_ping_mention_and_link_reach_the_thread_escaped(serve: Callable[..., ServedDrbot],
                                                                          fake: FakeSlack) -> None:
    bot = serve()
    bot.command(f"incident open {TITLE} sev2 staging", user=ALICE)
    bot.settle()
    bot.command("undelete objects staging docs/<!here>/ 2h ago", user=ALICE)
    bot.settle()
    bot.command("incident resolve <!here> fixed by <@U0BOB>, see <https://evil.example|click me>", user=ALICE)
    bot.settle()
    incident = bot.engine.store.get_incident("INC-1")
    assert incident is not None and incident.title == TITLE and incident.resolved_at is not None
    posted = fake.calls("chat.postMessage") + fake.calls("chat.update")
    assert len(posted) > 5
    texts = [t for call in posted for t in rendered(call)]
    assert raw_pieces(texts) == []
    header = fake.calls("chat.postMessage")[0]
    assert header.params["text"] == "INC-1: &lt;!channel&gt; &lt;@U0BOB&gt; &lt;https://evil.example|click me&gt; " \
                                    "&amp; co"
    assert any("&lt;!here&gt; fixed by &lt;@U0BOB&gt;" in t for t in texts), "the note is shown, escaped"
    assert any("docs/&lt;!here&gt;/" in t for t in texts), "the typed prefix is shown, escaped"
    # drbot's own mention of the person who acted is kept: the id came from Slack, not from what was typed
    assert any("<@U0ALICE>" in t for t in texts)
    assert any(t.startswith("`") and "<@U0ALICE>: " in t for t in texts), "event lines name the actor"


def test_replies_to_the_person_who_typed_it_are_escaped_too(serve: Callable[..., ServedDrbot],
                                                           fake: FakeSlack) -> None:
    bot = serve()
    ack = bot.command(f"incident open {TITLE} sev2 staging", user=ALICE)
    bot.settle()
    texts = [t for call in fake.calls("chat.postEphemeral") for t in rendered(call)]
    texts.append(ack.text)  # the ack's body: JSON or the bare text, as Bolt answers
    assert raw_pieces(texts) == []


HOSTILE = st.sampled_from([TITLE, "<!here>", "https://evil.example/|x> <!channel>", "<!subteam^S0SRE>",
                           "<#C0GENERAL>", "U0MALLORY1 approved",
                           "a & b < c > d", "`<!channel>`", "*<@U0BOB>*", "&lt;&amp;", "<U0ALICE>", "U0ALICE"])
USER_TEXT = st.one_of(HOSTILE, st.text(max_size=80),
                      st.text(alphabet="<>&|@!^#U0BWAL1 :/.`*_~\n-", max_size=80))
NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
ACTOR = "U0ALICE"
ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def _every_render(typed: str) -> list[str]:
    """Every renderer's mrkdwn and notification text, with `typed` in every place a person can type into."""
    step = PlannedStep(id="restore", title=typed, action="objects.undelete", provider="sandbox", guarded=True,
                       params={"prefix": typed, "at": {"nested": typed}}, skipped=typed,
                       details={"restorable_window": {"earliest": typed, "latest": typed}, "note": typed})
    plan = Plan(runbook="undelete-objects", runbook_version=1, environment="staging", steps=(step,))
    incident = Incident(id="INC-1", number=1, title=typed, severity="sev2", environment="staging", tier="standard",
                        opened_by=ACTOR, opened_at=NOW, detected_at=NOW,
                        external={"pagerduty": {"id": "P1", "number": 7, "url": "https://x.pagerduty.com/P1",
                                                "status": typed, "urgency": typed, "priority": typed,
                                                "assignees": [typed]}})
    tier = Tier(name="standard", rpo=timedelta(hours=1), rto=timedelta(hours=4))
    texts: list[str] = [blocks.header_text(incident), blocks.checklist_text("INC-1"), blocks.reply_text(typed)]
    renders: list[list[dict[str, Any]]] = [
        blocks.incident_header(incident=incident, tier=tier, now=NOW, pagerduty_url=typed),
        blocks.reply_blocks(Reply(text=typed)),
        blocks.choose_incident_blocks(incidents=[incident], command_text=typed),
        blocks.export_summary(record_summary=typed, filename=typed),
    ]
    item = ChecklistItem(incident_id="INC-1", item_id="x", phase="immediate", text=typed, due_at=NOW,
                         done_at=NOW, done_by=ACTOR)
    from runbooks.catalog import load_catalog

    renders.append(blocks.checklist_blocks(incident_id="INC-1", checklist=load_catalog().checklist, items=[item],
                                           now=NOW))
    for status in (RunStatus.AWAITING_APPROVAL, RunStatus.PAUSED, RunStatus.FAILED):
        run = Run(id="R-1", incident_id="INC-1", runbook="undelete-objects", environment="staging", command=typed,
                  requested_by=ACTOR, requested_at=NOW, status=status, plan=plan, plan_hash="ab" * 32,
                  reason=typed)
        request = ApprovalRequest(id="AR-1", run_id="R-1", gate="plan", plan_hash="ab" * 32, requested_by=ACTOR,
                                  requested_at=NOW, expires_at=NOW + timedelta(minutes=30), required=2,
                                  approvers=("U0BOB",))
        vote = Approval(request_id="AR-1", plan_hash="ab" * 32, actor="U0BOB", decision=Decision.APPROVE, at=NOW)
        state = StepRun(run_id="R-1", step_id="restore", attempt=2, title=typed, status=StepStatus.FAILED,
                        started_at=NOW, finished_at=NOW, error=typed)
        renders.append(blocks.run_card(run=run, steps=[state], requests=[request], votes=[vote], now=NOW,
                                       confirm_on_approve=True))
        texts.append(blocks.card_text(run))
    kinds = ["run.planned", "approval.requested", "run.paused", "run.preflight_failed", "rto.warning",
             "pagerduty.triggered", "pagerduty.sent", "run.succeeded", "incident.resolved", "pagerduty.annotated"]
    for kind in kinds:
        event = Event(seq=3, incident_id="INC-1", run_id="R-1", at=NOW, actor=ACTOR, kind=kind, text=typed,
                      data={"plan": plan.model_dump(mode="json"), "plan_hash": "ab" * 32, "problems": [typed],
                            "request_id": "AR-1", "step_id": typed, "percent": 50, "note": typed})
        message = blocks.event_message(event, people={"U0BOB"})
        if message is not None:
            blocks.validate_message(message)
            renders.append(message)
        texts.append(blocks.event_line(event, people={"U0BOB"}))
    return texts + [t for message in renders for t in mrkdwn_texts(message)]


@settings(max_examples=150, deadline=None)
@given(typed=USER_TEXT)
def test_no_user_string_makes_a_renderer_emit_an_unescaped_angle_bracket(typed: str) -> None:
    for text in _every_render(typed):
        # drbot's own constructs: the actor's and a known approver's mention, and PagerDuty's link
        shown = re.sub(r"<@U0(ALICE|BOB)>", "", text)
        shown = re.sub(r"<https?://[^<>|\s]*\|(?:PagerDuty incident|#7)>", "", shown)
        assert "<" not in shown and ">" not in shown, text
        assert not ENTITY.search(shown), f"a bare & in {text!r}"


def test_a_link_takes_only_web_urls_and_cannot_be_closed_early() -> None:
    from bot.slack.blocks_kit import link

    assert link("https://x.example/a|b>c&d", "PD <1>") == "<https://x.example/a%7Cb%3Ec&amp;d|PD &lt;1&gt;>"
    assert link("https://x.example/a b\n", "PD") == "<https://x.example/a%20b%0A|PD>"
    assert link("javascript:alert(1)", "PD") == "PD"


# --------------------------------------------------------------------------------------------- the fake's failures


def test_fake_slack_can_store_then_fail_and_lists_metadata_only_when_asked(fake: FakeSlack) -> None:
    client = WebClient(token=TOKEN, base_url=fake.base_url, retry_handlers=[])
    parent = client.chat_postMessage(channel="C0INC", text="parent")["ts"]
    meta = {"event_type": "drbot_post", "event_payload": {"key": "INC-1:4"}}
    fake.fail_next("chat.postMessage", status=500, error="internal_error", stored=True)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INC", thread_ts=parent, text="once", metadata=meta)
    assert err.value.response.status_code == 500
    fake.drop_next("chat.postMessage")
    with pytest.raises(Exception) as dropped:
        client.chat_postMessage(channel="C0INC", thread_ts=parent, text="twice", metadata=meta)
    assert isinstance(dropped.value, OSError)
    assert [m["text"] for m in fake.messages(thread_ts=parent)] == ["once", "twice"], "both were stored"
    plain = client.conversations_replies(channel="C0INC", ts=parent)
    assert [m["text"] for m in plain["messages"]] == ["parent", "once", "twice"]
    assert all("metadata" not in m for m in plain["messages"])
    full = client.conversations_replies(channel="C0INC", ts=parent, include_all_metadata=True, limit=2)
    assert full["messages"][1]["metadata"] == meta and full["has_more"]
    rest = client.conversations_replies(channel="C0INC", ts=parent, include_all_metadata=True,
                                        cursor=full["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["twice"]
    history = client.conversations_history(channel="C0INC", include_all_metadata=True)
    assert [m["text"] for m in history["messages"]] == ["parent"], "replies stay in their thread"
    fake.fail_for("*", seconds=60)
    with pytest.raises(SlackApiError):
        client.conversations_history(channel="C0INC")
    fake.fail_for("*", seconds=0)
    assert client.conversations_history(channel="C0INC")["ok"]


# --------------------------------------------------------------------------------------------- item 8: exactly once


def drbot_keys(fake: FakeSlack) -> list[str]:
    """The metadata key of every message Slack holds, in posting order."""
    return [str(m["metadata"]["event_payload"]["key"]) for m in fake.messages()]


def thread_posts(fake: FakeSlack, bot: ServedDrbot) -> list[dict[str, Any]]:
    incident = bot.engine.store.get_incident("INC-1")
    assert incident is not None
    return fake.messages(thread_ts=str(incident.external["slack"]["ts"]))


@pytest.mark.parametrize("failure", ["500 after storing", "connection dropped after storing"])
def test_posts_slack_stored_but_did_not_confirm_exist_exactly_once(serve: Callable[..., ServedDrbot],
                                                                  fake: FakeSlack, failure: str) -> None:
    bot = serve()
    slept: list[float] = []
    bot.surface.notifier.sleep = slept.append  # no real waits
    if failure.startswith("500"):
        fake.fail_next("chat.postMessage", status=500, error="internal_error", stored=True, times=12)
    else:
        fake.drop_next("chat.postMessage", times=12)
    bot.command("failover dns staging", user=ALICE)
    bot.settle()
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.status is RunStatus.SUCCEEDED
    keys = drbot_keys(fake)
    assert len(keys) == len(set(keys)), f"posted twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    assert {"header:INC-1", "checklist:INC-1", "card:R-1"} <= set(keys)
    unconfirmed = [c for c in fake.calls("chat.postMessage") if c.status != 200]
    assert len(unconfirmed) >= 5, "the header, checklist, card and thread posts each failed once"
    assert fake.calls("conversations.history") and fake.calls("conversations.replies")
    assert all(str(c.params.get("include_all_metadata")).lower() in ("1", "true")
               for c in fake.calls("conversations.replies") + fake.calls("conversations.history"))
    texts = [json.dumps(m.get("blocks")) for m in thread_posts(fake, bot)]
    assert sum("Run succeeded" in t for t in texts) == 1
    assert sum(":clipboard: *Plan" in t for t in texts) == 1
    card = bot.engine.store.load_state(kind="slack.card", key="R-1")
    assert card is not None and "succeeded" in fake.message(card["ts"])["text"]
    posted = bot.engine.store.list_state(kind="slack.posted", prefix="INC-1:")
    held = {m["ts"] for m in fake.messages()}
    assert posted and all(v["ts"] in held for v in posted.values()), "each recorded ts is the message Slack holds"
    assert bot.surface.notifier.catch_up() == 0


def test_a_plan_post_held_up_by_an_outage_is_folded_into_the_card(serve: Callable[..., ServedDrbot],
                                                                  fake: FakeSlack) -> None:
    """The 25 s of 500s that made a plan post arrive after "finished successfully", shortened: Slack fails every
    call while the run is planned and asks for approval, recovers, the run is approved and succeeds, and the
    catch-up finds the plan and the approval request unposted: both are folded (the card shows them)."""
    bot = serve()
    slept: list[float] = []
    bot.surface.notifier.sleep = slept.append
    bot.command("incident open dns is down sev1 prod", user=ALICE)
    bot.settle()
    fake.fail_for("*", seconds=120)  # the outage: every Web API call answers 500, and nothing is stored
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    notifier = bot.surface.notifier
    planned = [e for e in bot.engine.store.events_for(incident_id="INC-1") if e.kind in ("run.planned",
                                                                                        "approval.requested")]
    assert len(planned) == 2
    assert all(bot.engine.store.load_state(kind="slack.posted", key=f"INC-1:{e.seq}") is None for e in planned)
    assert sum(slept) >= 7, "the notifier backed off (1 + 2 + 4 s per post), without waiting for real"
    fake.fail_for("*", seconds=0)  # Slack is back
    [request] = bot.engine.store.requests_for(run_id="R-1")
    bot.click("dr_approve", request.id, user=BOB)
    bot.settle()
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert notifier.catch_up() >= 2
    assert notifier.drain(timeout=30)
    texts = [json.dumps(m.get("blocks")) for m in thread_posts(fake, bot)]
    succeeded = [n for n, t in enumerate(texts) if "Run succeeded" in t]
    assert len(succeeded) == 1
    assert not any(":clipboard: *Plan" in t or "Approval needed" in t for t in texts), "folded, not posted late"
    for event in planned:
        assert bot.engine.store.load_state(kind="slack.posted", key=f"INC-1:{event.seq}") == {"folded": True}
    keys = drbot_keys(fake)
    assert keys.count("card:R-1") == 1
    card = bot.engine.store.load_state(kind="slack.card", key="R-1")
    assert card is not None
    shown = json.dumps(fake.message(card["ts"])["blocks"])
    assert "*Plan `" in shown and "succeeded" in shown, "the card holds the plan and the outcome"
    assert notifier.catch_up() == 0


def test_a_pending_approval_request_is_posted_late_rather_than_folded(serve: Callable[..., ServedDrbot],
                                                                      fake: FakeSlack) -> None:
    bot = serve()
    bot.surface.notifier.sleep = lambda seconds: None
    bot.command("incident open api is down sev1 prod", user=ALICE)
    bot.settle()
    fake.fail_for("*", seconds=120)
    bot.command("failover dns prod", user=ALICE)
    bot.settle()
    fake.fail_for("*", seconds=0)
    notifier = bot.surface.notifier
    assert notifier.catch_up() >= 2
    assert notifier.drain(timeout=30)
    texts = [json.dumps(m.get("blocks")) for m in thread_posts(fake, bot)]
    assert sum("Approval needed" in t for t in texts) == 1, "the approvers still have to be asked"
    assert drbot_keys(fake).count("card:R-1") == 1


def test_a_refused_look_up_still_posts(serve: Callable[..., ServedDrbot], fake: FakeSlack,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """Without `channels:history` Slack refuses the look-up: drbot posts anyway (at least once) and says why."""
    bot = serve()
    bot.surface.notifier.sleep = lambda seconds: None
    bot.command("incident open cache is cold sev3 staging", user=ALICE)
    bot.settle()
    fake.fail_next("chat.postMessage", status=500, error="internal_error")  # not stored
    fake.fail_next("conversations.replies", status=200, error="missing_scope")
    bot.command("incident resolve warmed up", user=ALICE)
    bot.settle()
    texts = [json.dumps(m.get("blocks")) for m in thread_posts(fake, bot)]
    assert sum("warmed up" in t for t in texts) == 1
    assert "missing_scope" in caplog.text
