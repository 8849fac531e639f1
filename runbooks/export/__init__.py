"""Incident exports: a Markdown post-mortem, versioned JSON and one-event-a-row CSV.

The post-mortem is the reason drbot records every moment, so it is built only from stored timestamps and the
figures in `runbooks.timeline`; `now` is passed in so that an export is reproducible. Big incidents (tens of
thousands of events from a long outage) must export in well under a second, so every format is built in one
pass with list joins or `io.StringIO`, and events are read attribute by attribute rather than via
`model_dump`, which costs several times more per event (see bench/bench_export.py).

JSON schema `drbot.incident/v1`: additive changes keep the version; renaming or removing a key bumps it.
"""

from __future__ import annotations

from datetime import datetime

from runbooks.export.common import FORMATS, SCHEMA, ListTimeline, Timeline, TimelineEntry
from runbooks.export.document import export_json
from runbooks.export.markdown import export_markdown
from runbooks.export.rows import export_csv
from runbooks.models import IncidentRecord

__all__ = ["FORMATS", "SCHEMA", "ListTimeline", "Timeline", "TimelineEntry", "export", "export_csv", "export_json",
           "export_markdown"]


def export(record: IncidentRecord, *, fmt: str, now: datetime, timeline: Timeline | None = None) -> str:
    """One entry point for the CLI, the shell and `/dr timeline [md|json|csv]`. `timeline`: the incident's events
    when `record` does not hold them — the store's paged reader, so that a 100,000-event incident exports
    without ever being held whole (`Records.export_text`)."""
    kind = fmt.strip().lower()
    if kind == "md":
        return export_markdown(record, now=now, timeline=timeline)
    if kind == "json":
        return export_json(record, now=now, timeline=timeline)
    if kind == "csv":
        return export_csv(record, timeline=timeline)
    raise ValueError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
