"""Drills (issue 12): `/dr drill` runs a runbook's drill variant against isolated targets, in a drill incident of its
own; clean-up steps delete what it made whatever the ending; the ledger and `drbot drills leaks` find what is left.
Engine in this process on the sandbox; the cloud (moto) and kill -9 versions are in test_drills_processes.py."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from bot.config import SANDBOX_CONFIG
from runbooks.actions import ACTIONS
from runbooks.catalog import load_catalog, load_runbook
from runbooks.drills import LEDGER, Ledger, drill_variant
from runbooks.errors import CommandError, ConfigError
from runbooks.models import EventKind, IncidentStatus, RunStatus
from runbooks.settings import DrillPolicy
from runbooks.sqldb import add_missing_columns
from runbooks.store import Store
from runbooks.store.tables import metadata
from tests.engine_harness import Harness, harness_fixture

ROOT = Path(__file__).resolve().parents[1]
LIVE = "rag-engine-staging"
DRILL_INSTANCE = "rag-engine-staging-drill-r1"

harness = pytest.fixture(harness_fixture)


def config(**drills: Any) -> dict[str, Any]:
    data = copy.deepcopy(SANDBOX_CONFIG)
    if drills:
        data["drills"] = drills
    return data


def with_failure(action: str, resource: str = "database", env: str = "staging", **failure: Any) -> dict[str, Any]:
    data = config()
    data["environments"][env][resource]["failures"] = {action: {"message": f"injected {action} failure", **failure}}
    return data


def instances(h: Harness) -> dict[str, dict[str, Any]]:
    return h.engine.store.list_state(kind="sandbox.rds")


def present(h: Harness) -> set[str]:
    """Sandbox instances that exist now (a deleted one keeps its record, with its deletion in its phases)."""
    return {name for name, record in instances(h).items() if not record.get("deletion")}


def materialise(h: Harness, env: str = "staging") -> None:
    """The sandbox makes its world on first sight: look at each live thing once (read-only plans)."""
    resources = h.engine.settings.environment(env).resources

    def provider(name: str) -> Any:
        return h.engine.providers(environment=env, resource=name, config=resources[name].settings()
                                  | {"provider": resources[name].provider})

    provider("database").plan(action="backup_age", params={"source": LIVE})
    provider("kubernetes").plan(action="check_deployment", params={"deployment": "rag-engine-api",
                                                                   "namespace": "rag-engine-staging"})
    provider("dns").plan(action="health_check", params={"record": "api.staging.rag-engine.com"})


def world(h: Harness) -> dict[str, Any]:
    """What a drill must never change: the live database, the app deployment, DNS."""
    return {kind: h.engine.store.list_state(kind=kind) for kind in ("sandbox.k8s", "sandbox.route53")} | {
        "live": {k: v for k, v in instances(h).items() if "-drill-" not in k}}


def cleanup_event(h: Harness) -> Any:
    return h.recorder.wait_for(EventKind.RUN_CLEANUP, timeout=60)


# --------------------------------------------------------------------------------------------- the happy drill


def test_a_drill_restores_into_a_scratch_instance_changes_nothing_live_and_deletes_what_it_made(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    materialise(h)
    before = world(h)
    assert before["live"] and before["sandbox.k8s"] and before["sandbox.route53"]
    reply = h.say("/dr drill database-pitr staging time=latest")
    assert "Drill INC-1 opened" in reply.text and "DRILL — no live resource is changed" in reply.text
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED
    incident = h.engine.store.get_incident("INC-1")
    assert incident is not None and incident.drill and incident.status is IncidentStatus.RESOLVED
    assert incident.severity == "drill" and h.engine.store.checklist(incident_id="INC-1") == []

    planned = h.recorder.last(EventKind.RUN_PLANNED)
    assert planned.text.startswith("Drill plan for R-1")
    assert "DRILL — no live resource is changed." in planned.text
    assert f"Creates: database instance {DRILL_INSTANCE}." in planned.text
    assert f"Deletes at the end, whatever happens (success, failure, cancel, a crash): Delete the drill's scratch " \
           f"instance ({DRILL_INSTANCE})." in planned.text
    plan = planned.data["plan"]
    assert plan["drill"] is True and [s["action"] for s in plan["steps"]] == [
        "database.restore_pitr", "database.integrity_check", "kubernetes.check_deployment", "builtin.report"]
    assert plan["steps"][0]["params"]["target"] == DRILL_INSTANCE
    assert [s["id"] for s in plan["cleanup"]] == ["delete_drill_instance"]

    drill_made = [name for name in instances(h) if "-drill-" in name]
    assert drill_made == [DRILL_INSTANCE], "exactly one drill instance"
    assert DRILL_INSTANCE not in present(h), "and it is gone"
    assert world(h) == before, "the live instance, the deployment and DNS are untouched"
    report = cleanup_event(h)
    assert report.text.startswith("Clean-up of R-1: everything it made is gone.")
    assert report.data["resources"][0]["name"] == DRILL_INSTANCE and report.data["left"] == 0
    assert Ledger(h.engine.store).leaks(now=h.engine.clock.now() + timedelta(days=1)) == []
    kinds = h.recorder.kinds()
    assert EventKind.INCIDENT_RESTORED not in kinds, "a drill never marks anything restored"
    assert kinds.index(EventKind.RUN_SUCCEEDED) < kinds.index(EventKind.RUN_CLEANUP) < len(kinds)
    assert h.recorder.last(EventKind.INCIDENT_RESOLVED).text == "Drill over: R-1 succeeded."

    table = h.say("/dr rto").text
    row = next(line for line in table.splitlines() if "database-pitr" in line and "staging" in line)
    assert "not tested" not in row and "stale" not in row, row


def test_a_drill_never_joins_a_real_incident_and_a_real_request_never_joins_a_drill(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr incident open Real outage sev1 staging")
    h.say("/dr drill backup-verification staging", incident_id="INC-1")
    h.settle()
    assert h.engine.store.get_run("R-1").incident_id == "INC-2"  # type: ignore[union-attr]
    assert [r.id for r in h.engine.store.runs_for(incident_id="INC-1")] == []
    reply = h.say("/dr restore database staging latest")
    assert reply.incident_id == "INC-1", "the real request goes to the real incident"
    h.settle()


# --------------------------------------------------------------------------------------------- endings


def test_a_failing_integrity_check_still_cleans_up(harness: Callable[..., Harness]) -> None:
    h = harness(config=with_failure("integrity_check", at="start", times=5))
    h.say("/dr drill database-pitr staging time=latest")
    paused = h.recorder.wait_for(EventKind.RUN_PAUSED, timeout=60)
    assert paused.data["step_id"] == "integrity" and "injected integrity_check failure" in paused.text
    h.settle()
    h.press(EventKind.RUN_PAUSED, "Abort", actor="bob")
    report = cleanup_event(h)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.FAILED  # type: ignore[union-attr]
    assert report.data["left"] == 0 and DRILL_INSTANCE not in present(h)
    assert h.recorder.last(EventKind.INCIDENT_RESOLVED).text == "Drill over: R-1 failed."


def test_a_cancelled_drill_still_cleans_up(harness: Callable[..., Harness]) -> None:
    h = harness(config=with_failure("integrity_check", at="start", times=5))
    h.say("/dr drill database-pitr staging time=latest")
    h.recorder.wait_for(EventKind.RUN_PAUSED, timeout=60)
    reply = h.say("/dr cancel R-1", actor="alice")
    assert "ancel" in reply.text
    report = cleanup_event(h)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.CANCELLED  # type: ignore[union-attr]
    assert report.data["left"] == 0 and DRILL_INSTANCE not in present(h)


def test_a_drill_cancelled_before_approval_made_nothing_and_has_nothing_to_clean(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr drill database-pitr prod time=latest", actor="alice")  # prod: one approval from bob or carol
    h.recorder.wait_for(EventKind.APPROVAL_REQUESTED)
    assert "ancel" in h.say("/dr cancel R-1", actor="alice").text
    h.settle()
    assert EventKind.RUN_CLEANUP not in h.recorder.kinds() and h.engine.store.list_state(kind=LEDGER) == {}
    assert h.engine.store.get_incident("INC-1").status is IncidentStatus.RESOLVED  # type: ignore[union-attr]


def test_a_clean_up_that_fails_is_reported_and_the_resource_is_a_leak_after_its_ttl(
        harness: Callable[..., Harness], tmp_path: Path) -> None:
    h = harness(config=with_failure("delete_instance", at="start", times=5))
    h.say("/dr drill database-pitr staging time=latest")
    report = cleanup_event(h)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert report.text.startswith("Clean-up of R-1: 1 of 1 resource(s) it made are still present.")
    assert f"`{DRILL_INSTANCE}` (sandbox): *still present*" in report.text
    assert DRILL_INSTANCE in present(h)
    ledger = Ledger(h.engine.store)
    assert ledger.leaks(now=h.engine.clock.now()) == [], "not yet past the TTL"
    later = h.engine.clock.now() + timedelta(hours=7)
    [leak] = ledger.leaks(now=later)
    assert (leak.name, leak.run_id, leak.kind) == (DRILL_INSTANCE, "R-1", "database instance")

    # `drbot drills leaks` (a TTL of 0 makes it a leak at once) and the /dr status line
    data = config(ttl="0s")
    (tmp_path / "drbot.yml").write_text(yaml.safe_dump(data))
    env = {"DRBOT_DATABASE_URL": h.settings.drbot_database_url, "DRBOT_CONFIG": str(tmp_path / "drbot.yml"),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bot.cli", "drills", "leaks"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "1 drill resource(s) still present past the 0s TTL" in out.stdout and DRILL_INSTANCE in out.stdout
    out = subprocess.run([sys.executable, "-m", "bot.cli", "drills", "leaks", "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 1 and json.loads(out.stdout)[0]["name"] == DRILL_INSTANCE
    h.engine.settings.drills = DrillPolicy(ttl=timedelta(0))
    h.say("/dr incident open something else sev3 staging")
    status = h.say("/dr status").text
    assert f":warning: 1 drill resource(s) still present past the 0s TTL: database instance {DRILL_INSTANCE} " \
           f"(R-1) — `drbot drills leaks` lists them." in status


def test_drbot_drills_leaks_says_so_when_there_are_none(tmp_path: Path) -> None:
    env = {"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bot.cli", "drills", "leaks"], capture_output=True, text=True,
                         cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("No drill resource is left past its TTL (6h")


# --------------------------------------------------------------------------------------------- approvals


def test_drills_follow_the_environments_approval_rule_by_default(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr drill database-pitr prod time=latest")
    h.recorder.wait_for(EventKind.APPROVAL_REQUESTED)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.AWAITING_APPROVAL  # type: ignore[union-attr]


def test_drills_approvals_replaces_the_environments_rule_for_drills_only(harness: Callable[..., Harness]) -> None:
    free = harness(config=config(approvals={"required": 0}))
    free.say("/dr drill database-pitr prod time=latest")
    free.settle()
    assert free.engine.store.get_run("R-1").status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert EventKind.APPROVAL_REQUESTED not in free.recorder.kinds()
    real = free.say("/dr restore database prod latest")
    free.recorder.wait_for(EventKind.APPROVAL_REQUESTED)
    free.settle()
    assert free.engine.store.get_run(real.run_id or "").status is RunStatus.AWAITING_APPROVAL  # type: ignore


# --------------------------------------------------------------------------------------------- refusals


def test_a_runbook_that_cannot_be_drilled_is_refused_with_the_reason(harness: Callable[..., Harness]) -> None:
    h = harness()
    reply = h.say("/dr drill region-failover prod")
    assert ("region-failover cannot be drilled safely: it promotes the DR replica, scales the DR cluster and moves "
            "DNS" in reply.text and "drill its parts instead: replica-promotion and dns-failover." in reply.text
            and not reply.public)
    assert "There is no runbook called 'databse-pitr'" in h.say("/dr drill databse-pitr prod").text
    assert "database-pitr has no parameter 'tme'" in h.say("/dr drill database-pitr prod tme=1").text
    assert "Usage: /dr drill database-pitr" in h.say("/dr drill database-pitr prod tme=1").text
    assert h.engine.store.list_incidents() == [], "a refusal changes nothing"


def test_the_catalog_refuses_drill_blocks_that_would_touch_live_resources(tmp_path: Path) -> None:
    base = yaml.safe_load((ROOT / "runbooks/catalog/database-pitr.yml").read_text())

    def problems(change: Callable[[dict[str, Any]], None]) -> str:
        data = copy.deepcopy(base)
        change(data)
        path = tmp_path / "database-pitr.yml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as caught:
            load_runbook(path)
        return str(caught.value)

    assert "drill: steps.cutover: kubernetes.set_env would change a live resource in a drill" in problems(
        lambda d: d["drill"]["steps"].pop("cutover"))
    assert "drill.steps.restor: no step called 'restor'" in problems(
        lambda d: d["drill"]["steps"].__setitem__("restor", {"title": "x"}))
    assert "cleanup[0].params.instance: a clean-up step cannot read a step's outputs" in problems(
        lambda d: d["drill"]["cleanup"][0]["params"].__setitem__("instance", "{{ steps.restore.outputs.instance }}"))
    assert "drill: steps[0].creates: no clean-up step deletes it; add one with removes: [restore]" in problems(
        lambda d: d["drill"].__setitem__("cleanup", []))
    assert "cleanup[0].removes[0]: no step called 'integrity' declares creates:" in problems(
        lambda d: d["drill"]["cleanup"][0].__setitem__("removes", ["integrity"]))
    refused = copy.deepcopy(base)
    refused["drill"] = {"refuse": "it points production at the copy"}
    path = tmp_path / "database-pitr.yml"
    path.write_text(yaml.safe_dump(refused))
    with pytest.raises(CommandError, match="cannot be drilled safely: it points production at the copy"):
        drill_variant(load_runbook(path))


def test_every_built_in_drill_changes_only_what_it_creates() -> None:
    catalog = load_catalog()
    drilled = [r for r in catalog.runbooks.values() if r.drill is not None and not r.drill.refuse]
    assert {r.name for r in drilled} >= {"database-pitr", "backup-verification"}
    for runbook in drilled:
        variant = drill_variant(runbook)
        assert variant.drilled and not variant.recovery and not any(s.marks_restored for s in variant.steps)
        creators = {s.id for s in variant.steps if s.creates is not None}
        assert creators <= {t for c in variant.cleanup for t in c.removes}, runbook.name
        assert all(s.creates is not None or not ACTIONS[s.action].mutates for s in variant.steps), runbook.name


# --------------------------------------------------------------------------------------------- upgrade


def test_a_database_made_before_drills_gets_the_new_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    h_store = Store(url)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    incident, _, _ = h_store.create_incident(title="t", severity="sev2", environment="prod", tier="critical",
                                             opened_by="a", opened_at=now, detected_at=now, event_text="opened")
    h_store.create_run(incident_id=incident.id, runbook="database-pitr", environment="prod", command="/dr …",
                       requested_by="a", requested_at=now, params={})
    h_store.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the runs table as drbot made it before drills
        conn.execute(sa.text("ALTER TABLE runs DROP COLUMN drill"))
    with engine.begin() as conn:
        assert add_missing_columns(conn, metadata) == ["runs.drill"]
        assert add_missing_columns(conn, metadata) == []
    engine.dispose()
    store = Store(url)  # and drbot reads the old run as a real one
    assert store.get_run("R-1").drill is False  # type: ignore[union-attr]
    store.close()


def test_an_object_clean_up_reaches_only_one_drills_own_prefix() -> None:
    from runbooks.drills import drill_prefix_problem

    assert drill_prefix_problem("b", "drill-r7/") == ""
    for live in ("docs/", "drill-", "drill-/", "", "drills/r7/", "drill-r7"):
        assert drill_prefix_problem("b", live).startswith(f"Refusing to delete under `{live}` in bucket `b`"), live
