"""The recovery-time table (issue 12, item 3): every scenario's RTO target against its measured drills and real
runs, from the store — the rules, the three formats, `/dr rto` through the engine and `drbot rto` on its database."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbooks.models import Run, RunStatus
from runbooks.recovery_times import is_drill, render, row
from tests.engine_harness import Harness, harness_fixture

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


def run(number: int, *, minutes: float, days_ago: float, drill: bool = False,
        status: RunStatus = RunStatus.SUCCEEDED) -> Run:
    end = NOW - timedelta(days=days_ago)
    return Run(id=f"R-{number}", incident_id="INC-1", runbook="database-pitr", environment="prod",
               command=("/dr drill database-pitr prod" if drill else "/dr restore database prod 10:00Z"),
               requested_by="alice", requested_at=end - timedelta(minutes=minutes), status=status, finished_at=end)


def table_row(runs: list[Run]) -> object:
    return row(runbook="database-pitr", title="Restore the database to a point in time", environment="prod",
               tier="critical", target=timedelta(hours=1), runs=runs, now=NOW)


def test_a_row_keeps_the_last_drill_and_incident_apart_and_spreads_the_last_ten() -> None:
    runs = [run(n, minutes=10 + n, days_ago=40 - n) for n in range(1, 12)]  # R-11 is the newest real run
    runs += [run(20, minutes=30, days_ago=5, drill=True), run(21, minutes=99, days_ago=1, status=RunStatus.FAILED)]
    found = table_row(runs)
    assert found.last_drill is not None and found.last_drill.run_id == "R-20"  # type: ignore[attr-defined]
    assert found.last_drill.took == timedelta(minutes=30)  # type: ignore[attr-defined]
    assert found.last_incident.run_id == "R-11"  # type: ignore[attr-defined]
    assert found.samples == 10 and found.state == "tested"  # type: ignore[attr-defined]
    assert found.p50 == timedelta(minutes=17.5)  # type: ignore[attr-defined]  # R-3…R-11 (13–21 min) and the drill (30)
    assert is_drill(runs[-2]) and not is_drill(runs[0])


def test_never_drilled_is_not_tested_and_an_old_drill_is_stale() -> None:
    assert table_row([run(1, minutes=20, days_ago=1)]).state == "not tested"  # type: ignore[attr-defined]
    assert table_row([run(1, minutes=20, days_ago=91, drill=True)]).state == "stale"  # type: ignore[attr-defined]
    nothing = table_row([])
    assert nothing.p50 is None and nothing.samples == 0  # type: ignore[attr-defined]


def test_the_three_formats_say_the_same() -> None:
    found = [table_row([run(1, minutes=22, days_ago=2, drill=True), run(2, minutes=70, days_ago=1)])]
    md = render(found, fmt="md", now=NOW)  # type: ignore[arg-type]
    assert "| Restore the database to a point in time (`database-pitr`) | prod | 1 h (critical) | 2026-12-01: " \
           "22 min (R-1) | 2026-12-02: 1 h 10 min (R-2) | 46 min / 1 h 05 min (2 runs) ⚠ over target | tested |" in md
    data = json.loads(render(found, fmt="json", now=NOW))  # type: ignore[arg-type]
    assert data["schema"] == "drbot.rto/1" and data["rows"][0]["last_drill"] == {
        "at": "2026-12-01T12:00:00Z", "seconds": 1320, "run": "R-1"}
    assert data["rows"][0]["within_target"] is False and data["rows"][0]["p90_seconds"] == 3912
    [header, line] = list(csv.reader(io.StringIO(render(found, fmt="csv", now=NOW))))  # type: ignore[arg-type]
    assert dict(zip(header, line, strict=True))["last_incident_seconds"] == "4200"
    with pytest.raises(ValueError, match="use md, json or csv"):
        render(found, fmt="html", now=NOW)  # type: ignore[arg-type]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


def test_dr_rto_and_drbot_rto_show_a_runs_measured_time(harness: Callable[..., Harness], tmp_path: Path) -> None:
    h = harness()
    before = h.say("/dr rto")
    assert not before.public and "database-pitr        prod     1 h     —" in before.text
    h.say("/dr restore database prod -30m")
    h.recorder.wait_for("approval.requested")
    assert h.press("approval.requested", "Approve", actor="bob").public
    h.recorder.wait_for("run.succeeded")
    h.settle()
    finished = h.engine.store.get_run("R-1")
    assert finished is not None and finished.finished_at is not None
    took = round((finished.finished_at - finished.requested_at).total_seconds())
    after = h.say("/dr rto")
    line = next(x for x in after.text.splitlines() if x.startswith("database-pitr") and " prod " in x)
    assert "not tested" in line and "—" in line.split("prod", 1)[1][:30], line

    env = {k: v for k, v in os.environ.items() if not k.startswith("DRBOT_")}
    env.update({"DRBOT_DATABASE_URL": h.settings.drbot_database_url, "PYTHONPATH": str(ROOT)})
    printed = subprocess.run([sys.executable, "-m", "bot.cli", "rto", "--format", "json"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    rows = {(r["runbook"], r["environment"]): r for r in json.loads(printed.stdout)["rows"]}
    pitr = rows[("database-pitr", "prod")]
    assert pitr["last_incident"]["run"] == "R-1" and pitr["last_incident"]["seconds"] == took
    assert pitr["samples"] == 1 and pitr["state"] == "not tested" and pitr["rto_target_seconds"] == 3600


def test_metrics_export_each_scenarios_last_drill(harness: Callable[..., Harness]) -> None:
    from bot.slack.metrics import Metrics

    h = harness()
    assert "drbot_last_drill_rto_seconds{" not in Metrics(h.engine).render()
    store = h.engine.store
    h.say("/dr incident open Drill sev3 prod")  # a drill run as `/dr drill` (issue 12, item 1) will store it
    drill = store.create_run(incident_id="INC-1", runbook="database-pitr", environment="prod",
                             command="/dr drill database-pitr prod", requested_by="alice", requested_at=NOW,
                             params={})
    store.update_run(drill.id, status=RunStatus.SUCCEEDED, finished_at=NOW + timedelta(minutes=21))
    text = Metrics(h.engine).render()
    assert 'drbot_last_drill_rto_seconds{environment="prod",runbook="database-pitr"} 1260' in text


def test_metrics_export_each_stores_rpo_target(harness: Callable[..., Harness]) -> None:
    from bot.slack.metrics import Metrics

    text = Metrics(harness().engine).render()
    assert 'drbot_rpo_target_seconds{environment="prod",store="database"} 900' in text  # critical: 15 min
    assert 'drbot_rpo_target_seconds{environment="staging",store="database"} 3600' in text  # standard: 1 h
    assert 'drbot_rpo_target_seconds{environment="prod",store="vectors"} 86400' in text  # its own rpo: 24h (nightly)
    assert 'store="dns"' not in text and 'store="pagerduty"' not in text
