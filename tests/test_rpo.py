"""The RPO compliance monitor and the drill schedules (issue 12, items 6 and 7), on the sandbox: a stale store is
announced once when it breaches and once when it recovers, the gauges carry the ages, failed backups are counted
once, `/dr rpo` and `drbot rpo` print the table, and a schedule fires its drill once per cron time."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import SANDBOX_CONFIG, build_config
from bot.slack.metrics import Metrics
from runbooks.errors import ConfigError
from runbooks.models import EventKind, IncidentStatus, RunStatus
from runbooks.notices import NOTICES
from runbooks.rpo import rpo_table, targets
from tests.engine_harness import Harness, harness_fixture

ROOT = Path(__file__).resolve().parents[1]
harness = pytest.fixture(harness_fixture)


class Said:
    """A surface that shows notices (as Slack's notifier and the shell do)."""

    def __init__(self) -> None:
        self.notices: list[str] = []

    def notify(self, event: Any) -> None:
        pass

    def announce(self, notice: Any) -> None:
        self.notices.append(notice.text)


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SANDBOX_CONFIG)
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def said(h: Harness) -> Said:
    surface = Said()
    h.engine.notifiers.append(surface)
    return surface


def set_stale(h: Harness, env: str, resource: str, stale: str | None) -> None:
    """Change one resource's sandbox `stale:` in the running engine, as an edited drbot.yml would on restart."""
    data = config()
    if stale is not None:
        data["environments"][env][resource]["stale"] = stale
    h.engine.settings.environments[env] = build_config(data, source="test").environments[env]  # type: ignore[index]
    h.engine.providers._cache.pop((env, resource), None)  # type: ignore[attr-defined]  # built afresh, as on restart


def metric(text: str, name: str, **labels: str) -> float:
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    line = next(line for line in text.splitlines() if line.startswith(wanted + " "))
    return float(line.split()[-1])


# --------------------------------------------------------------------------------------------- the monitor


def test_a_stale_store_is_announced_once_when_it_breaches_and_once_when_it_recovers(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    surface = said(h)
    assert all(r.state == "ok" for r in h.engine.rpo.scan()), "the sandbox starts compliant"
    assert surface.notices == []

    set_stale(h, "staging", "database", "3h")
    readings = {r.target.key: r for r in h.engine.rpo.scan()}
    breach = readings["staging/database"]
    assert breach.state == "breach" and breach.age is not None and breach.age > timedelta(hours=3)
    assert [n for n in surface.notices if "RPO breach" in n] == [
        f":rotating_light: RPO breach — {breach.sentence()}."]
    assert "database of staging: newest recovery point 3h 05m" in surface.notices[0]
    assert "over its 1h 00m 00s RPO; likely cause: backups stopped 3h 00m 00s ago" in surface.notices[0]

    h.engine.rpo.scan()  # still stale: said once only
    assert len(surface.notices) == 1
    text = Metrics(h.engine).render()
    age = metric(text, "drbot_recovery_point_age_seconds", environment="staging", store="database")
    assert 3 * 3600 + 300 <= age <= 3 * 3600 + 400
    assert metric(text, "drbot_rpo_target_seconds", environment="staging", store="database") == 3600
    assert metric(text, "drbot_recovery_point_age_seconds", environment="prod", store="database") < 400

    set_stale(h, "staging", "database", None)
    h.engine.rpo.scan()
    h.engine.rpo.scan()
    assert len(surface.notices) == 2
    assert surface.notices[1].startswith(":white_check_mark: RPO back within target — database of staging:")
    assert "(in breach since " in surface.notices[1]
    stored = h.engine.store.list_state(kind=NOTICES)
    assert len(stored) == 2, "both notices are stored, so a surface that was down can catch up"


def test_failed_backups_are_counted_once_each(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.engine.rpo.scan()
    h.engine.rpo.scan()
    text = Metrics(h.engine).render()
    # the sandbox's newest Velero backup PartiallyFailed: one failure, however many scans see it
    assert metric(text, "drbot_backup_failures_total", environment="prod", store="kubernetes") == 1
    assert metric(text, "drbot_backup_failures_total", environment="prod", store="database") == 0


def test_a_store_that_cannot_be_read_is_unknown_not_a_breach(harness: Callable[..., Harness]) -> None:
    data = config()
    data["environments"]["staging"]["database"]["failures"] = {
        "recovery_point": {"at": "start", "message": "AccessDenied: rds:DescribeDBInstances", "times": 1}}
    h = harness(config=data)
    surface = said(h)
    reading = next(r for r in h.engine.rpo.scan() if r.target.key == "staging/database")
    assert reading.state == "unknown" and reading.error == "AccessDenied: rds:DescribeDBInstances"
    assert surface.notices == []
    assert reading.sentence() == "database of staging: could not be read — AccessDenied: rds:DescribeDBInstances"
    assert '"state": "unknown"' in rpo_table([reading], "json")


def test_rpo_targets_are_the_tiers_unless_a_store_sets_its_own() -> None:
    settings = build_config(config(), source="test")
    from runbooks.settings import EngineSettings

    found = {t.key: t.rpo for t in targets(EngineSettings(environments=settings.environments, tiers=settings.tiers))}
    assert found["prod/database"] == timedelta(minutes=15) and found["staging/database"] == timedelta(hours=1)
    assert found["prod/vectors"] == timedelta(hours=24), "the sandbox's nightly snapshots have their own target"
    assert "prod/dns" not in found


def test_dr_rpo_and_drbot_rpo_print_the_table(harness: Callable[..., Harness], tmp_path: Path) -> None:
    h = harness()
    reply = h.say("/dr rpo")
    assert reply.text.startswith("RPO: 8 stores, 0 over target") and not reply.public
    assert "• database of prod: newest recovery point" in reply.text
    table = rpo_table(h.engine.rpo.read(), "md")
    assert table.splitlines()[0] == "| Environment | Store | RPO target | Newest recovery point | Age | State | Notes |"

    data = config()
    data["environments"]["staging"]["objects"]["versioning"] = "Suspended"
    (tmp_path / "drbot.yml").write_text(yaml.safe_dump(data))
    env = {"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "DRBOT_CONFIG": str(tmp_path / "drbot.yml"),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bot.cli", "rpo", "--format", "json"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 1, "a store over its target"
    rows = {(r["environment"], r["store"]): r for r in json.loads(out.stdout)}
    suspended = rows[("staging", "objects")]
    assert suspended["state"] == "breach" and suspended["newest"] is None
    assert suspended["cause"].startswith("versioning is suspended on bucket rag-engine-documents-staging")
    out = subprocess.run([sys.executable, "-m", "bot.cli", "rpo", "--format", "csv"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.stdout.splitlines()[0] == ("environment,store,tier,rpo_target,newest_recovery_point,age,state,what,"
                                          "cause")


def test_rpo_check_every_is_read_from_drbot_yml_and_refused_below_a_minute() -> None:
    assert build_config(config(rpo={"check_every": "1h"}), source="t").rpo_every == timedelta(hours=1)
    assert build_config(config(), source="t").rpo_every == timedelta(minutes=15)
    with pytest.raises(ConfigError, match="rpo.check_every: at least 1m"):
        build_config(config(rpo={"check_every": "30s"}), source="t")


def test_the_monitor_is_due_every_check_every(harness: Callable[..., Harness]) -> None:
    h = harness()
    assert h.engine.rpo.due(every=timedelta(minutes=15))
    assert h.engine.ticks.rpo() == 8, "the first tick scans"
    assert h.engine.ticks.rpo() == 0, "the next one waits for check_every"


# --------------------------------------------------------------------------------------------- schedules


MONTHLY = {"monthly-backup-check": {"cron": "0 3 1 * *", "drill": "backup-verification staging"}}


def test_schedules_are_checked_when_drbot_yml_is_read() -> None:
    settings = build_config(config(schedules=MONTHLY), source="t")
    schedule = settings.schedules["monthly-backup-check"]
    assert (schedule.runbook, schedule.environment, schedule.cron) == ("backup-verification", "staging", "0 3 1 * *")
    with pytest.raises(ConfigError, match=r"schedules.x.cron: '0 3 \* \*' is not a five-field cron expression"):
        build_config(config(schedules={"x": {"cron": "0 3 * *", "drill": "backup-verification staging"}}), source="t")
    with pytest.raises(ConfigError, match="schedules.x.drill: unknown environment 'stagin'"):
        build_config(config(schedules={"x": {"cron": "0 3 1 * *", "drill": "backup-verification stagin"}}),
                     source="t")


def test_a_schedule_fires_its_drill_once_per_cron_time(harness: Callable[..., Harness]) -> None:
    h = harness(config=config(schedules=MONTHLY))
    surface = said(h)
    first = datetime(2026, 12, 1, 3, 0, 20, tzinfo=UTC)
    assert h.engine.scheduler.fire_due(at=datetime(2026, 11, 30, 23, 0, tzinfo=UTC)) == []
    assert h.engine.scheduler.fire_due(at=first) == ["R-1"]
    h.engine.runtime.launch("R-1")  # as the minute tick's workflow does
    assert h.engine.scheduler.fire_due(at=first + timedelta(minutes=1)) == [], "once per cron time"
    assert h.engine.scheduler.fire_due(at=first + timedelta(hours=5)) == [], "a late tick: already fired"
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.requested_by == "schedule:monthly-backup-check"
    assert run.status is RunStatus.SUCCEEDED and run.command == "/dr drill backup-verification staging"
    assert surface.notices == [f":white_check_mark: Scheduled drill monthly-backup-check passed: backup-verification "
                               f"on staging (R-1, {run.incident_id}) in "
                               + surface.notices[0].rsplit(" in ", 1)[1]]
    assert h.engine.scheduler.fire_due(at=datetime(2027, 1, 1, 9, 30, tzinfo=UTC)) == [], \
        "more than 6 h late: skipped"


def test_a_failed_scheduled_drill_opens_an_incident_with_the_failure(harness: Callable[..., Harness]) -> None:
    data = config(schedules=MONTHLY)
    data["environments"]["staging"]["database"]["failures"] = {
        "restore_latest_backup": {"at": "preflight", "message": "no automated backup found", "times": 1}}
    h = harness(config=data)
    surface = said(h)
    assert h.engine.scheduler.fire_due(at=datetime(2026, 12, 1, 3, 0, 5, tzinfo=UTC)) == ["R-1"]
    h.engine.runtime.launch("R-1")
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.FAILED  # type: ignore[union-attr]
    [notice] = surface.notices
    assert notice.startswith(":x: Scheduled drill monthly-backup-check failed — R-1 ended failed: pre-flight failed")
    real = [i for i in h.engine.store.list_incidents() if not i.drill]
    assert len(real) == 1 and real[0].status is IncidentStatus.OPEN
    assert real[0].title == "Scheduled drill monthly-backup-check failed: backup-verification on staging"
    events = h.engine.store.events_for(incident_id=real[0].id)
    assert any(e.kind == EventKind.RUN_NOTICE and "no automated backup found" in e.text for e in events)


def test_the_example_config_schedules_the_monthly_backup_verification() -> None:
    example = yaml.safe_load((ROOT / "drbot.example.yml").read_text())
    schedules = build_config(example, source="drbot.example.yml").schedules
    assert any(s.runbook == "backup-verification" and s.cron.split()[2] == "1" for s in schedules.values())


@pytest.mark.slow
def test_the_leaders_minute_tick_scans_and_fires_schedules_by_itself(harness: Callable[..., Harness]) -> None:
    """DBOS's schedule runs `minute_tick` once a minute: no call from the test, only time passing."""
    h = harness(config=config(schedules={"every-minute": {"cron": "* * * * *",
                                                          "drill": "backup-verification staging"}}))
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and h.engine.store.get_run("R-1") is None:
        time.sleep(0.5)
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.requested_by == "schedule:every-minute", "the tick started the drill"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(h.engine.rpo.kept()) < 8:  # the tick scans after starting drills
        time.sleep(0.2)
    assert len(h.engine.rpo.kept()) == 8, "and scanned every store"
    h.settle()
    fired = h.engine.store.list_state(kind="schedule.fired")
    runs = [r for i in h.engine.store.list_incidents() for r in h.engine.store.runs_for(incident_id=i.id)]
    assert len(runs) == len(fired), "one drill per cron time"
