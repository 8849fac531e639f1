"""Time on the sandbox's simulated clock: record stamps, phase timelines and the durations people read.

Why pure functions of the clock: an operation stores absolute phase times, so its status at any moment is
computed, never stepped — `poll` stays read-only and a restarted drbot sees the same status as the one that died.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from integrations import common
from integrations.sandbox.records import PROVIDER_KIND
from runbooks.timeline import iso, parse_iso


def stamp(moment: datetime) -> str:
    """A sandbox record's time: `runbooks.timeline.iso`, keeping sub-seconds when there are some (fake clocks)."""
    return iso(moment, fraction=True)


def to_time(value: Any, *, name: str) -> datetime:
    """`integrations.common.to_time`, refused in the sandbox's name."""
    return common.to_time(value, name=name, provider=PROVIDER_KIND)


def whole_seconds(moment: datetime, *, up: bool = False) -> datetime:
    """Cloud APIs report restorable bounds to the second; round inward so the bound itself is valid."""
    trimmed = moment.replace(microsecond=0)
    return trimmed + timedelta(seconds=1) if up and trimmed != moment else trimmed


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_at(phases: Sequence[Sequence[str]], now: datetime) -> str:
    """The last phase that has begun; phases are `[status, iso time]` in chronological order."""
    current = phases[0][0] if phases else "unknown"
    for name, at in phases:
        if parse_iso(at) <= now:
            current = name
    return current


def first_time(phases: Sequence[Sequence[str]], status: str) -> datetime | None:
    for name, at in phases:
        if name == status:
            return parse_iso(at)
    return None


@dataclass(frozen=True)
class Timeline:
    """Absolute phase times of one operation, already divided by `speed`."""

    started_at: datetime
    finishes_at: datetime
    phases: list[list[str]]
    real_seconds: float

