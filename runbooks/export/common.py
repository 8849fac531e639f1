"""What the three exports share: the schema name, event order, short forms of hashes, times and offsets, the
steps that did not run, and the JSON fallback for free-form values."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from runbooks.models import Event, EventKind, IncidentRecord
from runbooks.timeline import format_duration, iso

__all__ = ["CSV_HEADER", "FORMATS", "SCHEMA", "ListTimeline", "Timeline", "TimelineEntry", "json_default", "not_done",
           "plus", "short", "timeline_of", "when"]

SCHEMA = "drbot.incident/v1"
FORMATS: tuple[str, ...] = ("md", "json", "csv")
CSV_HEADER: tuple[str, ...] = ("seq", "time", "elapsed_seconds", "incident", "run", "actor", "kind", "text")
SHORT_HASH = 12


class TimelineEntry(Protocol):
    """What an export reads of an event: an `Event`, or the store's lighter row of one."""

    @property
    def seq(self) -> int: ...
    @property
    def incident_id(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


class Timeline(Protocol):
    """An incident's events in append order, iterable more than once: a list in memory, or the store's reader
    that fetches a page at a time (`Store.timeline`), so a 100,000-event incident is never held whole."""

    def __iter__(self) -> Iterator[TimelineEntry]: ...
    def __len__(self) -> int: ...
    def of_kind(self, kind: str) -> Sequence[TimelineEntry]: ...


class ListTimeline:
    """The events a record holds, in the store's append order (a stable sort keeps the input order of events
    that were never numbered)."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = sorted(events, key=lambda event: event.seq)

    def __iter__(self) -> Iterator[TimelineEntry]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def of_kind(self, kind: str) -> Sequence[TimelineEntry]:
        return [event for event in self.events if event.kind == kind]


def timeline_of(record: IncidentRecord, timeline: Timeline | None) -> Timeline:
    return timeline if timeline is not None else ListTimeline(record.events)


def short(plan_hash: str) -> str:
    return plan_hash[:SHORT_HASH] if plan_hash else "—"


def when(dt: datetime | None, missing: str = "—") -> str:
    return iso(dt) if dt is not None else missing


def plus(td: timedelta) -> str:
    return format_duration(td) if td < timedelta(0) else "+" + format_duration(td)


def not_done(timeline: Timeline) -> list[str]:
    """Steps a runbook has that did not run because an optional setting is absent — above all an integrity check,
    so the post-mortem says plainly that the restored data was not checked."""
    return [f"{event.text.split(':', 1)[0]} ({event.run_id}) did not run: {event.data.get('why', '')}"
            for event in timeline.of_kind(EventKind.STEP_SKIPPED) if event.data.get("reason") == "not_configured"]


def json_default(value: Any) -> Any:
    """Free-form fields (event data, step outputs, run params) may hold anything; an export never crashes."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
