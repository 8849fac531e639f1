"""Every command of the grammar, end to end in `drbot shell` against the sandbox (not only the PITR story)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from runbooks.store import Store
from tests.shellrun import ShellProcess, run_shell

pytestmark = pytest.mark.slow


def test_incident_lifecycle_and_checklist(tmp_path: Path) -> None:
    sh = ShellProcess(tmp_path, user="alice")
    try:
        sh.send('/dr incident open "search returns stale documents" sev1 prod')
        sh.expect(r"INC-1 opened: search returns stale documents \(sev1, prod, tier critical: RTO target 1h")
        tick = sh.button("Immediate response: Acknowledge the page")
        sh.send(":as bob")
        sh.send(f":press {tick}")
        sh.expect(r"Ticked: Acknowledge the page so the escalation stops — by bob at \d{4}-")
        sh.send(f":press {tick}")
        sh.expect(r"was already ticked by bob")
        sh.send("/dr incident detected -20m")
        sh.expect(r"INC-1: detected at \S+Z \(from `-20m`\); the RTO clock starts there")
        sh.send("/dr incident detected 2h")
        sh.expect(r"2h")
        sh.send("/dr status")
        sh.expect(r"Checklist: 1/\d+ done")
        sh.expect(r"Open the incident channel or thread and post what is known \(due \d\d:\d\dZ\)")
        sh.expect(r"RTO budget 20m 0\ds of 1h 00m 00s \(3\d%\)")
        sh.send("/dr incident restored")
        sh.expect(r"INC-1: RTO 20m 0\ds \(target 1h 00m 00s, met\)")
        sh.send("/dr incident restored")
        sh.expect(r"already marked restored")
        sh.send("/dr incident resolve cache invalidated, documents re-indexed")
        sh.expect(r"INC-1 resolved\.")
        sh.send("/dr timeline csv")
        out = sh.expect(r"(?s)----- INC-1-timeline.csv -----\n(.*?)\n----- end of INC-1-timeline.csv -----",
                        timeout=30).group(1)
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0][:3] == ["seq", "time", "elapsed_seconds"]
        kinds = [r[6] for r in rows[1:]]
        assert kinds == ["incident.opened", "checklist.ticked", "incident.detected", "incident.restored",
                         "incident.resolved"]
        assert rows[4][2] == "1200" or rows[4][2].startswith("120"), "RTO measured from the corrected detection"
        sh.send("/dr timeline json")
        doc = sh.expect(r"(?s)----- INC-1-timeline.json -----\n(.*?)\n----- end of", timeout=30).group(1)
        parsed = json.loads(doc)
        assert parsed["schema"] == "drbot.incident/v1"
        assert parsed["incident"]["status"] == "resolved"
        assert any(item["done_by"] == "bob" for item in parsed["checklist"])
        sh.send("/dr incident resolve again")
        sh.expect(r"INC-1 is already resolved")
    finally:
        assert sh.close() == 0


SCRIPT = """\
/dr help
/dr help restore
/dr runbooks
/dr promote replica staging
:wait 60
/dr failover dns staging
:wait 60
/dr restore k8s staging latest
:wait 60
/dr restore vectors staging latest
:wait 60
/dr undelete objects staging docs/
:wait 90
/dr run backup-verification staging
:wait 90
/dr run backup-verification staging bogus=1
/dr failover region staging
:wait 90
/dr status
/dr timeline md
"""


def test_every_runbook_command_end_to_end(tmp_path: Path) -> None:
    session = run_shell(tmp_path, SCRIPT, speed=20000, timeout=300)
    out = session.output
    assert session.code == 0, session.stderr
    assert "/dr restore database <env> <time>" in out  # help is generated from the grammar
    for name in ("database-pitr", "region-failover", "accidental-deletion", "vectors-restore", "k8s-restore",
                 "backup-verification", "replica-promotion", "dns-failover"):
        assert name in out
    assert "No incident was open for staging, so drbot opened INC-1" in out
    finished = re.findall(r"(?m)^\d\d:\d\d:\d\dZ drbot\s+(R-\d+) \((\S+)\) finished successfully", out)
    assert [r[1] for r in finished] == ["replica-promotion", "dns-failover", "k8s-restore", "vectors-restore",
                                        "accidental-deletion", "backup-verification"]
    assert "backup-verification has no parameter 'bogus'" in out
    assert "Replica lag at promotion" in out
    assert re.search(r"Restore point recorded: \S+Z", out)
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    runs = store.runs_for(incident_id="INC-1")
    assert {r.runbook: r.status.value for r in runs}["backup-verification"] == "succeeded"
    failover = next(r for r in runs if r.runbook == "region-failover")
    # The DNS record already points at the DR target after dns-failover: pre-flight says so and stops.
    assert failover.status.value == "failed" and "already" in failover.reason
    assert len(store.list_incidents()) == 1, "every command attached to the one open incident"


def test_page_simulates_a_pagerduty_alert_through_the_webhook_path(tmp_path: Path) -> None:
    sh = ShellProcess(tmp_path, user="alice")
    try:
        sh.send(':page "Database CPU at 100%" NOPE')
        sh.expect(r"PagerDuty service 'NOPE' is not in drbot.yml \(routed: PSANDBOX, PSTAGING\)")
        sh.send(":page")
        sh.expect(r'Usage: :page "TITLE" \[SERVICE\]')
        sh.send(':page "Database CPU at 100%"')
        sh.expect(r"PagerDuty alert simulated for PSANDBOX: created → INC-1")
        sh.expect(r"Suggested runbooks for this service")
        ack = sh.button("Acknowledge in PagerDuty")
        sh.send(f":press {ack}")
        sh.expect(r"Acknowledging PagerDuty incident Q\w+ for alice")
        sh.expect(r"alice acknowledged PagerDuty incident Q\w+ from drbot")
        sh.send("/dr incident resolve fixed the runaway query")
        sh.expect(r"INC-1 resolved")
        sh.expect(r"Resolved PagerDuty incident Q\w+ with the note: fixed the runaway query")
        sh.send(':page "Staging disk full" PSTAGING')
        sh.expect(r"created → INC-2")
    finally:
        sh.close()
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    try:
        first = store.get_incident("INC-1")
        second = store.get_incident("INC-2")
        assert first is not None and first.status.value == "resolved" and first.opened_by == "PagerDuty"
        assert second is not None and second.environment == "staging"
        kinds = [e.kind for e in store.events_for(incident_id="INC-1")]
        assert kinds.count("pagerduty.triggered") == 1 and kinds.count("pagerduty.sent") == 2
    finally:
        store.close()


def test_a_drill_the_rto_table_and_the_rpo_table_offline(tmp_path: Path) -> None:
    """Issue 12, item 8: `drbot shell` shows a drill, `/dr rto` and `/dr rpo` on the sandbox."""
    sh = ShellProcess(tmp_path, user="alice")
    try:
        sh.send("/dr drill database-pitr staging time=latest")
        sh.expect(r"Drill INC-1 opened for it \(DRILL — no live resource is changed\)")
        sh.expect(r"Creates: database instance rag-engine-staging-drill-r1\.")
        sh.expect(r"Clean-up of R-1: everything it made is gone\.", timeout=120)
        sh.expect(r"Drill over: R-1 succeeded\.")
        sh.send("/dr rto")
        sh.expect(r"database-pitr\s+staging")
        sh.send("/dr rpo")
        sh.expect(r"RPO: 8 stores, 0 over target")
        sh.expect(r"• database of prod: newest recovery point .+ old \(latest restorable time")
        sh.send("/dr drill region-failover prod")
        sh.expect(r"region-failover")
    finally:
        sh.close()
