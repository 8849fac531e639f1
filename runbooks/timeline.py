"""RTO, RPO and the live RTO budget, computed from stored timestamps so that nobody has to guess them.

Everything here is a pure function of an `IncidentRecord` (or an `Incident` and its `Tier`) plus an explicit
`now`: the engine, the Slack thread, the shell and the exports must all show the same numbers for the same
moment, and tests must be able to pin that moment. The exports themselves live in `runbooks.export`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runbooks.models import Incident, IncidentRecord, IncidentStatus, Tier

__all__ = [
    "THRESHOLDS",
    "Budget",
    "as_utc",
    "budget",
    "crossed_thresholds",
    "format_duration",
    "iso",
    "parse_iso",
    "parse_duration",
    "rpo",
    "rto",
    "seconds",
]

THRESHOLDS: tuple[int, ...] = (50, 75, 100)
"""RTO budget percentages at which the thread is warned, once each."""

_DURATION = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?",
    re.IGNORECASE,
)
_DURATION_FORM = "a whole number and a unit, largest unit first: 90s, 15m, 1h, 1h30m, 7d"


# --------------------------------------------------------------------------------------------- durations


def parse_duration(text: str) -> timedelta:
    """Read the durations people write in drbot.yml and commands (`15m`, `1h30m`, `7d`).

    Bare numbers are refused on purpose: `30` could be seconds or minutes, and a wrong guess here becomes a
    wrong approval expiry or RTO target.
    """
    cleaned = text.strip()
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None or not any(match.groupdict().values()):
        raise ValueError(f"not a duration: {text!r}; write {_DURATION_FORM}")
    parts = {unit: int(value) if value else 0 for unit, value in match.groupdict().items()}
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def format_duration(td: timedelta) -> str:
    """Render a duration the way an on-call engineer reads a stopwatch: `1h 02m 03s`, `4m 10s`, `12s`.

    Whole seconds, truncated, so that the figure never claims more time passed than did. Negative durations
    (a restore point after the impact start, say) keep their sign rather than hiding the anomaly.
    """
    total = int(td.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h {minutes:02d}m {seconds:02d}s"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m {seconds:02d}s"
    if minutes:
        return f"{sign}{minutes}m {seconds:02d}s"
    return f"{sign}{seconds}s"


def seconds(td: timedelta) -> int:
    """Whole seconds, truncated like `format_duration`, so that JSON, CSV and Markdown agree."""
    return int(td.total_seconds())


# --------------------------------------------------------------------------------------------- times


def as_utc(dt: datetime) -> datetime:
    """Make arithmetic between stored and live times safe.

    SQLite hands datetimes back without tzinfo even though drbot only ever writes UTC, so a naive value is
    read as UTC instead of raising a TypeError in the middle of an incident.
    """
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def iso(dt: datetime, *, fraction: bool = False) -> str:
    """`2026-11-24T10:00:00Z`: the one spelling of a time in every message, export and cloud request.
    `fraction=True` keeps the microseconds when there are some (the sandbox's records: fake clocks have them)."""
    moment = as_utc(dt).replace(tzinfo=None)  # `isoformat` is several times faster than `strftime`
    return moment.isoformat(timespec="microseconds" if fraction and moment.microsecond else "seconds") + "Z"


def parse_iso(text: str) -> datetime:
    """The inverse of `iso` (also accepts offsets and fractions), always UTC-aware."""
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


# --------------------------------------------------------------------------------------------- RTO / RPO


def rto(record: IncidentRecord) -> timedelta | None:
    """Restored minus detected; None until the service is marked restored."""
    incident = record.incident
    if incident.restored_at is None:
        return None
    return as_utc(incident.restored_at) - as_utc(incident.detected_at)


def rpo(record: IncidentRecord) -> tuple[timedelta | None, str]:
    """The data-loss window and a sentence saying how it was obtained.

    The sentence matters as much as the number: a post-mortem reader must know whether the RPO is measured
    (impact start or replica lag) or an upper bound (detected time stood in for an unknown impact start).
    """
    incident = record.incident
    if record.replica_lag is not None:
        return record.replica_lag, "replica lag at promotion"
    if record.restore_point is None:
        return None, "no restore point recorded"
    point = as_utc(record.restore_point)
    if incident.impact_start_at is not None:
        start = as_utc(incident.impact_start_at)
        basis = f"impact start ({iso(start)}) minus restore point ({iso(point)})"
    else:
        start = as_utc(incident.detected_at)
        basis = (
            "impact start not recorded; detected time used, an upper bound: "
            f"detected ({iso(start)}) minus restore point ({iso(point)})"
        )
    value = start - point
    if value < timedelta(0):
        basis += "; the restore point is after that time, so the restored data may include the damage"
    return value, basis


# --------------------------------------------------------------------------------------------- budget


@dataclass(frozen=True, slots=True)
class Budget:
    """How much of the tier's RTO has been spent.

    `remaining` is signed: negative once over, so a surface can say "over by 5m" without recomputing.
    """

    elapsed: timedelta
    target: timedelta
    percent: float
    remaining: timedelta
    over: bool


def budget(*, incident: Incident, tier: Tier, now: datetime) -> Budget:
    """The RTO clock: detected until restored, or until `now` while the service is still down.

    Elapsed never goes below zero, so a detected time set slightly in the future (clock skew, a typo being
    corrected) shows an untouched budget instead of a negative percentage.
    """
    end = incident.restored_at if incident.restored_at is not None else now
    elapsed = max(as_utc(end) - as_utc(incident.detected_at), timedelta(0))
    target = tier.rto
    # A zero target (a misconfigured tier) is spent from the first second rather than dividing by zero.
    percent = elapsed / target * 100.0 if target > timedelta(0) else 100.0
    return Budget(elapsed=elapsed, target=target, percent=percent, remaining=target - elapsed, over=elapsed > target)


def crossed_thresholds(*, incident: Incident, tier: Tier, now: datetime, already: Collection[int]) -> list[int]:
    """Warning thresholds newly crossed, lowest first, so that each warning is posted exactly once.

    Once the service is restored (or the incident closed without a restore, a false alarm) the clock has
    stopped and nothing more is worth a warning, even if the engine missed a tick while it was down.
    """
    if incident.restored_at is not None or incident.status is not IncidentStatus.OPEN:
        return []
    percent = budget(incident=incident, tier=tier, now=now).percent
    return [threshold for threshold in THRESHOLDS if percent >= threshold and threshold not in already]
