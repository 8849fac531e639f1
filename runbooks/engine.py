"""The façade every surface calls: commands in, replies out; runs go to DBOS, events go to notifiers.

A surface parses a line into a `Command`, calls `Engine.handle` (or `press` for a button), and renders the
`Reply`. Everything that happens later — the plan, the approval request, progress, the end of a run — reaches the
surface as `Event`s through its `Notifier`. The engine never imports a surface.

The engine is also the core's composition: it builds each service once — incidents, runs, votes, alerts, the
PagerDuty calls and mirror, the records, the step bodies — over the shared collaborators (store, catalog, clock,
settings, providers, the event sink). The services depend on those, never on `Engine`; the engine only
dispatches to them and runs the background loops (RTO budget warnings, the reconciler).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbooks import grammar as g
from runbooks.alerts import Alert, AlertIntake, Outcome
from runbooks.catalog import Catalog
from runbooks.errors import CommandError
from runbooks.execution import Execution
from runbooks.faults import new_error_id
from runbooks.gates import Gates
from runbooks.incidents import Incidents
from runbooks.models import Decision, Environment, Event, IncidentRecord, Tier
from runbooks.notices import Notices
from runbooks.pagerduty_sync import PagerDuty, PagerDutyMirror
from runbooks.ports import Clock, Notifier, ProviderFactory, SystemClock
from runbooks.queries import Marks, Queries
from runbooks.reconciler import Reconciler
from runbooks.records import Records
from runbooks.recovery_times import RecoveryTimes
from runbooks.replies import Attachment, Button, ButtonAction, Reply, describe_buttons, refusal
from runbooks.rpo import RpoMonitor
from runbooks.run_context import RunContext
from runbooks.runs import Runs
from runbooks.runtime import Runtime
from runbooks.settings import AlertRoute, EngineSettings, PollPolicy
from runbooks.settling import Settler
from runbooks.sink import EventSink
from runbooks.store import Store
from runbooks.ticks import Scheduler, Ticks
from runbooks.votes import Votes
from runbooks.waiting import settled
from runbooks.workflows import Binding

log = logging.getLogger("drbot.engine")

__all__ = ["AlertRoute", "Attachment", "Button", "Engine", "EngineSettings", "PollPolicy", "Reply",
           "describe_buttons", "refusal"]

GroupMembers = Mapping[str, Sequence[str]]
"""Members of approver user groups, resolved by the surface at the click (`@dr-approvers` → user ids)."""


@dataclass(frozen=True)
class Asked:
    """Who asked, and where: what a command handler needs besides the command."""

    actor: str
    incident_id: str | None = None
    text: str = ""
    groups: GroupMembers | None = None
    channel: str | None = None
    """The surface's channel it was asked in: where an incident the command opens gets its thread."""


Handler = Callable[[Any, Asked], Reply]


class Engine:
    """drbot's core. Start it with `start()` (launches DBOS and recovers runs in flight), stop with `stop()`."""

    def __init__(self, *, store: Store, catalog: Catalog, settings: EngineSettings, providers: ProviderFactory,
                 clock: Clock | None = None, notifiers: Sequence[Notifier] = ()) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.providers = providers
        self.clock: Clock = clock or SystemClock()
        self.poll = settings.poll
        self._stop = threading.Event()
        self.events = EventSink(store, notifiers)
        self.notifiers = self.events.notifiers
        """The surfaces (and, while started, the PagerDuty mirror): append yours before `start()`."""
        self.runtime = Runtime(instance_id=store.instance_id)
        self.settler = Settler(store=store, catalog=catalog, clock=self.clock,
                               emit=lambda event, key: self.events.emit(event, dedupe_key=key),
                               stopping=self._stop.is_set)
        self.records = Records(store=store, settings=settings, clock=self.clock)
        self.pagerduty = PagerDuty(store=store, clock=self.clock, settings=settings, providers=providers,
                                   events=self.events, runtime=self.runtime)
        self.incidents = Incidents(store=store, catalog=catalog, clock=self.clock, settings=settings,
                                   events=self.events, records=self.records, upstream=self.pagerduty.resolve_upstream)
        self.reconciler = Reconciler(store=store, runtime=self.runtime, clock=self.clock, settler=self.settler)
        self.runs = Runs(store=store, catalog=catalog, clock=self.clock, settings=settings, events=self.events,
                         runtime=self.runtime, settler=self.settler, incidents=self.incidents,
                         reconciler=self.reconciler)
        self.votes = Votes(store=store, clock=self.clock, events=self.events, runtime=self.runtime)
        self.alerts = AlertIntake(store=store, catalog=catalog, clock=self.clock, settings=settings,
                                  events=self.events, incidents=self.incidents)
        context = RunContext(store=store, catalog=catalog, clock=self.clock, settings=settings, providers=providers,
                             events=self.events, settler=self.settler)
        self.execution = Execution(context, incidents=self.incidents, records=self.records)
        self.gates = Gates(context, incidents=self.incidents)
        self.recovery_times = RecoveryTimes(store=store, catalog=catalog, settings=settings, clock=self.clock)
        self.notices = Notices(store=store, notifiers=self.notifiers, clock=self.clock)
        self.rpo = RpoMonitor(settings=settings, providers=providers, state=store, clock=self.clock,
                              announce=self.notices.announce)
        self.scheduler = Scheduler(settings=settings, store=store, runs=self.runs, incidents=self.incidents,
                                   notices=self.notices, events=self.events)
        self.execution.on_concluded = self.scheduler.concluded
        self.ticks = Ticks(settings=settings, monitor=self.rpo, scheduler=self.scheduler, runtime=self.runtime)
        self.queries = Queries(store)
        """What surfaces read (they never hold the store)."""
        self.marks = Marks(store)
        """What surfaces remember about their own work (posts, cards, claims)."""
        self.mirror: PagerDutyMirror | None = None
        self._ticker: threading.Thread | None = None
        self._reconciler: threading.Thread | None = None
        self._commands = self._command_table()

    @property
    def stopping(self) -> bool:
        """True once `stop()` began: an interrupted step is then not a failure (DBOS resumes it at the next start)."""
        return self._stop.is_set()

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self, *, system_database_url: str, executor_id: str = "local", budget_ticker: bool = True) -> None:
        self._stop.clear()
        self.reconciler.started_at = self.clock.now()
        binding = Binding(steps=self.execution, gates=self.gates, pagerduty=self.pagerduty,
                          stopping=self._stop.is_set, owned=self.store.check_fence, ticks=self.ticks)
        self.runtime.start(binding=binding, system_database_url=system_database_url, executor_id=executor_id)
        self.mirror = PagerDutyMirror(self.pagerduty)
        self.notifiers.append(self.mirror)
        self.mirror.start()
        if budget_ticker:
            self._ticker = threading.Thread(target=self._tick_loop, name="drbot-rto-budget", daemon=True)
            self._ticker.start()
        self._reconciler = threading.Thread(target=self._reconcile_loop, name="drbot-reconciler", daemon=True)
        self._reconciler.start()

    def stop(self, *, linger: float = 1.0) -> None:
        """Stop the background loops and DBOS (runs resume from their checkpoints at the next start). `linger`:
        see `Runtime.stop` (0 when the process exits right after, as `drbot serve`'s worker does)."""
        self._stop.set()
        if self.mirror is not None:
            self.mirror.stop()
            self.notifiers.remove(self.mirror)
            self.mirror = None
        self.runtime.stop(linger=linger)

    def fence_writes(self, fence: Callable[[Any], None] | None) -> None:
        """Check `fence(conn)` first in every write transaction of this engine: a replica that no longer leads
        raises there and writes nothing (`drbot serve`'s leading worker; see `bot.leader.fence`)."""
        self.store.fence = fence

    def close(self) -> None:
        """Release the database (after `stop()`)."""
        self.store.close()

    def _reconcile_loop(self) -> None:
        """At start, then every `reconcile_interval`: settle runs that no live workflow owns."""
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # the next round tries again; a run stays visible in the store meanwhile
                log.exception("reconciler error %s", new_error_id())
            if self._stop.wait(self.settings.reconcile_interval):
                return

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.settings.budget_interval):
            try:
                self.tick()
            except Exception:  # the ticker must outlive a bad moment; the next tick tries again
                log.exception("RTO budget tick failed")

    def reconcile(self) -> list[str]:
        """Settle every orphaned run (failed, with the reason, in the thread and the timeline); their ids."""
        return self.reconciler.reconcile()

    def tick(self) -> None:
        """Warn once at 50/75/100 % of the RTO target for each open, unrestored incident."""
        self.incidents.warn_budgets()

    def workflow_status(self, run_id: str) -> str | None:
        return self.runtime.status(run_id)

    def workflow_id(self, run_id: str) -> str:
        return self.runtime.workflow_id(run_id)

    # ------------------------------------------------------------------------------------------- events

    def emit(self, event: Event, *, dedupe_key: str | None = None) -> Event | None:
        """Store an event (secrets redacted) and show it on every surface."""
        return self.events.emit(event, dedupe_key=dedupe_key)

    def publish(self, event: Event) -> None:
        """Show an event stored elsewhere (the HTTP front's PagerDuty webhooks, in the worker process)."""
        self.events.publish(event)

    # ------------------------------------------------------------------------------------------- config

    def environment(self, name: str) -> Environment:
        return self.settings.environment(name)

    def tier(self, name: str) -> Tier:
        return self.settings.tier(name)

    # ------------------------------------------------------------------------------------------- commands

    def parse(self, text: str) -> g.Command:
        return g.parse(text, now=self.clock.now(), environments=list(self.settings.environments))

    def handle(self, *, command: g.Command, actor: str, incident_id: str | None = None, text: str = "",
               groups: GroupMembers | None = None, channel: str | None = None) -> Reply:
        """Carry out one parsed command. Business refusals come back as a non-public `Reply`. `groups`: members
        of approver user groups, resolved by the surface now (`/dr cancel` by a member of one). `channel`: where
        it was asked (Slack's channel id), which is where an incident it opens is shown."""
        asked = Asked(actor=actor, incident_id=incident_id, text=text, groups=groups, channel=channel)
        handler = self._commands.get(type(command), self._request)
        try:
            return handler(command, asked)
        except CommandError as exc:
            return refusal(exc)

    def _command_table(self) -> dict[type[g.Command], Handler]:
        """Each command type → what carries it out; a runbook command (any other) is a run request."""
        incidents = self.incidents

        def of(asked: Asked) -> Any:
            return incidents.get(asked.incident_id)

        return {
            g.Help: lambda c, a: Reply(text=g.help_text(c.topic), public=False),
            g.ListRunbooks: lambda c, a: self._list_runbooks(),
            g.IncidentOpen: lambda c, a: incidents.open(c, actor=a.actor, channel=a.channel),
            g.Status: lambda c, a: incidents.status(of(a)),
            g.IncidentDetected: lambda c, a: incidents.set_detected(of(a), c, actor=a.actor),
            g.IncidentImpact: lambda c, a: incidents.set_impact(of(a), c, actor=a.actor),
            g.IncidentRestored: lambda c, a: incidents.set_restored(of(a), actor=a.actor),
            g.IncidentResolve: lambda c, a: incidents.resolve(of(a), c, actor=a.actor),
            g.Timeline: lambda c, a: self.records.export_reply(incident_id=of(a).id, fmt=c.format),
            g.CancelRun: lambda c, a: self.runs.cancel(run_id=c.run_id, actor=a.actor, groups=a.groups),
            g.RetryRun: lambda c, a: self.runs.retry(run_id=c.run_id, actor=a.actor, channel=a.channel),
            g.RecoveryTimesTable: lambda c, a: self.recovery_times.reply(),
            g.RpoTable: lambda c, a: self._rpo_reply(),
        }

    def _request(self, command: g.Command, asked: Asked) -> Reply:
        return self.runs.request(command=command, actor=asked.actor, incident_id=asked.incident_id,
                                 text=asked.text, channel=asked.channel)

    def _rpo_reply(self) -> Reply:
        """`/dr rpo`: every store read now, as a fixed-width table to the person who asked."""
        readings = self.rpo.read()
        breaches = sum(1 for r in readings if r.state == "breach")
        head = (f"RPO: {len(readings)} store{'' if len(readings) == 1 else 's'}, {breaches} over target "
                f"(`drbot rpo --format md|json|csv` prints the table).")
        lines = [r.sentence() for r in readings] or ["No store with recovery points is configured."]
        return Reply(text=head + "\n" + "\n".join(f"• {line}" for line in lines), public=False)

    def _list_runbooks(self) -> Reply:
        lines = [f"• {r.name} (v{r.version}): {r.title}" for r in self.catalog.runbooks.values()]
        return Reply(text="Runbooks:\n" + "\n".join(lines), public=False)

    def cancel(self, *, run_id: str, actor: str, groups: GroupMembers | None = None) -> Reply:
        return self.runs.cancel(run_id=run_id, actor=actor, groups=groups)

    def retry(self, *, run_id: str, actor: str, channel: str | None = None) -> Reply:
        return self.runs.retry(run_id=run_id, actor=actor, channel=channel)

    # ------------------------------------------------------------------------------------------- buttons

    def press(self, *, action: ButtonAction, value: str, actor: str, plan_hash: str | None = None,
              groups: GroupMembers | None = None) -> Reply:
        """A button click. The value only names what was clicked; everything else is looked up."""
        try:
            if action in ("approve", "reject", "retry", "skip", "abort"):
                decision = Decision.REJECT if action == "reject" else Decision.APPROVE
                return self.vote(request_id=value, actor=actor, decision=decision, plan_hash=plan_hash, groups=groups)
            if action == "tick":
                incident_id, _, item = value.partition(":")
                return self.incidents.tick(incident_id=incident_id, item_id=item, actor=actor)
            if action == "cancel":
                return self.runs.cancel(run_id=value, actor=actor, groups=groups)
            if action == "pd_ack":
                return self.pagerduty.acknowledge(incident_id=value, actor=actor)
            raise CommandError(f"Unknown button action {action!r}.")
        except CommandError as exc:
            return refusal(exc)

    def vote(self, *, request_id: str, actor: str, decision: Decision, plan_hash: str | None = None,
             groups: GroupMembers | None = None) -> Reply:
        return self.votes.vote(request_id=request_id, actor=actor, decision=decision, plan_hash=plan_hash,
                               groups=groups)

    # ------------------------------------------------------------------------------------------- alerts

    def ingest(self, alert: Alert) -> Outcome:
        """One PagerDuty delivery (webhook or the shell's `:page`); safe to repeat."""
        return self.alerts.ingest(alert)

    # ------------------------------------------------------------------------------------------- records

    def mark_restored(self, *, incident_id: str, actor: str, why: str, dedupe: str) -> None:
        self.incidents.mark_restored(incident_id=incident_id, actor=actor, why=why, dedupe=dedupe)

    def record(self, incident_id: str) -> IncidentRecord:
        return self.records.record(incident_id)

    def export_text(self, *, incident_id: str, fmt: str) -> str:
        return self.records.export_text(incident_id=incident_id, fmt=fmt)

    def export_reply(self, *, incident_id: str, fmt: str) -> Reply:
        return self.records.export_reply(incident_id=incident_id, fmt=fmt)

    def run_report(self, run_id: str) -> str:
        return self.records.run_report(run_id)

    # ------------------------------------------------------------------------------------------- waiting

    def settled(self) -> bool:
        """True when no run is doing work right now (each is finished, or waiting for a person)."""
        return settled(self.store, now=self.clock.now())

    def wait_settled(self, *, timeout: float = 120.0, sleep: Callable[[float], None] | None = None) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                return True
            (sleep or time.sleep)(0.05)
        return self.settled()

