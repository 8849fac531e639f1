"""An incident as the record of what happened: its events, runs, steps, decisions and checklist, with the RPO
evidence — and what is made from it: the timeline exports, the RTO/RPO summary line, a run's progress report."""

from __future__ import annotations

from datetime import datetime, timedelta

from runbooks.errors import CommandError, NotFound
from runbooks.export import export
from runbooks.models import EventKind, IncidentRecord
from runbooks.ports import Clock
from runbooks.replies import Attachment, Reply
from runbooks.settings import EngineSettings
from runbooks.store import Store
from runbooks.timeline import budget, format_duration, parse_iso, rpo, rto

__all__ = ["Records", "summary_line"]

MIMETYPES = {"md": "text/markdown", "json": "application/json", "csv": "text/csv"}


class Records:
    def __init__(self, *, store: Store, settings: EngineSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def record(self, incident_id: str, *, with_events: bool = True) -> IncidentRecord:
        """Everything known about the incident; without its events (`with_events=False`) for what needs only the
        figures — the summary line, and exports, which walk the events from the store (`export_text`)."""
        incident = self.store.get_incident(incident_id)
        if incident is None:
            raise NotFound(f"There is no incident {incident_id}.")
        timeline = self.store.timeline(incident_id=incident.id)
        restore_point: datetime | None = None
        lag: timedelta | None = None
        for event in timeline.of_kind(EventKind.RPO_RESTORE_POINT):
            restore_point = parse_iso(str(event.data["restore_point"]))
        for event in timeline.of_kind(EventKind.RPO_REPLICA_LAG):
            lag = timedelta(seconds=float(event.data["replica_lag_seconds"]))
        events = self.store.events_for(incident_id=incident.id) if with_events else []
        return IncidentRecord(
            incident=incident, tier=self.settings.tier(incident.tier), events=events,
            runs=self.store.runs_for(incident_id=incident.id),
            steps=self.store.steps_for_incident(incident_id=incident.id),
            requests=self.store.requests_for(incident_id=incident.id),
            approvals=self.store.votes(incident_id=incident.id),
            checklist=self.store.checklist(incident_id=incident.id), restore_point=restore_point, replica_lag=lag)

    def export_text(self, *, incident_id: str, fmt: str) -> str:
        record = self.record(incident_id, with_events=False)
        timeline = self.store.timeline(incident_id=record.incident.id)
        try:
            return export(record, fmt=fmt, now=self.clock.now(), timeline=timeline)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def export_reply(self, *, incident_id: str, fmt: str) -> Reply:
        content = self.export_text(incident_id=incident_id, fmt=fmt)
        return Reply(text=self.summary(incident_id), incident_id=incident_id,
                     attachment=Attachment(filename=f"{incident_id}-timeline.{fmt}", content=content,
                                           mimetype=MIMETYPES[fmt]))

    def summary(self, incident_id: str) -> str:
        return summary_line(self.record(incident_id, with_events=False))

    def run_report(self, run_id: str) -> str:
        run = self.store.get_run(run_id)
        incident = self.store.get_incident(run.incident_id) if run is not None else None
        if run is None or incident is None:
            raise NotFound(f"There is no run {run_id}.")
        steps = self.store.steps_for(run_id=run.id)
        done = ", ".join(f"{s.title} ({s.status.value})" for s in steps)
        b = budget(incident=incident, tier=self.settings.tier(incident.tier), now=self.clock.now())
        return (f"{run.id} report: {done}. RTO so far {format_duration(b.elapsed)} of {format_duration(b.target)} "
                f"({b.percent:.0f}%).")


def summary_line(record: IncidentRecord) -> str:
    tier = record.tier
    took = rto(record)
    loss, basis = rpo(record)
    rto_text = (f"RTO {format_duration(took)} (target {format_duration(tier.rto)}, "
                f"{'met' if took <= tier.rto else 'MISSED'})" if took is not None
                else f"RTO running (target {format_duration(tier.rto)})")
    rpo_text = (f"RPO {format_duration(loss)} (target {format_duration(tier.rpo)}, "
                f"{'met' if loss <= tier.rpo else 'MISSED'}; {basis})" if loss is not None
                else f"RPO unknown ({basis})")
    return f"{record.incident.id}: {rto_text}; {rpo_text}."
