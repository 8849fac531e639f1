"""Before approval, a plan shows how long the recovery is likely to take against the RTO budget left, and what
data it loses against the RPO target (issue 12, items 4 and 5): pure rules first, then through the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbooks.models import Incident, Plan, PlannedStep, Run, RunStatus, Tier
from runbooks.outlook import data_loss, forecast, human, percentile, recovery_time, typical_duration
from tests.engine_harness import Harness, harness_fixture

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CRITICAL = Tier(name="critical", rpo=timedelta(minutes=15), rto=timedelta(hours=1))
MIN = timedelta(minutes=1)


def incident(**changes: object) -> Incident:
    base = dict(id="INC-1", number=1, title="t", environment="prod", tier="critical", opened_by="alice",
                opened_at=NOW - 10 * MIN, detected_at=NOW - 8 * MIN)
    return Incident.model_validate({**base, **changes})


def plan(*steps: PlannedStep) -> Plan:
    return Plan(runbook="database-pitr", runbook_version=2, environment="prod", steps=steps)


def step(action: str, *, details: dict[str, object] | None = None, params: dict[str, object] | None = None,
         skipped: str = "") -> PlannedStep:
    return PlannedStep(id=action.split(".")[1], title=action, action=action, provider="sandbox",
                       params=params or {}, guarded=True, details=details or {}, skipped=skipped)


def test_percentiles_and_human_durations() -> None:
    assert percentile([10, 20, 30, 40], 50) == 25 and percentile([10, 20, 30, 40], 90) == pytest.approx(37)
    assert percentile([7], 90) == 7
    with pytest.raises(ValueError):
        percentile([], 50)
    assert [human(timedelta(seconds=s)) for s in (45, 90, 1080, 3600, 7500, 3 * 86400)] == \
        ["45 s", "2 min", "18 min", "1 h", "2 h 05 min", "3 d"]


def test_a_forecast_from_past_runs_names_its_samples_and_the_budget_left() -> None:
    past = [timedelta(minutes=m) for m in (30, 18, 20, 22, 26, 19, 21, 24, 25, 23, 40)]  # 11: the newest 10 count
    made = forecast(past, typical=timedelta(minutes=25), target=timedelta(hours=1), elapsed=8 * MIN)
    assert made.samples == 10 and made.low == timedelta(minutes=22.5)
    assert made.sentence() == "Expected 22–27 min (p50–p90 of 10 past runs); 52 min of the 1 h RTO budget left."
    assert made.data() == {"p50_seconds": 1350, "p90_seconds": 1644, "samples": 10, "rto_target_seconds": 3600,
                           "budget_left_seconds": 3120}


def test_with_no_history_the_forecast_says_so_and_uses_typical_durations() -> None:
    made = forecast([], typical=timedelta(minutes=22), target=timedelta(hours=1), elapsed=50 * MIN)
    assert made.samples == 0 and made.low == made.high == timedelta(minutes=22)
    assert made.sentence() == ("Expected about 22 min (no past run of this runbook here: the providers' typical "
                               "durations); 10 min of the 1 h RTO budget left — it may not fit.")
    over = forecast([], typical=MIN, target=timedelta(hours=1), elapsed=timedelta(hours=1, minutes=5))
    assert over.sentence().endswith("the 1 h RTO budget is already spent (5 min over).")


def test_typical_duration_adds_up_the_steps_that_will_run() -> None:
    shown = plan(step("database.restore_pitr"), step("kubernetes.set_env"),
                 step("database.integrity_check", skipped="no integrity_query"))
    assert typical_duration(shown) == timedelta(minutes=22)


def test_data_loss_of_a_restore_point_is_measured_from_the_impact_start_or_now() -> None:
    restore = plan(step("database.restore_pitr", details={"restore_time": "2026-12-03T11:40:00Z"}))
    known = data_loss(restore, incident=incident(impact_start_at=NOW - 10 * MIN), tier=CRITICAL, now=NOW)
    assert known is not None and known.loss == 10 * MIN
    assert known.sentence() == ("Data loss: 10 min — restore point 2026-12-03T11:40:00Z, impact began "
                                "2026-12-03T11:50:00Z; within the 15 min RPO target.")
    unknown = data_loss(restore, incident=incident(), tier=CRITICAL, now=NOW)
    assert unknown is not None and unknown.loss == 20 * MIN
    assert unknown.sentence() == ("Data loss: 20 min — restore point 2026-12-03T11:40:00Z, now "
                                  "2026-12-03T12:00:00Z; 5 min over the 15 min RPO target.")
    latest = plan(step("database.restore_pitr", params={"restore_time": "latest"}))
    assert data_loss(latest, incident=incident(), tier=CRITICAL, now=NOW) is None, "unknown until it starts"


def test_a_promotion_shows_the_replica_lag_and_an_undelete_what_comes_back() -> None:
    promote = plan(step("database.check_replica", details={"replica_lag_seconds": 4}),
                   step("database.promote_replica"))
    lag = data_loss(promote, incident=incident(), tier=CRITICAL, now=NOW)
    assert lag is not None and lag.sentence() == ("Data loss: about 4 s (the replica's lag) — within the 15 min "
                                                  "RPO target.")
    undelete = plan(step("objects.undelete", details={"delete_markers": 12}))
    back = data_loss(undelete, incident=incident(), tier=CRITICAL, now=NOW)
    assert back is not None and back.sentence() == ("What comes back: 12 deleted objects (their newest versions); "
                                                    "nothing current is overwritten.")
    assert data_loss(plan(step("dns.switch")), incident=incident(), tier=CRITICAL, now=NOW) is None


def test_recovery_time_is_request_to_end_of_a_successful_run() -> None:
    run = Run(id="R-1", incident_id="INC-1", runbook="database-pitr", environment="prod", command="/dr …",
              requested_by="alice", requested_at=NOW - 25 * MIN, status=RunStatus.SUCCEEDED, finished_at=NOW)
    assert recovery_time(run) == 25 * MIN
    assert recovery_time(run.model_copy(update={"status": RunStatus.FAILED})) is None


# ------------------------------------------------------------------------------------------- through the engine


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


def test_the_second_plan_forecasts_from_the_first_runs_measured_time(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.say("/dr incident open Orders corrupted sev1 prod")
    h.say("/dr incident impact -20m")
    h.say("/dr restore database prod -30m")
    first = h.recorder.wait_for("run.planned")
    assert "no past run of this runbook here" in first.text
    assert "Data loss: 10 min — restore point" in first.text and "within the 15 min RPO target" in first.text
    assert first.data["outlook"]["data_loss"]["loss_seconds"] == 600
    assert first.data["outlook"]["forecast"]["samples"] == 0
    h.recorder.wait_for("approval.requested")
    assert h.press("approval.requested", "Approve", actor="bob").public
    h.recorder.wait_for("run.succeeded")
    took = recovery_time(h.engine.store.get_run("R-1"))  # type: ignore[arg-type]
    assert took is not None

    h.say("/dr restore database prod -25m")
    second = h.recorder.wait_for("run.planned", count=2)
    assert second.data["outlook"]["forecast"]["samples"] == 1
    assert second.data["outlook"]["forecast"]["p50_seconds"] == round(took.total_seconds())
    assert "(p50–p90 of 1 past run)" in second.text and "of the 1 h RTO budget left" in second.text
