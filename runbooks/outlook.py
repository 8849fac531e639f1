"""What a plan's approver should know before approving, beside the steps: how long the recovery is likely to take
against the RTO budget left, and what data it will lose against the RPO target.

- **Forecast.** From this runbook's past successful runs (drills included) in the same environment: p50–p90 of
  their recovery times (request → finished), and how many there were. With no history it says so and adds up the
  typical real-world durations of the plan's actions (`runbooks.actions.ActionInfo.typical`).
- **Data loss.** A point-in-time restore loses what was written between its restore point and the moment the
  damage began (the incident's impact start; now when that is unknown). A promotion loses the replica's lag. An
  undelete brings back a count of objects. Each is compared with the tier's RPO target.

Pure: the caller reads the history and the incident; nothing here touches the store or the clock. The outlook is
shown with the plan but is not part of it (the plan hash covers what will be done, not what is expected).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbooks.actions import ACTIONS
from runbooks.models import Incident, Plan, Run, RunStatus, Tier
from runbooks.timeline import as_utc, iso, parse_iso

__all__ = ["DataLoss", "Forecast", "Outlook", "data_loss", "forecast", "human", "outlook", "percentile",
           "recovery_time", "typical_duration"]

HISTORY = 10
"""How many of the latest successful runs the forecast reads."""


def human(td: timedelta) -> str:
    """A duration as a person says it when planning: `45 s`, `18 min`, `1 h`, `2 h 05 min`, `3 d`."""
    total = int(round(abs(td.total_seconds())))
    if total < 60:
        return f"{total} s"
    minutes = int(round(total / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" if rest == 0 else f"{hours} h {rest:02d} min"
    return f"{round(hours / 24)} d"


def _span(low: timedelta, high: timedelta) -> str:
    a, b = human(low), human(high)
    if a == b:
        return a
    if a.endswith(" min") and b.endswith(" min"):
        return f"{a[:-4]}–{b}"
    return f"{a} – {b}"


def recovery_time(run: Run) -> timedelta | None:
    """How long a successful run took from its request to its end (the service restored, or a drill's last
    verification); None for a run that did not succeed."""
    if run.status is not RunStatus.SUCCEEDED or run.finished_at is None:
        return None
    return as_utc(run.finished_at) - as_utc(run.requested_at)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Forecast:
    low: timedelta
    """p50 of the past runs (or the typical duration when there are none)."""
    high: timedelta
    """p90."""
    samples: int
    """Past runs the figures come from; 0 means they are the providers' typical durations."""
    target: timedelta | None = None
    """The tier's RTO target."""
    left: timedelta | None = None
    """What is left of it in this incident now (negative: overrun)."""

    def sentence(self) -> str:
        if self.samples:
            expected = (f"expected {_span(self.low, self.high)} "
                        f"(p50–p90 of {self.samples} past run{'' if self.samples == 1 else 's'})")
        else:
            expected = (f"expected about {human(self.low)} (no past run of this runbook here: the providers' "
                        f"typical durations)")
        if self.target is None or self.left is None:
            return expected[0].upper() + expected[1:] + "."
        if self.left <= timedelta(0):
            budget = f"the {human(self.target)} RTO budget is already spent ({human(-self.left)} over)"
        else:
            budget = f"{human(self.left)} of the {human(self.target)} RTO budget left"
            if self.high > self.left:
                budget += " — it may not fit"
        return f"{expected[0].upper()}{expected[1:]}; {budget}."

    def data(self) -> dict[str, Any]:
        return {"p50_seconds": round(self.low.total_seconds()), "p90_seconds": round(self.high.total_seconds()),
                "samples": self.samples,
                "rto_target_seconds": None if self.target is None else round(self.target.total_seconds()),
                "budget_left_seconds": None if self.left is None else round(self.left.total_seconds())}


def forecast(past: Sequence[timedelta], *, typical: timedelta, target: timedelta | None = None,
             elapsed: timedelta | None = None) -> Forecast:
    """`past`: recovery times of earlier runs (the newest `HISTORY` are used); `elapsed`: how much of the RTO
    budget the incident has used (detected → now)."""
    recent = [p.total_seconds() for p in list(past)[-HISTORY:]]
    if recent:
        low, high = timedelta(seconds=percentile(recent, 50)), timedelta(seconds=percentile(recent, 90))
    else:
        low = high = typical
    left = target - elapsed if target is not None and elapsed is not None else None
    return Forecast(low=low, high=high, samples=len(recent), target=target, left=left)


@dataclass(frozen=True)
class DataLoss:
    kind: str
    """`restore_point` (a restore to a point in time), `replica_lag` (a promotion) or `objects` (an undelete)."""
    loss: timedelta | None
    target: timedelta
    restore_point: datetime | None = None
    since: datetime | None = None
    measured_from: str = ""
    """`impact start` or `now`."""
    objects: int | None = None

    def sentence(self) -> str:
        if self.kind == "objects":
            count = self.objects or 0
            return (f"What comes back: {count} deleted object{'' if count == 1 else 's'} "
                    f"(their newest versions); nothing current is overwritten.")
        assert self.loss is not None
        verdict = (f"within the {human(self.target)} RPO target" if self.loss <= self.target
                   else f"{human(self.loss - self.target)} over the {human(self.target)} RPO target")
        if self.kind == "replica_lag":
            return f"Data loss: about {human(self.loss)} (the replica's lag) — {verdict}."
        assert self.restore_point is not None and self.since is not None
        return (f"Data loss: {human(self.loss)} — restore point {iso(self.restore_point)}, {self.measured_from} "
                f"{iso(self.since)}; {verdict}.")

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "loss_seconds": None if self.loss is None else round(self.loss.total_seconds()),
                "rpo_target_seconds": round(self.target.total_seconds()),
                "restore_point": iso(self.restore_point) if self.restore_point else None,
                "since": iso(self.since) if self.since else None, "measured_from": self.measured_from,
                "objects": self.objects}


def data_loss(plan: Plan, *, incident: Incident, tier: Tier, now: datetime) -> DataLoss | None:
    """What the plan will lose (or bring back), read from its steps' provider details; None when it neither
    restores to a point nor promotes nor undeletes."""
    for step in plan.steps:
        if step.skipped:
            continue
        details = step.details
        if step.action.endswith("restore_pitr") or step.action.endswith("restore_latest_backup"):
            point = details.get("restore_time") or step.params.get("restore_time")
            try:
                moment = parse_iso(str(point)) if point else None
            except ValueError:  # "latest": the provider resolves it at the start
                moment = None
            if moment is None:
                continue
            since, measured = ((as_utc(incident.impact_start_at), "impact began")
                               if incident.impact_start_at is not None else (now, "now"))
            return DataLoss(kind="restore_point", loss=max(since - moment, timedelta(0)), target=tier.rpo,
                            restore_point=moment, since=since, measured_from=measured)
        lag = details.get("replica_lag_seconds")
        if (step.action.endswith(("promote_replica", "check_replica"))
                and isinstance(lag, (int, float)) and not isinstance(lag, bool)):
            return DataLoss(kind="replica_lag", loss=timedelta(seconds=float(lag)), target=tier.rpo)
        if step.action.endswith(("undelete", "copy_versions")):  # a drill's copy brings back the same keys
            count = details.get("keys_to_restore", details.get("delete_markers"))
            if isinstance(count, int):
                return DataLoss(kind="objects", loss=None, target=tier.rpo, objects=count)
    return None


def typical_duration(plan: Plan) -> timedelta:
    """The plan's steps' typical real-world durations, added up (waves run one after another)."""
    return timedelta(seconds=sum(ACTIONS[s.action].typical for s in plan.steps
                                 if not s.skipped and s.action in ACTIONS))


@dataclass(frozen=True)
class Outlook:
    forecast: Forecast
    loss: DataLoss | None

    def lines(self) -> list[str]:
        return [self.forecast.sentence(), *([self.loss.sentence()] if self.loss is not None else [])]

    def data(self) -> dict[str, Any]:
        return {"forecast": self.forecast.data(), "data_loss": self.loss.data() if self.loss else None}


def outlook(plan: Plan, *, past: Sequence[timedelta], incident: Incident, tier: Tier, now: datetime) -> Outlook:
    elapsed = as_utc(incident.restored_at or now) - as_utc(incident.detected_at)
    return Outlook(forecast=forecast(past, typical=typical_duration(plan), target=tier.rto, elapsed=elapsed),
                   loss=data_loss(plan, incident=incident, tier=tier, now=now))
