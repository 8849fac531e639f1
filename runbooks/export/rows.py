"""The CSV export: one event a row, for spreadsheets."""

from __future__ import annotations

import csv
import io

from runbooks.export.common import CSV_HEADER, Timeline, timeline_of
from runbooks.models import IncidentRecord
from runbooks.timeline import as_utc, iso, seconds

__all__ = ["export_csv"]


def export_csv(record: IncidentRecord, *, timeline: Timeline | None = None) -> str:
    """One event a row for spreadsheets; the csv module quotes commas, quotes and newlines in the text."""
    detected = as_utc(record.incident.detected_at)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    writer.writerows(
        (event.seq, iso(event.at), seconds(as_utc(event.at) - detected), event.incident_id, event.run_id or "",
         event.actor, event.kind, event.text)
        for event in timeline_of(record, timeline)
    )
    return buffer.getvalue()
