"""The surfaces' two doors into drbot's database, so that no surface holds the `Store`:

- `Queries`: read-only views of incidents, runs, steps, approvals, checklists and events (what a surface renders);
- `Marks`: what a surface remembers about its own work — messages posted, cards, claims of requests already
  handled — in the keyed `provider_state` table, and where an incident's thread is.

Everything a surface *changes* in the domain goes through `Engine.handle` / `Engine.press`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from runbooks.drills import Leak, Ledger
from runbooks.models import Approval, ApprovalRequest, ChecklistItem, Event, Incident, Run, StepRun
from runbooks.store import Store

__all__ = ["Marks", "Queries"]


class Queries:
    def __init__(self, store: Store) -> None:
        self._store = store

    def get_incident(self, incident_id: str) -> Incident | None:
        return self._store.get_incident(incident_id)

    def drill_leaks(self, *, now: datetime, ttl: timedelta) -> list[Leak]:
        """Drill resources still present past `ttl` (`drbot drills leaks`)."""
        return Ledger(self._store).leaks(now=now, ttl=ttl)

    def list_incidents(self, *, open_only: bool = False) -> list[Incident]:
        return self._store.list_incidents(open_only=open_only)

    def checklist(self, *, incident_id: str) -> list[ChecklistItem]:
        return self._store.checklist(incident_id=incident_id)

    def get_run(self, run_id: str) -> Run | None:
        return self._store.get_run(run_id)

    def runs_for(self, *, incident_id: str) -> list[Run]:
        return self._store.runs_for(incident_id=incident_id)

    def active_runs(self) -> list[Run]:
        return self._store.active_runs()

    def steps_for(self, *, run_id: str) -> list[StepRun]:
        return self._store.steps_for(run_id=run_id)

    def get_request(self, request_id: str) -> ApprovalRequest | None:
        return self._store.get_request(request_id)

    def requests_for(self, *, run_id: str | None = None, incident_id: str | None = None) -> list[ApprovalRequest]:
        return self._store.requests_for(run_id=run_id, incident_id=incident_id)

    def pending_requests(self) -> list[ApprovalRequest]:
        return self._store.pending_requests()

    def votes(self, *, request_id: str | None = None, incident_id: str | None = None) -> list[Approval]:
        return self._store.votes(request_id=request_id, incident_id=incident_id)

    def events_for(self, *, incident_id: str, run_id: str | None = None, after_seq: int = 0) -> list[Event]:
        return self._store.events_for(incident_id=incident_id, run_id=run_id, after_seq=after_seq)

    def ping(self) -> None:
        """One round trip to the database (raises if it is unreachable): `/healthz`."""
        with self._store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))


class Marks:
    def __init__(self, store: Store) -> None:
        self._store = store

    def claim_once(self, *, kind: str, key: str, value: Mapping[str, Any]) -> bool:
        """Insert a marker; False if it was already there. Atomic across processes."""
        return self._store.claim_once(kind=kind, key=key, value=value)

    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None:
        return self._store.load_state(kind=kind, key=key)

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None:
        self._store.save_state(kind=kind, key=key, value=value)

    def delete_state(self, *, kind: str, key: str) -> None:
        self._store.delete_state(kind=kind, key=key)

    def list_state(self, *, kind: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        return self._store.list_state(kind=kind, prefix=prefix)

    def remember_thread(self, incident_id: str, *, key: str, value: Any) -> Incident:
        """Where the incident is shown on a surface (its Slack thread), kept with the incident."""
        return self._store.merge_external(incident_id, key=key, value=value)
