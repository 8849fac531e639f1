"""Runs of a runbook and the steps each run has executed. A run's progress reaches the timeline through the
engine's events; these tables hold its current state."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from runbooks.models import Event, Plan, Run, RunStatus, StepRun
from runbooks.store.base import StoreBase
from runbooks.store.events import write_event
from runbooks.store.tables import jsonable, row_run, row_step, runs, steps, ts


class RunStore(StoreBase):
    def create_run(self, *, incident_id: str, runbook: str, environment: str, command: str, requested_by: str,
                   requested_at: datetime, params: Mapping[str, Any], drill: bool = False) -> Run:
        with self.tx() as conn:
            number = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(runs.c.number), 0))).scalar_one()) + 1
            run = Run(id=f"R-{number}", incident_id=incident_id, runbook=runbook, environment=environment,
                      command=command, requested_by=requested_by, requested_at=requested_at,
                      status=RunStatus.PREFLIGHT, params=dict(params), drill=drill)
            conn.execute(runs.insert().values(
                id=run.id, number=number, incident_id=incident_id, runbook=runbook, environment=environment,
                command=command, requested_by=requested_by, requested_at=ts(requested_at),
                status=run.status.value, params=jsonable(params), plan=None, plan_hash="", reason="", drill=drill))
            return run

    def get_run(self, run_id: str) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id.upper())).first()
        return None if row is None else row_run(row)

    def runs_for(self, *, incident_id: str) -> list[Run]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.incident_id == incident_id).order_by(runs.c.number))
            return [row_run(r) for r in rows]

    def active_runs(self) -> list[Run]:
        finished = [s.value for s in RunStatus if s.finished]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.status.not_in(finished)).order_by(runs.c.number))
            return [row_run(r) for r in rows]

    def succeeded_runs(self, *, runbook: str, environment: str | None = None, limit: int = 10) -> list[Run]:
        """The newest successful runs of `runbook` (in `environment`, when given), oldest first: the history the
        forecasts and the recovery-time table read."""
        query = sa.select(runs).where(runs.c.runbook == runbook, runs.c.status == RunStatus.SUCCEEDED.value)
        if environment is not None:
            query = query.where(runs.c.environment == environment)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(runs.c.number.desc()).limit(limit)).all()
        return [row_run(r) for r in reversed(rows)]

    def update_run(self, run_id: str, *, plan: Plan | None = None, **fields: Any) -> None:
        with self.tx() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**_values(fields, plan=plan)))

    def change_run(self, run_id: str, *, event: Event, dedupe_key: str | None = None, **fields: Any) -> Event | None:
        """Set `fields` and append `event` in one transaction (a run's status and its timeline line: whoever sees
        the run ended also finds the line that says so); the event as stored, None when `dedupe_key` was seen."""
        with self.tx() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**_values(fields)))
            return write_event(conn, event, dedupe_key=dedupe_key)

    def request_cancel(self, run_id: str, *, actor: str) -> None:
        with self.tx() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(cancel_requested=actor))

    def cancel_requested(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(runs.c.cancel_requested).where(runs.c.id == run_id)).scalar()
        return None if value is None else str(value)

    # ----------------------------------------------------------------------------------------- steps

    def save_step(self, step: StepRun) -> None:
        values = dict(title=step.title, attempt=step.attempt, status=step.status.value,
                      started_at=ts(step.started_at) if step.started_at else None,
                      finished_at=ts(step.finished_at) if step.finished_at else None,
                      outputs=jsonable(step.outputs), error=step.error)
        with self.tx() as conn:
            found = conn.execute(sa.select(steps.c.step_id).where(
                steps.c.run_id == step.run_id, steps.c.step_id == step.step_id)).first()
            if found is None:
                conn.execute(steps.insert().values(run_id=step.run_id, step_id=step.step_id, **values))
            else:
                conn.execute(steps.update().where(steps.c.run_id == step.run_id,
                                                  steps.c.step_id == step.step_id).values(**values))

    def steps_for(self, *, run_id: str) -> list[StepRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(steps).where(steps.c.run_id == run_id)).all()
        return [row_step(r) for r in rows]

    def steps_for_incident(self, *, incident_id: str) -> list[StepRun]:
        q = sa.select(steps).join(runs, runs.c.id == steps.c.run_id).where(runs.c.incident_id == incident_id)
        with self.engine.connect() as conn:
            return [row_step(r) for r in conn.execute(q.order_by(runs.c.number, steps.c.started_at))]


def _values(fields: Mapping[str, Any], *, plan: Plan | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for k, v in fields.items():
        values[k] = ts(v) if isinstance(v, datetime) else v.value if isinstance(v, RunStatus) else v
    if plan is not None:
        values["plan"] = plan.model_dump(mode="json")
    return values
