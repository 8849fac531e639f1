"""What the three exports share: the schema name, event order, short forms of hashes, times and offsets, the
steps that did not run, and the JSON fallback for free-form values."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from runbooks.models import Event, EventKind, IncidentRecord
from runbooks.timeline import format_duration, iso

__all__ = ["CSV_HEADER", "FORMATS", "SCHEMA", "events_of", "json_default", "not_done", "plus", "short", "when"]

SCHEMA = "drbot.incident/v1"
FORMATS: tuple[str, ...] = ("md", "json", "csv")
CSV_HEADER: tuple[str, ...] = ("seq", "time", "elapsed_seconds", "incident", "run", "actor", "kind", "text")
SHORT_HASH = 12


def events_of(record: IncidentRecord) -> list[Event]:
    """The store's append order; a stable sort keeps input order when events were never numbered."""
    return sorted(record.events, key=lambda event: event.seq)


def short(plan_hash: str) -> str:
    return plan_hash[:SHORT_HASH] if plan_hash else "—"


def when(dt: datetime | None, missing: str = "—") -> str:
    return iso(dt) if dt is not None else missing


def plus(td: timedelta) -> str:
    return format_duration(td) if td < timedelta(0) else "+" + format_duration(td)


def not_done(record: IncidentRecord) -> list[str]:
    """Steps a runbook has that did not run because an optional setting is absent — above all an integrity check,
    so the post-mortem says plainly that the restored data was not checked."""
    return [f"{event.text.split(':', 1)[0]} ({event.run_id}) did not run: {event.data.get('why', '')}"
            for event in record.events
            if event.kind == EventKind.STEP_SKIPPED and event.data.get("reason") == "not_configured"]


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
