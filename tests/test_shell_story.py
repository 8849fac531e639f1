"""The PITR story and its refusals, typed into `drbot shell` through its REPL loop (a real subprocess)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.sandbox.database import create_count
from runbooks.store import Store
from tests.shellrun import ShellProcess, run_shell

pytestmark = pytest.mark.slow


@pytest.fixture
def shell(tmp_path: Path):  # type: ignore[no-untyped-def]
    sessions: list[ShellProcess] = []

    def start(**kwargs: object) -> ShellProcess:
        s = ShellProcess(tmp_path, **kwargs)  # type: ignore[arg-type]
        sessions.append(s)
        return s

    yield start
    for s in sessions:
        s.close()


def test_pitr_story_two_people(shell, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sh = shell(user="alice")
    sh.send("/dr restore database prod 10:00Z")
    resolved = sh.expect(r"Restore point: (\d{4}-\d\d-\d\dT10:00:00Z) \(from `10:00Z`\)").group(1)
    now = datetime.now(UTC)
    point = datetime.fromisoformat(resolved.replace("Z", "+00:00"))
    assert timedelta(0) <= now - point < timedelta(days=1), "10:00Z is the most recent past 10:00 UTC"
    sh.expect(r"No incident was open for prod, so drbot opened INC-1")
    sh.expect(r"Plan [0-9a-f]{8} — database-pitr v2 on prod")
    sh.expect(r"restorable_window")
    sh.expect(r"rag-engine-prod-pitr-r1")
    sh.expect(r"\[1\] Approve  \[2\] Reject")

    sh.send(":press 1")  # alice approves her own request
    sh.expect(r"you cannot approve it: the two-person rule")
    sh.send(":as bob")
    sh.send(f":press {sh.button('Approve')}")
    sh.expect(r"Recorded: bob approved R-1")
    sh.expect(r"R-1 \(database-pitr\) finished successfully", timeout=90)
    sh.send("/dr incident impact -4h")
    sh.expect(r"INC-1: impact started at \S+Z \(from `-4h`\); the RPO is measured from it")
    sh.send("/dr timeline md")
    table = sh.expect(r"\| RTO\s+\| (\S[^|]*?)\s+\| 1h 00m 00s \| met").group(1)
    assert table.endswith("s")
    rpo = sh.expect(r"\| RPO\s+\|\s*([^|]+?)\s*\| 15m 00s", since_send=True).group(1)
    # Impact 4 h ago minus the restore point; negative (shown as -3h …) before 14:00 UTC, when the most recent
    # 10:00 UTC is later than the impact start. Durations are shown truncated toward zero.
    seconds = ((now - timedelta(hours=4)) - point).total_seconds()
    expected_hours = int(seconds / 3600)
    sign = "-" if seconds < 0 else ""
    assert rpo.startswith(f"{sign}{abs(expected_hours)}h") or expected_hours == 0, rpo
    assert sh.close() == 0

    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    assert create_count(store, target="rag-engine-prod-pitr-r1") == 1
    kinds = [e.kind for e in store.events_for(incident_id="INC-1")]
    assert kinds.index("approval.refused") < kinds.index("approval.vote") < kinds.index("approval.granted")
    assert kinds.index("approval.granted") < kinds.index("step.started")
    assert "incident.restored" in kinds and kinds[-2:] == ["run.succeeded", "incident.impact"]
    refused = next(e for e in store.events_for(incident_id="INC-1") if e.kind == "approval.refused")
    assert refused.actor == "alice" and refused.data["reason"] == "self_approval"
    assert store.verify_audit()[1] is None


def test_non_approver_and_reject_change_nothing(tmp_path: Path) -> None:
    session = run_shell(tmp_path, "/dr restore database prod -2h\n:wait 30\n:as mallory\n:press 1\n"
                                  ":as carol\n:press 2\n:wait 30\n/dr status\n")
    assert "mallory is not an approver" in session.output or "not an approver" in session.output
    assert re.search(r"R-1 rejected by carol; nothing was changed", session.output)
    assert "R-1 database-pitr on prod: rejected" in session.output
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    assert create_count(store, target="rag-engine-prod-pitr-r1") == 0
    assert store.get_run("R-1").status.value == "rejected"  # type: ignore[union-attr]


def test_preflight_failure_ends_request_before_approval(tmp_path: Path) -> None:
    session = run_shell(tmp_path, "/dr restore database prod -1m\n:wait 30\n/dr status\n")
    assert "Pre-flight failed for R-1; nothing was changed." in session.output
    assert "latest restorable" in session.output.lower() or "restorable window" in session.output.lower()
    assert "[1] Approve" not in session.output, "no approval is requested after a failed pre-flight"
    assert "R-1 database-pitr on prod: failed" in session.output


def test_bad_commands_get_the_right_form_and_change_nothing(tmp_path: Path) -> None:
    session = run_shell(tmp_path, "/dr restore databse prod 10:00Z\n/dr restore database prod\n"
                                  "/dr restore database moon 10:00Z\n/dr restore database prod 25:99\n"
                                  ":press 7\n:as\n/dr status\n")
    out = session.output
    assert "databse" in out and "Usage: /dr restore database <env> <time>" in out
    assert "moon" in out and "prod" in out
    assert "25:99" in out
    assert "There is no button [7]" in out or "No buttons have been shown yet" in out
    assert "Usage: :as NAME" in out
    assert "No incident is open" in out
    assert session.code == 0
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    assert store.list_incidents() == []


def test_staging_needs_no_approval(tmp_path: Path) -> None:
    session = run_shell(tmp_path, "/dr restore database staging latest\n:wait 60\n")
    assert "Restore point: the latest restorable time." in session.output
    assert "[1] Approve" not in session.output
    assert "R-1 (database-pitr) finished successfully." in session.output


def test_pending_approval_survives_a_restart_and_is_pressed_from_status(tmp_path: Path) -> None:
    first = run_shell(tmp_path, "/dr failover dns prod\n:wait 30\n")
    assert "[1] Approve  [2] Reject" in first.output
    second = run_shell(tmp_path, "/dr status\n:as bob\n:press 1\n:wait 60\n", user="alice")
    assert "Resuming R-1 (dns-failover on prod, awaiting_approval)" in second.output
    assert "[1] Approve R-1" in second.output
    assert "Recorded: bob approved R-1" in second.output
    assert "R-1 (dns-failover) finished successfully." in second.output
