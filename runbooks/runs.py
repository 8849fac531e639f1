"""Runs from the outside: request one (after the readiness check and the one-at-a-time rule), retry a finished
one, cancel one. What a run does once launched is `runbooks.execution`; its workflow is `runbooks.workflows`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from runbooks import approvals as rule
from runbooks import grammar as g
from runbooks.catalog import Catalog
from runbooks.commands import RunbookCommand, RunRequest
from runbooks.drills import BANNER, DRILL, drill_variant
from runbooks.errors import CommandError, NotFound
from runbooks.incidents import CHANNEL, Incidents
from runbooks.models import Event, EventKind, IncidentStatus, RunStatus, StepStatus
from runbooks.ports import Clock
from runbooks.readiness import gaps
from runbooks.reconcile import why_orphaned
from runbooks.reconciler import Reconciler
from runbooks.replies import Reply, refusal
from runbooks.runtime import Runtime
from runbooks.settings import EngineSettings
from runbooks.settling import Settler
from runbooks.sink import EventSink
from runbooks.store import Store
from runbooks.timeline import iso

__all__ = ["Runs", "runbook_request"]


class Runs:
    def __init__(self, *, store: Store, catalog: Catalog, clock: Clock, settings: EngineSettings,
                 events: EventSink, runtime: Runtime, settler: Settler, incidents: Incidents,
                 reconciler: Reconciler) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.events = events
        self.runtime = runtime
        self.settler = settler
        self.incidents = incidents
        self.reconciler = reconciler

    def request(self, *, command: g.Command, actor: str, incident_id: str | None, text: str,
                channel: str | None = None, launch: bool = True) -> Reply:
        """Ask for a run. `launch=False`: the caller starts its workflow (a DBOS step may not; the minute tick's
        workflow does, see `runbooks.workflows.minute_tick`)."""
        asked = runbook_request(self.catalog, command, now=self.clock.now())
        verb = "drill" if asked.drill else "run"
        return self._request(runbook_name=asked.runbook, env_name=asked.environment, params=asked.params,
                             echo=asked.echo, actor=actor, incident_id=incident_id,
                             text=text or f"/dr {verb} {asked.runbook} {asked.environment}", channel=channel,
                             drill=asked.drill, launch=launch)

    def taken_over(self, *, replica: str, previous: str, epoch: int) -> list[str]:
        """A new leader (`replica`) has resumed what `previous` left: a line on the timeline of every run in
        flight, naming where it resumed. Returns the run ids."""
        resumed = []
        for run in self.store.active_runs():
            steps = self.store.steps_for(run_id=run.id)
            current = next((s for s in reversed(steps) if s.status in (StepStatus.RUNNING, StepStatus.PENDING)),
                           None)
            where = f"at step {current.step_id}" if current is not None else f"while {run.status.value}"
            self.events.emit(Event(incident_id=run.incident_id, run_id=run.id, at=self.clock.now(), actor="drbot",
                                   kind=EventKind.LEADER_TAKEOVER,
                                   text=f"Replica {replica} took over from {previous}; {run.id} resumed {where}.",
                                   data={"replica": replica, "previous": previous, "epoch": epoch,
                                         "step": current.step_id if current is not None else None}),
                             dedupe_key=f"takeover:{epoch}:{run.id}")
            resumed.append(run.id)
        return resumed

    def retry(self, *, run_id: str, actor: str, channel: str | None = None) -> Reply:
        """A new run of the same runbook, environment and resolved parameters (the restore point the first run
        echoed, not `10:00Z` read again), planned and approved afresh, with `actor` as its requester."""
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"There is no run {run_id}. `/dr status` lists the runs of the incident.")
        if not run.status.finished:
            raise CommandError(f"{run.id} is still {run.status.value}; it can be retried once it has ended "
                               f"(`/dr cancel {run.id}` stops it).")
        incident = self.store.get_incident(run.incident_id)
        open_incident = incident is not None and incident.status is not IncidentStatus.RESOLVED
        return self._request(runbook_name=run.runbook, env_name=run.environment, params=dict(run.params),
                             echo=f"Retry of {run.id} ({run.status.value}).", actor=actor,
                             incident_id=run.incident_id if open_incident and not run.drill else None,
                             text=run.command, retry_of=run.id, channel=channel, drill=run.drill)

    def _request(self, *, runbook_name: str, env_name: str, params: dict[str, Any], echo: str, actor: str,
                 incident_id: str | None, text: str, retry_of: str | None = None,
                 channel: str | None = None, drill: bool = False, launch: bool = True) -> Reply:
        runbook = self.catalog.get(runbook_name)
        if drill:
            runbook = drill_variant(runbook)  # refuses a runbook that cannot be drilled safely, saying why
        env = self.settings.environment(env_name)
        blocking = [gap for gap in gaps(runbook, env) if not gap.optional]
        if blocking:
            raise CommandError("\n".join(f"Refused, nothing was started: {gap.sentence()}. Add it to drbot.yml "
                                         f"(`drbot check` lists every such gap), then ask again." for gap in blocking))
        if drill:  # a drill has an incident (a thread, a timeline) of its own, never a real one's
            incident, opened = self.incidents.create(
                title=f"Drill: {runbook.title} ({env.name})", severity="drill", env=env, actor=actor,
                external={DRILL: True, **({CHANNEL: channel} if channel else {})}, checklist=False)
        else:
            incident, opened = self.incidents.for_run(env=env, incident_id=incident_id, actor=actor,
                                                      reason=f"{runbook.title} ({env.name})", channel=channel)
        for other in self.store.runs_for(incident_id=incident.id):
            if other.status.finished or other.runbook != runbook.name or other.environment != env.name:
                continue
            cause = self.reconciler.why(other)
            if cause is not None:  # nothing owns it: settle it (visibly) rather than let it block this request
                self.reconciler.settle(other, cause)
                continue
            raise CommandError(f"{other.id} ({runbook.name} on {env.name}) is already {other.status.value} in "
                               f"{incident.id}; wait for it, or stop it with `/dr cancel {other.id}` before starting "
                               f"another.")
        now = self.clock.now()
        run = self.store.create_run(incident_id=incident.id, runbook=runbook.name, environment=env.name,
                                    command=text, requested_by=actor, requested_at=now, params=params, drill=drill)
        again = f" (retry of {retry_of})" if retry_of else ""
        self.events.emit(Event(incident_id=incident.id, run_id=run.id, at=now, actor=actor,
                               kind=EventKind.RUN_REQUESTED,
                               text=f"{actor} requested {runbook.name} on {env.name} ({run.id}){again}: "
                                    f"{run.command}" + (f" — {echo}" if echo else ""),
                               data={"runbook": runbook.name, "params": run.params, "retry_of": retry_of}),
                         dedupe_key=f"{run.id}:requested")
        if launch:
            self.runtime.launch(run.id)
        lines = []
        if drill:
            lines.append(f"Drill {incident.id} opened for it ({BANNER}).")
        elif opened:
            lines.append(f"No incident was open for {env.name}, so drbot opened {incident.id} "
                         f"(detected {iso(incident.detected_at)}).")
        lines.append(f"{run.id}: {runbook.title} on {env.name} requested by {actor}." + (f" {echo}" if echo else ""))
        lines.append("Pre-flight running; the plan follows.")
        return Reply(text="\n".join(lines), incident_id=incident.id, run_id=run.id)

    def cancel(self, *, run_id: str, actor: str, groups: Mapping[str, Sequence[str]] | None = None) -> Reply:
        """Stop a run: its requester or an approver of its environment (a member of an approver group counts,
        `groups` being resolved by the surface at this click)."""
        run = self.store.get_run(run_id)
        if run is None:
            return refusal(NotFound(f"There is no run {run_id}."))
        if run.status.finished:
            return refusal(CommandError(f"{run.id} already ended ({run.status.value}); nothing to cancel."))
        env = self.settings.environment(run.environment)
        approvers = self.settings.approvals(env, drill=run.drill).approvers
        if actor != run.requested_by and not rule.is_approver(actor, allowlist=approvers,
                                                              groups=groups):
            self.store.audit_refusal(at=self.clock.now(), actor=actor, action="run.cancel_refused", subject=run.id,
                                     data={"reason": "not requester or approver"})
            return refusal(CommandError(f"Only {run.requested_by} (who requested {run.id}) or an approver of "
                                        f"{env.name} can cancel it."))
        self.store.request_cancel(run.id, actor=actor)
        self.events.emit(Event(incident_id=run.incident_id, run_id=run.id, at=self.clock.now(), actor=actor,
                               kind=EventKind.RUN_CANCEL_REQUESTED, text=f"{actor} asked to cancel {run.id}."),
                         dedupe_key=f"{run.id}:cancel")
        status = self.runtime.status(run.id)
        orphaned = why_orphaned(run, workflow_status=status, now=self.clock.now(),
                                started_at=self.reconciler.started_at)
        if orphaned is None and status is None:  # being launched this very moment: its pre-flight sees the cancel
            orphaned = "its workflow had not started yet"
        if orphaned is not None:  # no workflow will see the request: end the run here
            self.settler.settle(run.id, cause=f"cancelled by {actor} ({orphaned})", status=RunStatus.CANCELLED,
                                actor=actor)
            return Reply(text=f"{run.id} cancelled. {orphaned[0].upper()}{orphaned[1:]}, so nothing else was "
                              f"running for it.", run_id=run.id, incident_id=run.incident_id)
        self.runtime.wake(run.id, key=f"cancel:{run.id}")
        return Reply(text=f"Cancelling {run.id}. A cloud operation already started is not stopped by drbot; "
                          f"the step ends at its next check.", run_id=run.id)


def runbook_request(catalog: Catalog, command: g.Command, *, now: datetime) -> RunRequest:
    """Which runbook a command runs, where, with which parameters: a shortcut command says so itself; `/dr run`
    names the runbook, whose declared parameters read the `key=value`s."""
    if isinstance(command, RunbookCommand):
        return command.request()
    if isinstance(command, g.DrillRunbook):
        return dataclasses.replace(_run_params(catalog, command, now=now, verb="drill"), drill=True)
    if isinstance(command, g.RunRunbook):
        return _run_params(catalog, command, now=now)
    raise CommandError(f"drbot does not know how to run {type(command).__name__}.")


def _run_params(catalog: Catalog, command: g.RunRunbook, *, now: datetime, verb: str = "run") -> RunRequest:
    runbook = catalog.get(command.runbook)
    declared = {p.name: p for p in runbook.params}
    unknown = sorted(set(command.params) - set(declared))
    if unknown:
        form = " ".join(f"{p.name}=<{p.kind}>" for p in runbook.params) or "(no parameters)"
        raise CommandError(f"{runbook.name} has no parameter {unknown[0]!r}. "
                           f"Usage: /dr {verb} {runbook.name} <env> {form}")
    values: dict[str, Any] = {}
    echo: list[str] = []
    for spec in runbook.params:
        raw = command.params.get(spec.name)
        if raw is None:
            if spec.required:
                raise CommandError(f"{runbook.name} needs {spec.name}=<{spec.kind}> ({spec.help or spec.name}).")
            continue
        if spec.kind == "time":
            at = g.resolve_time(raw, now=now)
            values[spec.name] = "latest" if at is None else iso(at)
            echo.append(f"{spec.name} = {values[spec.name]} (from `{raw}`)")
        elif spec.kind == "int":
            try:
                values[spec.name] = int(raw)
            except ValueError:
                raise CommandError(f"{spec.name}={raw!r} is not a whole number.") from None
        else:
            values[spec.name] = raw
    return RunRequest(runbook.name, command.environment, values, "; ".join(echo))
