"""The Block Kit renderers: the right content and buttons, and always within Slack's limits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.slack import blocks
from runbooks.catalog import load_catalog
from runbooks.models import (
    Approval,
    ApprovalRequest,
    ChecklistItem,
    Decision,
    Event,
    Incident,
    IncidentStatus,
    Plan,
    PlannedStep,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
    Tier,
)
from runbooks.replies import BUTTON_ACTIONS, Button, Reply, button_action

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
DETECTED = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HASH = "d5a0f8efdea222beee67c2de79156657fee76bf04443835a3b5976d35420a222"
CRITICAL = Tier(name="critical", rpo=timedelta(minutes=15), rto=timedelta(hours=1))
POINTER = "… (full plan: `/dr timeline md` or `drbot export INC-1`)"


# --------------------------------------------------------------------------------------------- builders


def incident(**changes: Any) -> Incident:
    base: dict[str, Any] = dict(id="INC-1", number=1, title="Orders DB corrupted", severity="sev1", environment="prod",
                                tier="critical", opened_by="alice", opened_at=DETECTED, detected_at=DETECTED)
    return Incident(**{**base, **changes})


def plan(steps: Sequence[PlannedStep] | None = None) -> Plan:
    default = (
        PlannedStep(id="restore", title="Point-in-time restore into a new instance", action="database.restore_pitr",
                    provider="aws-rds", guarded=True,
                    params={"source": "rag-engine-prod", "target": "rag-engine-prod-pitr-r1",
                            "restore_time": "2026-11-24T09:00:00Z"},
                    details={"restorable_window": {"earliest": "2026-11-17T10:00:00Z",
                                                   "latest": "2026-11-24T10:25:00Z"},
                             "source": "rag-engine-prod"}),
        PlannedStep(id="cutover", title="Point the application at the restored instance", action="kubernetes.set_env",
                    provider="kubernetes", guarded=True, after=("restore",),
                    params={"deployment": "rag-engine-api", "env": {"DB_HOST": "«restore.endpoint»"}}),
        PlannedStep(id="report", title="Summarise the restore", action="builtin.report", provider="builtin",
                    guarded=False, after=("cutover",), params={}),
    )
    return Plan(runbook="database-pitr", runbook_version=1, environment="prod",
                steps=tuple(steps) if steps is not None else default)


def run(status: RunStatus, **changes: Any) -> Run:
    base: dict[str, Any] = dict(id="R-1", incident_id="INC-1", runbook="database-pitr", environment="prod",
                                command="/dr restore database prod 09:00Z", requested_by="alice",
                                requested_at=DETECTED + timedelta(minutes=5), status=status, plan=plan(),
                                plan_hash=HASH)
    return Run(**{**base, **changes})


def plan_request(**changes: Any) -> ApprovalRequest:
    base: dict[str, Any] = dict(id="AR-1", run_id="R-1", gate="plan", plan_hash=HASH, requested_by="alice",
                                requested_at=DETECTED + timedelta(minutes=5),
                                expires_at=DETECTED + timedelta(minutes=35), required=1, approvers=("bob", "carol"))
    return ApprovalRequest(**{**base, **changes})


def decision(rid: str, option: str) -> ApprovalRequest:
    return plan_request(id=rid, gate="decision", option=option, step_id="restore",
                        plan_hash=HASH[:48] + option[0] + "0" * 15, expires_at=NOW + timedelta(days=7))


def step(step_id: str, status: StepStatus, **changes: Any) -> StepRun:
    return StepRun(run_id="R-1", step_id=step_id, title=step_id.capitalize(), status=status, **changes)


def card(r: Run, *, steps: Sequence[StepRun] = (), requests: Sequence[ApprovalRequest] = (),
         votes: Sequence[Approval] = (), confirm: bool = True) -> list[dict[str, Any]]:
    out = blocks.run_card(run=r, steps=steps, requests=requests, votes=votes, now=NOW, confirm_on_approve=confirm)
    blocks.validate_message(out)
    return out


def elements(message: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in message if b["type"] == "actions" for e in b["elements"]]


def texts(message: Sequence[dict[str, Any]]) -> str:
    return json.dumps(message, ensure_ascii=False)


def section_texts(message: Sequence[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in message if b["type"] == "section" and "text" in b]


# --------------------------------------------------------------------------------------------- action ids


def test_engine_and_slack_action_ids_map_both_ways() -> None:
    for action, action_id in [("approve", "dr_approve"), ("reject", "dr_reject"), ("retry", "dr_retry"),
                              ("skip", "dr_skip"), ("abort", "dr_abort"), ("cancel", "dr_cancel"),
                              ("tick", "dr_tick")]:
        assert blocks.button_action(Button("x", action, "v")) == action_id
        assert blocks.engine_action(action_id) == action
    assert blocks.engine_action("dr_tick:immediate") == "tick"
    assert blocks.engine_action("dr_approve:2") == "approve"
    with pytest.raises(ValueError, match="dr_nope"):
        blocks.engine_action("dr_nope")
    with pytest.raises(ValueError, match="explode"):
        blocks.button_action(Button("x", "explode", "v"))



def test_every_engine_button_action_has_a_slack_id_and_nothing_else_does() -> None:
    for action in sorted(BUTTON_ACTIONS):
        assert blocks.engine_action(blocks.button_action(Button("x", button_action(action), "v"))) == action
    with pytest.raises(ValueError, match="not a button action"):
        button_action("approve_all")


# --------------------------------------------------------------------------------------------- header


def test_header_shows_the_incident_and_the_live_rto_budget() -> None:
    message = blocks.incident_header(incident=incident(), tier=CRITICAL, now=NOW,
                                     pagerduty_url="https://acme.pagerduty.com/incidents/Q1", checklist_done=3,
                                     checklist_total=20)
    blocks.validate_message(message)
    assert message[0] == {"type": "header", "text": {"type": "plain_text", "text": "INC-1: Orders DB corrupted",
                                                     "emoji": True}}
    text = texts(message)
    for expected in ["sev1", "prod", "open", "2026-11-24T10:00:00Z", "30m 00s of 1h 00m 00s (50 %)", "3/20 done",
                     "<https://acme.pagerduty.com/incidents/Q1|PagerDuty incident>"]:
        assert expected in text
    assert ":warning:" not in text


def test_header_warns_from_75_percent_and_reports_the_result_once_restored() -> None:
    late = NOW + timedelta(minutes=16)  # 46 of 60 minutes
    warned = texts(blocks.incident_header(incident=incident(), tier=CRITICAL, now=late))
    assert ":warning: 46m 00s of 1h 00m 00s (77 %)" in warned
    over = texts(blocks.incident_header(incident=incident(), tier=CRITICAL, now=NOW + timedelta(hours=1)))
    assert ":rotating_light:" in over and "over by 30m 00s" in over
    restored = incident(status=IncidentStatus.RESTORED, restored_at=DETECTED + timedelta(minutes=42))
    done = texts(blocks.incident_header(incident=restored, tier=CRITICAL, now=NOW + timedelta(hours=3)))
    assert "restored in 42m 00s (target 1h 00m 00s, met)" in done
    assert "PagerDuty" not in done


def test_header_title_is_cut_to_150_characters() -> None:
    message = blocks.incident_header(incident=incident(title="x" * 400), tier=CRITICAL, now=NOW)
    blocks.validate_message(message)
    assert len(message[0]["text"]["text"]) <= 150


# --------------------------------------------------------------------------------------------- run card


def test_card_shows_the_plan_with_its_hash_params_and_restorable_window() -> None:
    message = card(run(RunStatus.AWAITING_APPROVAL), requests=[plan_request()])
    text = "\n".join(section_texts(message))
    assert "*Plan `d5a0f8ef`*" in text and HASH not in text
    assert "`aws-rds` · `database.restore_pitr`" in text
    assert "`restore_time=2026-11-24T09:00:00Z`" in text
    assert "restorable window 2026-11-17T10:00:00Z → 2026-11-24T10:25:00Z" in text
    assert text.count(":lock: _needs approval_") == 2
    assert "after `restore`" in text
    assert "`env={\"DB_HOST\": \"«restore.endpoint»\"}`" in text


def test_awaiting_approval_offers_approve_reject_and_cancel_with_a_confirm_naming_hash_and_env() -> None:
    message = card(run(RunStatus.AWAITING_APPROVAL), requests=[plan_request()])
    buttons = elements(message)
    assert [(b["action_id"], b["value"], b.get("style")) for b in buttons] == [
        ("dr_approve", "AR-1", "primary"), ("dr_reject", "AR-1", "danger"), ("dr_cancel", "R-1", "danger")]
    dialog = buttons[0]["confirm"]
    assert "d5a0f8ef" in dialog["text"]["text"] and "prod" in dialog["text"]["text"]
    assert "prod" in dialog["title"]["text"]
    assert "confirm" not in buttons[1]
    assert "0 of 1 approval" in texts(message)


def test_no_confirm_dialog_when_not_asked() -> None:
    message = card(run(RunStatus.AWAITING_APPROVAL, environment="staging"), requests=[plan_request()], confirm=False)
    approve = elements(message)[0]
    assert approve["action_id"] == "dr_approve" and "confirm" not in approve


def test_approvals_show_who_approved_and_an_expired_request_loses_its_buttons() -> None:
    vote = Approval(request_id="AR-1", actor="bob", decision=Decision.APPROVE, plan_hash=HASH,
                    at=DETECTED + timedelta(minutes=6))
    r = run(RunStatus.AWAITING_APPROVAL)
    two = plan_request(required=2)
    assert "1 of 2 approvals (bob)" in texts(card(r, requests=[two], votes=[vote]))
    expired = plan_request(expires_at=NOW - timedelta(minutes=1))
    assert [b["action_id"] for b in elements(card(r, requests=[expired]))] == ["dr_cancel"]


def test_paused_run_offers_retry_skip_abort_one_per_pending_request() -> None:
    requests = [plan_request(status="granted"), decision("AR-2", "retry"), decision("AR-3", "skip"),
                decision("AR-4", "abort")]
    steps = [step("restore", StepStatus.FAILED, started_at=DETECTED + timedelta(minutes=6),
                  finished_at=DETECTED + timedelta(minutes=9), error="InvalidRestoreTime: too early")]
    message = card(run(RunStatus.PAUSED), steps=steps, requests=requests)
    assert [(b["action_id"], b["value"]) for b in elements(message)] == [
        ("dr_retry", "AR-2"), ("dr_skip", "AR-3"), ("dr_abort", "AR-4")]
    text = texts(message)
    assert ":x:" in text and "took 3m 00s" in text and "InvalidRestoreTime: too early" in text


def test_running_run_offers_only_cancel_and_shows_step_progress() -> None:
    steps = [step("restore", StepStatus.SUCCEEDED, started_at=DETECTED + timedelta(minutes=6),
                  finished_at=DETECTED + timedelta(minutes=26)),
             step("cutover", StepStatus.RUNNING, started_at=DETECTED + timedelta(minutes=27), attempt=2)]
    message = card(run(RunStatus.RUNNING), steps=steps, requests=[plan_request(status="granted")])
    buttons = elements(message)
    assert [(b["action_id"], b["value"]) for b in buttons] == [("dr_cancel", "R-1")]
    assert "confirm" in buttons[0]
    text = "\n".join(section_texts(message))
    assert ":white_check_mark: *1. Point-in-time restore" in text and "took 20m 00s" in text
    assert "started 10:27:00Z" in text and "running for 3m 00s" in text and "attempt 2" in text


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED,
                                    RunStatus.CANCELLED, RunStatus.PREFLIGHT])
def test_finished_or_preflight_runs_have_no_buttons(status: RunStatus) -> None:
    message = card(run(status, finished_at=NOW if status.finished else None), requests=[plan_request()])
    assert elements(message) == []
    assert status.value.replace("_", " ") in message[0]["text"]["text"]


def test_run_without_a_plan_yet_says_so() -> None:
    message = card(run(RunStatus.PREFLIGHT, plan=None, plan_hash=""))
    assert "not ready (pre-flight running)" in texts(message)


def test_user_text_is_escaped_so_it_cannot_ping_or_link() -> None:
    r = run(RunStatus.FAILED, reason="provider said <!channel> & <https://evil|click>", finished_at=NOW)
    text = texts(card(r))
    assert "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in text
    assert "<!channel>" not in text


def test_a_200_step_plan_is_cut_within_limits_and_points_at_the_export() -> None:
    many = [PlannedStep(id=f"s{n}", title=f"Step number {n} " + "w" * 80, action="database.noop", provider="aws-rds",
                        guarded=n % 2 == 0, params={"n": n, "note": "v" * 120}) for n in range(200)]
    message = card(run(RunStatus.AWAITING_APPROVAL, plan=plan(many)), requests=[plan_request()])
    assert len(message) <= 50
    plans = section_texts(message)[1:]
    assert all(len(t) <= 3000 for t in plans)
    assert plans[-1].endswith(POINTER)
    assert "more steps not shown" in plans[-1]
    assert [b["action_id"] for b in elements(message)] == ["dr_approve", "dr_reject", "dr_cancel"]


def test_huge_params_are_cut_and_point_at_the_export() -> None:
    big = PlannedStep(id="big", title="Big", action="database.restore_pitr", provider="aws-rds", guarded=True,
                      params={"query": "q" * 10_000, "blob": {"k": "z" * 10_000}}, details={"note": "n" * 10_000})
    message = card(run(RunStatus.AWAITING_APPROVAL, plan=plan([big])), requests=[plan_request()])
    plans = section_texts(message)
    assert all(len(t) <= 3000 for t in plans)
    assert plans[-1].endswith(POINTER)
    assert "q" * 10_000 not in texts(message)


# --------------------------------------------------------------------------------------------- checklist


def checklist_items(done: dict[str, tuple[str, datetime]]) -> list[ChecklistItem]:
    checklist = load_catalog().checklist
    return [ChecklistItem(incident_id="INC-1", item_id=s.id, phase=p.id, text=s.text, due_at=DETECTED + s.due,
                          done_by=done[s.id][0] if s.id in done else None,
                          done_at=done[s.id][1] if s.id in done else None)
            for p in checklist.phases for s in p.items]


def test_checklist_has_one_checkbox_group_per_phase_with_done_items_ticked() -> None:
    checklist = load_catalog().checklist
    items = checklist_items({"ack-page": ("bob", DETECTED + timedelta(minutes=2)),
                             "assign-ic": ("U0CAROL", DETECTED + timedelta(minutes=12))})
    message = blocks.checklist_blocks(incident_id="INC-1", checklist=checklist, items=items, now=NOW)
    blocks.validate_message(message)
    boxes = elements(message)
    assert [b["action_id"] for b in boxes] == [f"dr_tick:{p.id}" for p in checklist.phases]
    immediate = boxes[0]
    assert [o["value"] for o in immediate["initial_options"]] == ["INC-1:ack-page", "INC-1:assign-ic"]
    assert all(o in immediate["options"] for o in immediate["initial_options"])
    descriptions = {o["value"]: o["description"]["text"] for b in boxes for o in b["options"]}
    assert descriptions["INC-1:assign-ic"] == "done by U0CAROL at 10:12Z (late)"
    assert descriptions["INC-1:open-thread"] == ":warning: overdue, was due 10:05Z"
    assert descriptions["INC-1:run-runbook"] == "due 11:00Z"
    text = texts(message)
    assert "bob ticked “Acknowledge the page so the escalation stops” at 10:02Z" in text
    assert "<@U0CAROL> ticked" in text
    assert "2/" in message[0]["text"]["text"] and "overdue" in message[0]["text"]["text"]
    assert "*Immediate response* · 0m–15m after detection (10:00Z–10:15Z)" in text


def test_checklist_option_text_is_cut_to_75_and_a_big_phase_is_split_into_elements_of_ten() -> None:
    checklist = load_catalog().checklist
    phase = checklist.phases[0]
    items = [ChecklistItem(incident_id="INC-1", item_id=f"x{n}", phase=phase.id, text=f"Item {n} " + "long " * 30,
                           due_at=NOW + timedelta(minutes=n)) for n in range(23)]
    message = blocks.checklist_blocks(incident_id="INC-1", checklist=checklist, items=items, now=NOW)
    blocks.validate_message(message)
    boxes = elements(message)
    assert [len(b["options"]) for b in boxes] == [10, 10, 3]
    assert len({b["action_id"] for b in boxes}) == 3
    assert all(len(o["text"]["text"]) <= 75 for b in boxes for o in b["options"])


# --------------------------------------------------------------------------------------------- events


def event(kind: str, text: str = "something happened", **data: Any) -> Event:
    return Event(incident_id="INC-1", run_id="R-1", at=NOW, actor="drbot", kind=kind, text=text, data=data)


def test_event_line_is_one_escaped_line_with_time_and_actor() -> None:
    line = blocks.event_line(Event(incident_id="INC-1", at=NOW, actor="U0BOB", kind="approval.vote",
                                   text="bob approved <R-1>\n& more"))
    assert line == "`10:30:00Z` <@U0BOB>: bob approved &lt;R-1&gt; &amp; more"


def test_progress_events_only_update_the_card() -> None:
    for kind in ("step.progress", "step.started", "step.operation", "approval.vote", "run.running"):
        assert blocks.event_message(event(kind)) is None


@pytest.mark.parametrize("kind", ["approval.requested", "run.paused", "incident.restored", "run.succeeded",
                                  "run.failed", "run.cancelled", "run.rejected", "run.expired", "incident.resolved"])
def test_events_worth_a_post_get_one_without_buttons(kind: str) -> None:
    message = blocks.event_message(event(kind, "R-1 <did> a thing", request_id="AR-1", plan_hash=HASH,
                                         step_id="restore"))
    assert message is not None
    blocks.validate_message(message)
    assert "R-1 &lt;did&gt; a thing" in texts(message)
    assert elements(message) == []  # live buttons are on the run card only


def test_rto_warnings_escalate() -> None:
    titles = {}
    for pct in (50, 75, 100):
        message = blocks.event_message(event("rto.warning", f"RTO budget {pct}% used", percent=pct))
        assert message is not None
        blocks.validate_message(message)
        titles[pct] = message[0]["text"]["text"]
    assert ":hourglass_flowing_sand:" in titles[50]
    assert ":warning:" in titles[75]
    assert ":rotating_light:" in titles[100] and "exhausted" in titles[100]


def test_planned_event_summarises_the_plan_and_preflight_failure_lists_problems() -> None:
    planned = blocks.event_message(event("run.planned", plan=plan().model_dump(mode="json"), plan_hash=HASH))
    assert planned is not None
    blocks.validate_message(planned)
    text = texts(planned)
    assert "Plan `d5a0f8ef` for R-1" in text and "restorable window 2026-11-17T10:00:00Z" in text
    assert "1. Point-in-time restore into a new instance :lock:" in text
    failed = blocks.event_message(event("run.preflight_failed", problems=["restore time is before the window",
                                                                          "replica missing"]))
    assert failed is not None
    blocks.validate_message(failed)
    assert "• restore time is before the window" in texts(failed) and "• replica missing" in texts(failed)


# --------------------------------------------------------------------------------------------- replies


def test_reply_buttons_convert_and_keep_action_ids_unique() -> None:
    reply = Reply(text="INC-1 status", incident_id="INC-1", buttons=(
        Button("Approve R-1", "approve", "AR-1", "primary"), Button("Reject R-1", "reject", "AR-1", "danger"),
        Button("Approve R-2", "approve", "AR-5", "primary"),
        *(Button(f"Immediate response: item {n} " + "x" * 90, "tick", f"INC-1:item-{n}") for n in range(30))))
    message = blocks.reply_blocks(reply)
    blocks.validate_message(message)
    buttons = elements(message)
    assert [b["action_id"] for b in buttons[:4]] == ["dr_approve", "dr_reject", "dr_approve:2", "dr_tick"]
    assert buttons[2]["value"] == "AR-5" and buttons[5]["value"] == "INC-1:item-2"
    assert len(buttons) == 33 and sum(1 for b in message if b["type"] == "actions") == 2
    assert all(blocks.engine_action(b["action_id"]) in {"approve", "reject", "tick"} for b in buttons)


def test_a_5000_character_reply_is_split_into_sections() -> None:
    text = "\n".join(f"line {n}: " + "r" * 90 for n in range(50))
    message = blocks.reply_blocks(Reply(text=text))
    blocks.validate_message(message)
    parts = section_texts(message)
    assert len(parts) == 2 and "\n".join(parts) == text


def test_an_enormous_reply_is_cut_at_50_blocks_with_a_pointer() -> None:
    message = blocks.reply_blocks(Reply(text="y" * 200_000, incident_id="INC-1",
                                        buttons=(Button("Cancel R-1", "cancel", "R-1", "danger"),)))
    blocks.validate_message(message)
    assert len(message) == 50
    assert section_texts(message)[-1].endswith("… (full text: `/dr timeline md` or `drbot export INC-1`)")
    assert elements(message)[0]["action_id"] == "dr_cancel"


def test_choose_incident_has_one_button_per_incident_and_keeps_the_command() -> None:
    command = "/dr restore database prod 10:00Z"
    message = blocks.choose_incident_blocks(
        incidents=[incident(), incident(id="INC-2", number=2, title="Region down " + "z" * 100)], command_text=command)
    blocks.validate_message(message)
    assert "Several incidents are open in this channel — which one" in texts(message)
    buttons = elements(message)
    assert [(b["action_id"], b["value"]) for b in buttons] == [("dr_choose_incident:INC-1", "INC-1"),
                                                                ("dr_choose_incident:INC-2", "INC-2")]
    holder = next(b for b in message if b["type"] == "actions")
    assert blocks.chosen_command(holder["block_id"]) == command


def test_export_summary_names_the_file() -> None:
    message = blocks.export_summary(record_summary="INC-1: RTO 42m (met) <ok>", filename="INC-1-timeline.md")
    blocks.validate_message(message)
    assert "RTO 42m (met) &lt;ok&gt;" in texts(message) and "`INC-1-timeline.md`" in texts(message)


# --------------------------------------------------------------------------------------------- validate_message


def test_validate_message_refuses_what_slack_would_refuse() -> None:
    good = {"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}

    def btn(n: int, **changes: Any) -> dict[str, Any]:
        return {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": f"a{n}", "value": "v",
                **changes}

    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([good] * 51, "at most 50"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}], "3000"),
        ([{"type": "actions", "elements": [btn(n) for n in range(26)]}], "25"),
        ([{"type": "actions", "elements": [btn(0, text={"type": "plain_text", "text": "b" * 76})]}], "75"),
        ([{"type": "actions", "elements": [btn(0, value="v" * 2001)]}], "2000"),
        ([{"type": "actions", "elements": [btn(0)]}, {"type": "actions", "elements": [btn(0)]}], "'a0' is already"),
        ([{"type": "actions", "elements": [btn(0, confirm={"title": {"type": "plain_text", "text": "t"},
                                                           "text": {"type": "plain_text", "text": "c" * 301}})]}],
         "confirm dialog"),
        ([{"type": "actions", "elements": [{"type": "checkboxes", "action_id": "c", "options": [
            {"text": {"type": "plain_text", "text": f"o{n}"}, "value": f"{n}"} for n in range(11)]}]}], "at most 10"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}, "accessory": btn(0, action_id="a" * 256)}],
         "255"),
        ([{"type": "teleporter"}], "not a Block Kit block"),
    ]
    for message, problem in cases:
        with pytest.raises(ValueError, match=problem):
            blocks.validate_message(message)
    blocks.validate_message([good] * 50)


def test_user_ids_in_engine_sentences_become_mentions_and_broadcasts_do_not() -> None:
    from bot.slack.blocks_kit import esc

    # Only ids drbot knows from Slack for this message become mentions; a typed id-shaped word (U0MALLORY1)
    # stays as typed. (It used to turn every id-shaped word into a mention: a way to ping anyone.)
    shown = esc("U0ALICE asks; needs U0BOB or S0SRE. <!channel> UPDATE failed, U0MALLORY1 <@U0BOB>",
                people={"U0ALICE", "U0BOB"})
    assert "<@U0ALICE> asks" in shown and "needs <@U0BOB> or" in shown
    assert "S0SRE" in shown and "<@S0SRE>" not in shown
    assert "&lt;!channel&gt;" in shown and "<@UPDATE>" not in shown
    assert "U0MALLORY1" in shown and "<@U0MALLORY1>" not in shown
    assert "&lt;@U0BOB&gt;" in shown, "a typed mention stays escaped, even of someone drbot may mention"
    assert "<" not in esc("U0ALICE asks; needs U0BOB"), "no people: no mentions"
