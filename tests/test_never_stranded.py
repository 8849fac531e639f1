"""Whatever is raised inside a run ends visible and decided, and nothing blocks the next request silently.

Faults come from the sandbox's own `failures:` injection (`crash: true` raises an unexpected exception, not a
provider error), from a drbot.yml without an optional setting, and from a catalog that lost a runbook while a run
waited for approval — the shapes they take in real use, with no patching of drbot's code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbos import DBOS

from integrations.sandbox.database import create_count
from integrations.sandbox.records import create_count as creates
from runbooks.catalog import Catalog, load_catalog
from runbooks.faults import describe, drbot_yml_path
from runbooks.replies import describe_buttons
from runbooks.templating import TemplateError
from tests.engine_harness import Harness, harness_fixture, sandbox_config

ERROR_ID = re.compile(r"[Ee]rror [0-9a-f]{8}")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


def _crash(at: str, action: str = "restore_pitr", resource: str = "database") -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["environments"]["prod"][resource]["failures"] = {
            action: {"at": at, "crash": True, "message": "boom: the SDK said something unexpected"}}
    return change


def _no_traceback(h: Harness) -> None:
    for event in h.recorder.events:
        assert "Traceback" not in event.text and 'File "' not in event.text, event.text


def _approve(h: Harness, count: int = 1) -> None:
    h.recorder.wait_for("approval.requested", count=count)
    assert h.press("approval.requested", "Approve", actor="bob").public


@pytest.mark.parametrize("at", ["plan", "preflight"])
def test_a_crash_before_any_change_fails_the_run_and_tells_the_requester(
        harness: Callable[..., Harness], at: str) -> None:
    h = harness(config=sandbox_config(c=_crash(at)))
    h.say("/dr restore database prod -2h")
    failed = h.recorder.wait_for("run.failed")
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "failed"
    assert "nothing was changed" in failed.text.lower() and ERROR_ID.search(failed.text), failed.text
    assert "SandboxCrash" in failed.text and "boom" in failed.text
    assert failed.data["tell"] == "alice", "the requester is told privately too"
    assert "/dr retry R-1" in failed.text
    _no_traceback(h)
    # The failed run blocks nothing: the same request goes ahead at once (the crash was injected once).
    reply = h.say("/dr restore database prod -2h")
    assert reply.public and reply.run_id == "R-2", reply.text
    _approve(h)
    h.recorder.wait_for("run.succeeded")


@pytest.mark.parametrize("at", ["start", "poll", "verify"])
def test_a_crash_after_approval_fails_the_step_and_pauses_for_a_decision(
        harness: Callable[..., Harness], at: str) -> None:
    h = harness(config=sandbox_config(c=_crash(at)))
    h.say("/dr restore database prod -2h")
    _approve(h)
    paused = h.recorder.wait_for("run.paused")
    step_failed = h.recorder.last("step.failed")
    assert "SandboxCrash" in step_failed.text and ERROR_ID.search(step_failed.text), step_failed.text
    assert h.engine.store.get_run("R-1").status.value == "paused"  # type: ignore[union-attr]
    assert {b.label for b in describe_buttons(paused)} >= {"Retry", "Skip", "Abort"}
    _no_traceback(h)
    assert h.press("run.paused", "Retry", actor="carol").public
    h.recorder.wait_for("run.succeeded")
    assert create_count(h.engine.store, target="rag-engine-prod-pitr-r1") == 1


def test_a_crash_in_a_later_step_pauses_before_the_cut_over(harness: Callable[..., Harness]) -> None:
    """The integrity check runs before the application is pointed at the restored data: if it cannot say the
    data is good, prod stays where it was and the run waits for a person."""
    h = harness(config=sandbox_config(c=_crash("start", action="integrity_check")))
    h.say("/dr restore database prod -2h")
    _approve(h)
    h.recorder.wait_for("run.paused")
    steps = {s.step_id: s.status.value for s in h.engine.store.steps_for(run_id="R-1")}
    assert steps == {"restore": "succeeded", "integrity": "failed"}, steps
    assert creates(h.engine.store, action="kubernetes.set_env", target="rag-engine-api") == 0
    assert h.press("run.paused", "Abort", actor="bob").public
    h.recorder.wait_for("run.failed")
    assert creates(h.engine.store, action="kubernetes.set_env", target="rag-engine-api") == 0


def _without_settings(data: dict[str, Any]) -> None:
    for env in data["environments"].values():
        env.pop("settings", None)


def test_without_an_integrity_query_the_restore_runs_and_says_the_data_was_not_checked(
        harness: Callable[..., Harness]) -> None:
    h = harness(config=sandbox_config(s=_without_settings))
    h.say("/dr restore database prod -2h")
    planned = h.recorder.wait_for("run.planned")
    integrity = next(s for s in planned.data["plan"]["steps"] if s["id"] == "integrity")
    assert "environments.prod.settings.integrity_query" in integrity["skipped"]
    _approve(h)
    h.recorder.wait_for("run.succeeded")
    skipped = h.recorder.last("step.skipped")
    assert "environments.prod.settings.integrity_query" in skipped.text
    steps = {s.step_id: s.status.value for s in h.engine.store.steps_for(run_id="R-1")}
    assert steps["integrity"] == "skipped" and steps["cutover"] == "succeeded"
    md = h.engine.export_text(incident_id="INC-1", fmt="md")
    assert "NOT DONE: Check the restored data (R-1) did not run" in md
    assert "integrity_query" in h.engine.export_text(incident_id="INC-1", fmt="json")


def test_a_runbook_the_environment_cannot_run_is_refused_before_a_run_exists(
        harness: Callable[..., Harness]) -> None:
    h = harness(config=sandbox_config(s=_without_settings))
    reply = h.say("/dr run backup-verification prod")
    assert not reply.public
    assert "needs environments.prod.settings.integrity_query" in reply.text
    assert "SELECT count(*) FROM documents" in reply.text, "the sentence gives an example value"
    assert h.engine.store.list_incidents() == [], "a refusal changes nothing"
    refused = h.say("/dr failover region prod")
    assert "environments.prod.settings.dr_replicas" in refused.text and not refused.public


def test_orphaned_runs_are_settled_and_never_block_a_request(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr failover dns prod")
    h.recorder.wait_for("approval.requested")
    # Its workflow is cancelled behind drbot's back (DBOS's own admin API): nothing moves R-1 any more.
    DBOS.cancel_workflow(h.engine.workflow_id("R-1"))
    assert h.engine.workflow_status("R-1") == "CANCELLED"
    reply = h.say("/dr failover dns prod")
    assert reply.public and reply.run_id == "R-2", reply.text
    failed = next(e for e in h.recorder.events if e.kind == "run.failed" and e.run_id == "R-1")
    assert "cancelled in DBOS" in failed.text and ERROR_ID.search(failed.text)
    assert h.engine.store.get_run("R-1").status.value == "failed"  # type: ignore[union-attr]
    assert all(r.status == "cancelled" for r in h.engine.store.requests_for(run_id="R-1"))


def test_the_reconciler_settles_a_run_whose_workflow_never_started(harness: Callable[..., Harness]) -> None:
    from datetime import timedelta

    h = harness()
    h.say("/dr incident open Database is slow sev2 prod")
    long_ago = h.engine.clock.now() - timedelta(minutes=5)
    # What a crash between accepting the request and launching the workflow leaves behind.
    h.engine.store.create_run(incident_id="INC-1", runbook="dns-failover", environment="prod",
                              command="/dr failover dns prod", requested_by="alice", requested_at=long_ago,
                              params={})
    assert h.engine.reconcile() == ["R-1"]
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "failed" and "never started" in run.reason
    assert h.engine.reconcile() == [], "settled once"
    young = h.engine.store.create_run(incident_id="INC-1", runbook="dns-failover", environment="prod",
                                      command="/dr failover dns prod", requested_by="alice",
                                      requested_at=h.engine.clock.now(), params={})
    assert h.engine.reconcile() == [], f"{young.id} is being launched, not orphaned"


def test_a_fault_between_steps_settles_the_run(tmp_path: Path) -> None:
    """A run waits for approval; drbot restarts with a catalog that no longer has its runbook (an organisation's
    runbook directory changed). The workflow cannot go on: the run ends failed and says so, not frozen."""
    first = Harness(tmp_path)
    first.say("/dr failover dns prod")
    first.recorder.wait_for("approval.requested")
    first.close()
    full = load_catalog()
    smaller = Catalog(runbooks={k: v for k, v in full.runbooks.items() if k != "dns-failover"},
                      checklist=full.checklist)
    second = Harness(tmp_path, catalog=smaller)
    try:
        assert second.engine.press(action="approve", value="AR-1", actor="bob").public
        failed = second.recorder.wait_for("run.failed")
        assert "internal error" in failed.text and ERROR_ID.search(failed.text), failed.text
        assert second.engine.store.get_run("R-1").status.value == "failed"  # type: ignore[union-attr]
    finally:
        second.close()


# ------------------------------------------------------------------------------------------- /dr cancel, retry


def test_cancel_and_retry_by_text(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr restore database prod 2h ago")
    h.recorder.wait_for("approval.requested")
    status = h.say("/dr status")
    assert "`/dr cancel R-1`" in status.text
    before = h.engine.store.verify_audit()[0]
    refused = h.say("/dr cancel R-1", actor="mallory")
    assert not refused.public and "Only alice" in refused.text
    assert h.engine.store.verify_audit()[0] == before + 1, "the refused cancel is audited"
    early = h.say("/dr retry R-1")
    assert not early.public and "still awaiting_approval" in early.text
    assert h.say("/dr cancel r-1", actor="carol").public
    h.recorder.wait_for("run.cancelled")
    assert "`/dr retry R-1`" in h.say("/dr status").text

    again = h.say("/dr retry R-1", actor="bob")
    assert again.public and again.run_id == "R-2", again.text
    first, second = h.engine.store.get_run("R-1"), h.engine.store.get_run("R-2")
    assert first is not None and second is not None
    assert second.params == first.params, "the same resolved restore point, not `2h ago` read again"
    assert second.requested_by == "bob" and second.command == first.command
    h.recorder.wait_for("approval.requested", count=2)
    own = h.press("approval.requested", "Approve", actor="bob")
    assert not own.public, "a retry is approved afresh, by someone other than whoever retried it"
    assert h.press("approval.requested", "Approve", actor="alice").public
    h.recorder.wait_for("run.succeeded")
    assert "retry of R-1" in h.recorder.last("run.requested").text


def test_cancel_grammar_refuses_what_is_not_a_run(harness: Callable[..., Harness]) -> None:
    h = harness()
    from runbooks.errors import GrammarError

    with pytest.raises(GrammarError, match="runs are named R-<n>"):
        h.engine.parse("/dr cancel INC-1")
    assert "no run R-9" in h.say("/dr retry R-9").text


# ------------------------------------------------------------------------------------------- the words


def test_a_missing_setting_is_named_as_a_drbot_yml_path() -> None:
    exc = TemplateError("{{ env.settings.integrity_query }}: env.settings.integrity_query is not set",
                        path="env.settings.integrity_query")
    said = describe(exc, environment="prod")
    assert said.startswith("environments.prod.settings.integrity_query is not set in drbot.yml")
    assert drbot_yml_path("env.database.replica.instance", environment="dr") == \
        "environments.dr.database.replica.instance"


def test_a_foreign_exception_is_one_redacted_line() -> None:
    exc = RuntimeError("connect to postgresql://drbot:hunter2@db.internal/app failed\nsecond line\n" + "x" * 900)
    said = describe(exc)
    assert said.startswith("unexpected RuntimeError inside drbot: ")
    assert "hunter2" not in said and "second line" not in said and len(said) < 400


def test_why_orphaned_reads_every_dbos_ending() -> None:
    from datetime import UTC, datetime, timedelta

    from runbooks.models import Run, RunStatus
    from runbooks.reconcile import OTHER_VERSION, why_orphaned

    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    run = Run(id="R-1", incident_id="INC-1", runbook="dns-failover", environment="prod",
              command="/dr failover dns prod", requested_by="alice", requested_at=now - timedelta(minutes=5),
              status=RunStatus.RUNNING)
    assert why_orphaned(run, workflow_status="PENDING", now=now) is None
    assert why_orphaned(run, workflow_status="ENQUEUED", now=now) is None
    for status, words in [("ERROR", "ended with an error"), ("CANCELLED", "cancelled in DBOS"),
                          ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", "restarted too many times"),
                          (OTHER_VERSION, "older drbot"), (None, "never started")]:
        said = why_orphaned(run, workflow_status=status, now=now)
        assert said is not None and words in said, (status, said)
    assert why_orphaned(run.model_copy(update={"status": RunStatus.SUCCEEDED}), workflow_status="ERROR",
                        now=now) is None, "a finished run is nobody's orphan"


def test_in_an_environment_without_approvals_the_requester_decides_a_failed_step(
        harness: Callable[..., Harness]) -> None:
    """staging needs no approval; a failed step must not wait 7 days for an approver nobody can be."""
    def fail(data: dict[str, Any]) -> None:
        data["environments"]["staging"]["kubernetes"]["failures"] = {
            "velero_restore": {"at": "start", "message": "BackupNotFound: no such backup"}}

    h = harness(config=sandbox_config(f=fail))
    h.say("/dr restore k8s staging latest")
    h.recorder.wait_for("run.paused")
    assert h.press("run.paused", "Retry", actor="alice").public, "the requester may decide in staging"
    h.recorder.wait_for("run.succeeded")


def test_a_star_cannot_be_configured_as_an_approver() -> None:
    from bot.config import build_config
    from runbooks.errors import ConfigError

    data = sandbox_config()
    data["environments"]["prod"]["approvals"]["approvers"] = ["*"]
    with pytest.raises(ConfigError, match=r"approvals\.approvers: `\*` is not an approver"):
        build_config(data, source="drbot.yml")


def test_cancelling_a_run_whose_workflow_never_started_cancels_it(harness: Callable[..., Harness]) -> None:
    """A crash between accepting a request and launching its workflow leaves a run nothing moves; `/dr cancel`
    ends it at once, cancelled (not an internal error, not failed a minute later by the reconciler)."""
    h = harness()
    h.say("/dr incident open Database is slow sev2 prod")
    h.engine.store.create_run(incident_id="INC-1", runbook="dns-failover", environment="prod",
                              command="/dr failover dns prod", requested_by="alice",
                              requested_at=h.engine.clock.now(), params={})
    reply = h.say("/dr cancel R-1")
    assert reply.public and "had not started" in reply.text, reply.text
    assert h.engine.store.get_run("R-1").status.value == "cancelled"  # type: ignore[union-attr]
    assert h.say("/dr failover dns prod").run_id == "R-2", "nothing blocks the next request"


def test_a_run_left_without_a_workflow_by_an_earlier_process_is_settled_at_start(tmp_path: Path) -> None:
    first = Harness(tmp_path)
    first.say("/dr incident open Database is slow sev2 prod")
    first.engine.store.create_run(incident_id="INC-1", runbook="dns-failover", environment="prod",
                                  command="/dr failover dns prod", requested_by="alice",
                                  requested_at=first.engine.clock.now(), params={})
    first.close()
    second = Harness(tmp_path)  # seconds later: no 30 s launch grace for what an earlier process left
    try:
        failed = second.recorder.wait_for("run.failed", timeout=10)
        assert failed.run_id == "R-1" and "never started" in failed.text
        assert second.say("/dr failover dns prod").run_id == "R-2"
    finally:
        second.close()
