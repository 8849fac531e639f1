"""What the leader does every minute (`runbooks.workflows.minute_tick`): the RPO monitor's scan when it is due, and
the drills of drbot.yml's `schedules:` whose cron time has come.

A schedule fires at most once per cron time: the time is claimed (`schedule.fired`) before the drill is asked for,
so a tick run again after a crash, or by a new leader, starts nothing twice. A tick that comes late (drbot was down
at 03:00) still fires a time missed by up to `CATCH_UP`; older ones are skipped, said once in the channel. A
scheduled drill's result is said in the channel; a failed one opens an incident with the failure, so a person
looks at it (`Scheduler.concluded`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from croniter import croniter

from runbooks import grammar as g
from runbooks.incidents import Incidents
from runbooks.models import Event, EventKind, Run, RunStatus
from runbooks.notices import Notices
from runbooks.rpo import RpoMonitor
from runbooks.runs import Runs
from runbooks.runtime import Runtime
from runbooks.settings import EngineSettings, Schedule
from runbooks.sink import EventSink
from runbooks.store import Store
from runbooks.timeline import format_duration, iso, parse_iso

__all__ = ["CATCH_UP", "SCHEDULED", "Scheduler", "Ticks"]

log = logging.getLogger("drbot.engine")

CATCH_UP = timedelta(hours=6)
"""How late a cron time may still fire (an outage across 03:00 still runs the monthly drill at 04:10)."""
FIRED = "schedule.fired"
SCHEDULED = "schedule:"
"""A scheduled drill's requester is `schedule:<name>`."""


class Scheduler:
    def __init__(self, *, settings: EngineSettings, store: Store, runs: Runs, incidents: Incidents,
                 notices: Notices, events: EventSink) -> None:
        self.settings = settings
        self.store = store
        self.runs = runs
        self.incidents = incidents
        self.notices = notices
        self.events = events

    def due(self, schedule: Schedule, *, at: datetime) -> datetime | None:
        """The cron time of `schedule` to fire at `at`: the latest one not after `at`, unless it fired already
        or is more than `CATCH_UP` ago."""
        last = croniter(schedule.cron, at + timedelta(seconds=1)).get_prev(datetime)
        if at - last > CATCH_UP:
            return None
        if self.store.load_state(kind=FIRED, key=f"{schedule.name}:{iso(last)}") is not None:
            return None
        return last

    def fire_due(self, *, at: datetime) -> list[str]:
        """Ask for every drill whose time has come; the ids of the runs, whose workflows the caller starts (the
        minute tick's workflow: a DBOS step cannot start one)."""
        started = []
        for schedule in self.settings.schedules.values():
            when = self.due(schedule, at=at)
            if when is None or not self.store.claim_once(kind=FIRED, key=f"{schedule.name}:{iso(when)}",
                                                         value={"at": iso(at)}):
                continue
            run_id = self._start(schedule, when)
            if run_id:
                started.append(run_id)
        return started

    def _start(self, schedule: Schedule, when: datetime) -> str:
        params = " ".join(f"{k}={v}" for k, v in schedule.params.items())
        text = f"/dr drill {schedule.runbook} {schedule.environment}" + (f" {params}" if params else "")
        command = g.DrillRunbook(runbook=schedule.runbook, environment=schedule.environment,
                                 params=dict(schedule.params))
        reply = self.runs.request(command=command, actor=f"{SCHEDULED}{schedule.name}", incident_id=None, text=text,
                                  launch=False)
        if reply.run_id:
            log.warning("schedule %s (%s) started %s: %s", schedule.name, iso(when), reply.run_id, text)
            return reply.run_id
        self._failed(schedule, why=f"it could not start: {reply.text}", text=text)
        return ""

    def concluded(self, run: Run) -> None:
        """A scheduled drill ended: its result in the channel; a failure also opens an incident (once)."""
        if not run.requested_by.startswith(SCHEDULED):
            return
        name = run.requested_by.removeprefix(SCHEDULED)
        ended = self.store.get_run(run.id) or run
        took = (f" in {format_duration(ended.finished_at - ended.requested_at)}"
                if ended.finished_at is not None else "")
        if ended.status is RunStatus.SUCCEEDED:
            self.notices.announce(f"schedule:{run.id}:result",
                                  f":white_check_mark: Scheduled drill {name} passed: {run.runbook} on "
                                  f"{run.environment} ({run.id}, {run.incident_id}){took}.")
            return
        why = f"{run.id} ended {ended.status.value}" + (f": {ended.reason}" if ended.reason else "")
        self._failed(self.settings.schedules.get(name) or Schedule(name=name, cron="", runbook=run.runbook,
                                                                   environment=run.environment),
                     why=why, text=run.command, key=f"schedule:{run.id}:failed", drill=run.incident_id)

    def _failed(self, schedule: Schedule, *, why: str, text: str, key: str = "", drill: str = "") -> None:
        """A scheduled drill that failed is an incident: somebody has to find out why the recovery did not work."""
        key = key or f"schedule:{schedule.name}:start-failed:{iso(self.runs.clock.now())}"
        if not self.notices.announce(key, f":x: Scheduled drill {schedule.name} failed — {why}"
                                          + (f" (drill {drill})" if drill else "")):
            return
        env = self.settings.environment(schedule.environment)
        incident, _ = self.incidents.create(
            title=f"Scheduled drill {schedule.name} failed: {schedule.runbook} on {schedule.environment}",
            severity="sev3", env=env, actor=f"{SCHEDULED}{schedule.name}", external_key=key)
        self.events.emit(Event(incident_id=incident.id, at=self.runs.clock.now(), actor="drbot",
                               kind=EventKind.RUN_NOTICE,
                               text=f"The scheduled drill {schedule.name} (`{text}`) failed: {why}. "
                                    + (f"Its plan, steps and clean-up are in {drill}. " if drill else "")
                                    + "The recovery it rehearses may not work as written; find out why."),
                         dedupe_key=f"{key}:notice")


class Ticks:
    """`runbooks.workflows.TickSteps`: the minute tick's two steps."""

    def __init__(self, *, settings: EngineSettings, monitor: RpoMonitor, scheduler: Scheduler,
                 runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.monitor = monitor
        self.scheduler = scheduler

    def rpo(self) -> int:
        if not self.monitor.due(every=self.settings.rpo_every):
            return 0
        return len(self.monitor.scan())

    def schedules(self, at: str) -> list[str]:
        return self.scheduler.fire_due(at=parse_iso(at))

    def workflow_id(self, run_id: str) -> str:
        return self.runtime.workflow_id(run_id)
