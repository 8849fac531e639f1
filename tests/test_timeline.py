"""RTO/RPO arithmetic, the live budget and the three exports, checked against hand-computed figures."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runbooks.export import export, export_csv, export_json, export_markdown
from runbooks.models import (
    SEED_TIERS,
    Approval,
    ApprovalRequest,
    ChecklistItem,
    Decision,
    Event,
    Incident,
    IncidentRecord,
    IncidentStatus,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
)
from runbooks.timeline import (
    budget,
    crossed_thresholds,
    format_duration,
    iso,
    parse_duration,
    rpo,
    rto,
)

DETECTED = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CRITICAL = SEED_TIERS["critical"]  # RTO 1 h, RPO 15 min
HASH = "ab12cd34ef56" + "0" * 52


def incident(**changes: object) -> Incident:
    base: dict[str, object] = dict(
        id="INC-7", number=7, title="Orders DB corrupted", severity="sev1", environment="prod", tier="critical",
        opened_by="alice", opened_at=DETECTED, detected_at=DETECTED,
    )
    base.update(changes)
    return Incident.model_validate(base)


def record(*, events: list[Event] | None = None, **changes: object) -> IncidentRecord:
    extras = {key: changes.pop(key) for key in ("restore_point", "replica_lag", "checklist") if key in changes}
    return IncidentRecord.model_validate(
        dict(incident=incident(**changes), tier=CRITICAL, events=events or [], **extras)
    )


def event(seq: int, minutes: float, text: str, *, actor: str = "alice") -> Event:
    return Event(seq=seq, incident_id="INC-7", at=DETECTED + timedelta(minutes=minutes), actor=actor,
                 kind="note", text=text)


def full_record() -> IncidentRecord:
    """Restored after 47 min from a restore point 1 min before impact start: RTO and RPO both met."""
    run = Run(id="R-1", incident_id="INC-7", runbook="database-pitr", environment="prod",
              command="/dr restore database prod 09:55Z", requested_by="alice",
              requested_at=DETECTED + timedelta(minutes=5), status=RunStatus.SUCCEEDED, plan_hash=HASH,
              finished_at=DETECTED + timedelta(minutes=45))
    steps = [
        StepRun(run_id="R-1", step_id="restore", title="Restore to point in time", status=StepStatus.SUCCEEDED,
                started_at=DETECTED + timedelta(minutes=7), finished_at=DETECTED + timedelta(minutes=37, seconds=12)),
        StepRun(run_id="R-1", step_id="verify", title="Verify row counts", status=StepStatus.FAILED, attempt=2,
                started_at=DETECTED + timedelta(minutes=38), finished_at=DETECTED + timedelta(minutes=39),
                error="count was 0"),
    ]
    request = ApprovalRequest(id="AR-1", run_id="R-1", gate="plan", plan_hash=HASH, requested_by="alice",
                              requested_at=DETECTED + timedelta(minutes=5),
                              expires_at=DETECTED + timedelta(minutes=35), required=1, approvers=("bob",),
                              status="granted")
    approval = Approval(request_id="AR-1", actor="bob", decision=Decision.APPROVE, plan_hash=HASH,
                        at=DETECTED + timedelta(minutes=6))
    checklist = [
        ChecklistItem(incident_id="INC-7", item_id="page", phase="first-15-min", text="Page the DB owner",
                      due_at=DETECTED + timedelta(minutes=15), done_at=DETECTED + timedelta(minutes=3),
                      done_by="carol"),
        ChecklistItem(incident_id="INC-7", item_id="status", phase="first-15-min", text="Post status page",
                      due_at=DETECTED + timedelta(minutes=15)),
        ChecklistItem(incident_id="INC-7", item_id="pm", phase="after", text="Schedule post-mortem",
                      due_at=DETECTED + timedelta(days=2)),
    ]
    events = [
        event(1, 0, "Incident opened"),
        event(2, 6, "bob approved plan ab12cd34ef56", actor="bob"),
        event(3, 47, 'restored | row counts "ok", checked\nby carol', actor="carol"),
    ]
    return IncidentRecord(
        incident=incident(status=IncidentStatus.RESTORED, impact_start_at=DETECTED - timedelta(minutes=4),
                          restored_at=DETECTED + timedelta(minutes=47)),
        tier=CRITICAL, events=events, runs=[run], steps=steps, requests=[request], approvals=[approval],
        checklist=checklist, restore_point=DETECTED - timedelta(minutes=5),
    )


NOW = DETECTED + timedelta(hours=1)


# --------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)), ("7d", timedelta(days=7)),
     ("90s", timedelta(seconds=90)), ("1h30m", timedelta(minutes=90)), (" 2H ", timedelta(hours=2)),
     ("1h 02m 03s", timedelta(hours=1, minutes=2, seconds=3))],
)
def test_parse_duration_reads_the_forms_people_write(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "1.5h", "15 minutes", "30m1h", "-5m", "1x"])
def test_parse_duration_refuses_with_the_right_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration.*90s, 15m, 1h, 1h30m, 7d"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("td", "expected"),
    [(timedelta(hours=1, minutes=2, seconds=3), "1h 02m 03s"), (timedelta(minutes=4, seconds=10), "4m 10s"),
     (timedelta(seconds=12.9), "12s"), (timedelta(0), "0s"), (timedelta(days=2, hours=3), "2d 03h 00m 00s"),
     (-timedelta(minutes=5), "-5m 00s")],
)
def test_format_duration(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


@given(st.integers(min_value=0, max_value=10 * 86_400))
def test_a_formatted_duration_reads_back_as_itself(total: int) -> None:
    td = timedelta(seconds=total)
    assert parse_duration(format_duration(td)) == td


def test_iso_is_utc_with_z_and_no_micros() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert iso(datetime(2026, 11, 24, 12, 0, 0, 999_999, tzinfo=plus_two)) == "2026-11-24T10:00:00Z"
    assert iso(datetime(2026, 11, 24, 10, 0)) == "2026-11-24T10:00:00Z"  # naive values from SQLite are UTC


# --------------------------------------------------------------------------------------------- RTO / RPO


def test_rto_is_restored_minus_detected_and_none_until_restored() -> None:
    assert rto(record(restored_at=DETECTED + timedelta(minutes=42, seconds=10))) == timedelta(minutes=42, seconds=10)
    assert rto(record()) is None


def test_rpo_uses_impact_start_when_known() -> None:
    value, basis = rpo(record(impact_start_at=DETECTED - timedelta(minutes=10),
                              restore_point=DETECTED - timedelta(minutes=12)))
    assert value == timedelta(minutes=2)
    assert basis.startswith("impact start (2026-11-24T09:50:00Z) minus restore point")


def test_rpo_falls_back_to_detected_time_and_says_it_is_an_upper_bound() -> None:
    value, basis = rpo(record(restore_point=DETECTED - timedelta(minutes=12)))
    assert value == timedelta(minutes=12)
    assert "impact start not recorded; detected time used, an upper bound" in basis


def test_rpo_of_a_replica_promotion_is_the_lag_even_with_a_restore_point() -> None:
    value, basis = rpo(record(replica_lag=timedelta(seconds=3), restore_point=DETECTED - timedelta(hours=1)))
    assert value == timedelta(seconds=3)
    assert basis == "replica lag at promotion"


def test_rpo_unknown_without_a_restore_point() -> None:
    assert rpo(record()) == (None, "no restore point recorded")


def test_restore_point_after_impact_start_is_flagged() -> None:
    value, basis = rpo(record(impact_start_at=DETECTED - timedelta(minutes=10),
                              restore_point=DETECTED - timedelta(minutes=5)))
    assert value == -timedelta(minutes=5)
    assert "may include the damage" in basis


# --------------------------------------------------------------------------------------------- budget


def test_budget_percent_and_remaining_while_down() -> None:
    spent = budget(incident=incident(), tier=CRITICAL, now=DETECTED + timedelta(minutes=45))
    assert spent.elapsed == timedelta(minutes=45)
    assert spent.percent == pytest.approx(75.0)
    assert spent.remaining == timedelta(minutes=15)
    assert not spent.over


def test_budget_stops_at_restore_and_goes_negative_when_over() -> None:
    restored = incident(restored_at=DETECTED + timedelta(minutes=90))
    spent = budget(incident=restored, tier=CRITICAL, now=DETECTED + timedelta(days=3))
    assert spent.elapsed == timedelta(minutes=90)
    assert spent.percent == pytest.approx(150.0)
    assert spent.remaining == -timedelta(minutes=30)
    assert spent.over


def test_each_threshold_is_crossed_once() -> None:
    already: set[int] = set()
    seen: list[list[int]] = []
    for minutes in (10, 29, 30, 31, 45, 50, 60, 120):
        crossed = crossed_thresholds(incident=incident(), tier=CRITICAL, now=DETECTED + timedelta(minutes=minutes),
                                     already=already)
        already.update(crossed)
        seen.append(crossed)
    assert seen == [[], [], [50], [], [75], [], [100], []]


def test_a_late_tick_reports_every_threshold_it_skipped() -> None:
    assert crossed_thresholds(incident=incident(), tier=CRITICAL, now=DETECTED + timedelta(hours=2),
                              already=[50]) == [75, 100]


@pytest.mark.parametrize(
    "stopped",
    [incident(restored_at=DETECTED + timedelta(minutes=20), status=IncidentStatus.RESTORED),
     incident(restored_at=DETECTED + timedelta(minutes=20)),  # restore recorded before the status caught up
     incident(status=IncidentStatus.RESOLVED, resolved_at=DETECTED + timedelta(minutes=5))],  # a false alarm
    ids=["restored", "restored-time-only", "resolved-without-restore"],
)
def test_no_warnings_once_the_clock_has_stopped(stopped: Incident) -> None:
    assert crossed_thresholds(incident=stopped, tier=CRITICAL, now=DETECTED + timedelta(hours=5), already=()) == []


# --------------------------------------------------------------------------------------------- markdown


def test_markdown_has_every_section_and_the_figures() -> None:
    text = export_markdown(full_record(), now=NOW)
    for heading in ("# INC-7: Orders DB corrupted", "## Summary", "## RTO and RPO", "## Timeline", "## Steps",
                    "## Approvals", "## Checklist"):
        assert heading in text
    assert "| RTO     | 47m 00s | 1h 00m 00s | met" in text
    assert "| RPO     | 1m 00s  | 15m 00s    | met" in text
    assert "| Restore to point in time (restore) | succeeded" in text and "30m 12s" in text
    assert "failed: count was 0" in text
    assert "ab12cd34ef56 |" in text and HASH not in text  # short plan hash only
    assert "| bob | 2026-11-24T10:06:00Z | approve |" in text


def test_markdown_escapes_pipes_and_newlines_in_the_timeline() -> None:
    text = export_markdown(full_record(), now=NOW)
    row = next(line for line in text.splitlines() if "row counts" in line)
    assert row.startswith("| 2026-11-24T10:47:00Z | +47m 00s | carol")
    assert 'restored \\| row counts "ok", checked<br>by carol |' in row
    assert row.replace("\\|", "").count("|") == 5  # four columns, nothing leaked into a fifth


def test_markdown_reports_missed_targets() -> None:
    late = record(restored_at=DETECTED + timedelta(hours=2), restore_point=DETECTED - timedelta(minutes=40),
                  events=[event(1, 0, "opened")])
    text = export_markdown(late, now=NOW)
    assert "| RTO     | 2h 00m 00s | 1h 00m 00s | missed" in text
    assert "| RPO     | 40m 00s    | 15m 00s    | missed | impact start not recorded" in text


def test_markdown_while_still_down_shows_budget_used() -> None:
    text = export_markdown(record(events=[event(1, 0, "opened")]), now=DETECTED + timedelta(minutes=30))
    assert "not restored (30m 00s so far)" in text and "open (50% of budget used)" in text
    assert "| RPO     | unknown" in text


def test_markdown_checklist_counts_who_and_overdue() -> None:
    text = export_markdown(full_record(), now=NOW)
    assert "1 of 3 items done; 1 overdue." in text
    assert "### first-15-min: 1 of 2 done" in text
    assert "- [x] Page the DB owner (done by carol at 2026-11-24T10:03:00Z)" in text
    assert "- [ ] Post status page (due 2026-11-24T10:15:00Z, OVERDUE by 45m 00s)" in text
    assert "- [ ] Schedule post-mortem (due 2026-11-26T10:00:00Z)" in text


# --------------------------------------------------------------------------------------------- json / csv


def test_json_has_schema_and_correct_numbers() -> None:
    document = json.loads(export_json(full_record(), now=NOW))
    assert document["schema"] == "drbot.incident/v1"
    assert document["rto"] == {"seconds": 47 * 60, "target_seconds": 3600, "met": True,
                               "elapsed_seconds": 47 * 60, "restored": True}
    assert document["rpo"]["seconds"] == 60 and document["rpo"]["met"] is True
    assert document["rpo"]["basis"].startswith("impact start (2026-11-24T09:56:00Z)")
    assert document["incident"]["restored_at"] == "2026-11-24T10:47:00Z"
    assert [e["elapsed_seconds"] for e in document["events"]] == [0, 360, 2820]
    assert document["events"][2]["text"] == 'restored | row counts "ok", checked\nby carol'
    assert document["steps"][0]["duration_seconds"] == 30 * 60 + 12
    assert document["approvals"][0]["plan_hash"] == HASH
    assert [item["done_by"] for item in document["checklist"]] == ["carol", None, None]


def test_json_of_an_open_incident_has_no_rto_yet() -> None:
    document = json.loads(export_json(record(), now=DETECTED + timedelta(minutes=10)))
    assert document["rto"]["seconds"] is None and document["rto"]["met"] is None
    assert document["rto"]["elapsed_seconds"] == 600
    assert document["rpo"] == {"seconds": None, "target_seconds": 900, "met": None,
                               "basis": "no restore point recorded", "restore_point": None,
                               "replica_lag_seconds": None}


def test_csv_round_trips_awkward_text() -> None:
    awkward = ['plain', 'commas, and "quotes"', "two\nlines", "pipe | and\r\ncrlf"]
    rec = record(events=[event(n, n, text) for n, text in enumerate(awkward, start=1)])
    rows = list(csv.reader(io.StringIO(export_csv(rec), newline="")))
    assert rows[0] == ["seq", "time", "elapsed_seconds", "incident", "run", "actor", "kind", "text"]
    assert len(rows) == len(awkward) + 1
    assert [row[7] for row in rows[1:]] == awkward
    assert rows[2][:4] == ["2", "2026-11-24T10:02:00Z", "120", "INC-7"]


def test_export_dispatches_and_names_the_allowed_formats() -> None:
    rec = full_record()
    assert export(rec, fmt="MD", now=NOW) == export_markdown(rec, now=NOW)
    assert export(rec, fmt="csv", now=NOW) == export_csv(rec)
    with pytest.raises(ValueError, match="unknown export format 'pdf'; use one of: md, json, csv"):
        export(rec, fmt="pdf", now=NOW)
