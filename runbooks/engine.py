"""The façade every surface calls: commands in, replies out; runs go to DBOS, events go to notifiers.

A surface parses a line into a `Command`, calls `Engine.handle` (or `press` for a button), and renders the
`Reply`. Everything that happens later — the plan, the approval request, progress, the end of a run — reaches the
surface as `Event`s through its `Notifier`. The engine never imports a surface.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from runbooks import approvals as rule
from runbooks import grammar as g
from runbooks import incidents as inc
from runbooks.alerts import AlertRoute
from runbooks.catalog import Catalog
from runbooks.errors import ApprovalRefused, CommandError, ConfigError, NotFound
from runbooks.execution import Execution
from runbooks.export import export
from runbooks.faults import new_error_id
from runbooks.models import (
    Approval,
    Decision,
    Environment,
    Event,
    Incident,
    IncidentRecord,
    IncidentStatus,
    Run,
    RunStatus,
    Tier,
)
from runbooks.ports import Clock, Notifier, ProviderFactory, SystemClock
from runbooks.readiness import gaps
from runbooks.reconcile import find_orphans, why_orphaned
from runbooks.redact import redact, redact_text
from runbooks.replies import Attachment, Button, Reply, describe_buttons, refusal
from runbooks.runtime import Runtime
from runbooks.settling import Settler
from runbooks.store import Store
from runbooks.timeline import THRESHOLDS, budget, crossed_thresholds, format_duration, iso, parse_iso

if TYPE_CHECKING:
    from runbooks.pagerduty_sync import PagerDutyMirror

log = logging.getLogger("drbot.engine")

__all__ = ["Attachment", "Button", "Engine", "EngineSettings", "PollPolicy", "Reply", "describe_buttons", "refusal"]


@dataclass(frozen=True)
class PollPolicy:
    """Capped exponential backoff for waits, in seconds. The gap between polls also never exceeds `share` of
    the time waited so far, so an operation is seen finished within max(initial, share × its duration) of
    finishing: a 10 s DNS change is noticed within ~1 s, a 40 min restore within ~20 s (bench_overhead.py)."""

    initial: float = 1.0
    factor: float = 1.6
    maximum: float = 20.0
    share: float = 0.04

    def next_delay(self, delay: float, *, waited: float) -> float:
        ceiling = min(self.maximum, max(self.initial, self.share * waited))
        return max(self.initial, min(delay * self.factor, ceiling))


@dataclass
class EngineSettings:
    environments: Mapping[str, Environment]
    tiers: Mapping[str, Tier]
    poll: PollPolicy = field(default_factory=PollPolicy)
    budget_interval: float = 5.0
    reconcile_interval: float = 60.0
    """Seconds between looks for runs no live workflow owns (see runbooks.reconcile)."""
    alert_routes: Mapping[str, AlertRoute] = field(default_factory=dict)
    """PagerDuty service id → where its incidents go."""


class Engine:
    """drbot's core. Start it with `start()` (launches DBOS and recovers runs in flight), stop with `stop()`."""

    def __init__(self, *, store: Store, catalog: Catalog, settings: EngineSettings, providers: ProviderFactory,
                 clock: Clock | None = None, notifiers: Sequence[Notifier] = ()) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.providers = providers
        self.clock: Clock = clock or SystemClock()
        self.notifiers: list[Notifier] = list(notifiers)
        self.poll = settings.poll
        self.settler = Settler(store=store, catalog=catalog, clock=self.clock,
                               emit=lambda event, key: self.emit(event, dedupe_key=key),
                               stopping=lambda: self._stop.is_set())
        self.execution = Execution(self)
        self.runtime = Runtime(instance_id=store.instance_id)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._reconciler: threading.Thread | None = None
        self._started_at: datetime | None = None
        self.mirror: PagerDutyMirror | None = None

    @property
    def stopping(self) -> bool:
        """True once `stop()` began: an interrupted step is then not a failure (DBOS resumes it at the next start)."""
        return self._stop.is_set()

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self, *, system_database_url: str, executor_id: str = "local", budget_ticker: bool = True) -> None:
        self._stop.clear()
        self._started_at = self.clock.now()
        self.runtime.start(execution=self.execution, system_database_url=system_database_url,
                           executor_id=executor_id)
        from runbooks.pagerduty_sync import PagerDutyMirror

        self.mirror = PagerDutyMirror(self)
        self.notifiers.append(self.mirror)
        self.mirror.start()
        if budget_ticker:
            self._ticker = threading.Thread(target=self._tick_loop, name="drbot-rto-budget", daemon=True)
            self._ticker.start()
        self._reconciler = threading.Thread(target=self._reconcile_loop, name="drbot-reconciler", daemon=True)
        self._reconciler.start()

    def stop(self) -> None:
        self._stop.set()
        if self.mirror is not None:
            self.mirror.stop()
            self.notifiers.remove(self.mirror)
            self.mirror = None
        self.runtime.stop()

    def _reconcile_loop(self) -> None:
        """At start, then every `reconcile_interval`: settle runs that no live workflow owns."""
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # the next round tries again; a run stays visible in the store meanwhile
                log.exception("reconciler error %s", new_error_id())
            if self._stop.wait(self.settings.reconcile_interval):
                return

    def reconcile(self) -> list[str]:
        """Settle every orphaned run (failed, with the reason, in the thread and the timeline); their ids."""
        orphans = find_orphans(self.store.active_runs(), status_of=self.workflow_status, now=self.clock.now(),
                               started_at=self._started_at)
        for orphan in orphans:
            self._settle_orphan(orphan.run, orphan.cause)
        return [o.run.id for o in orphans]

    def _settle_orphan(self, run: Run, cause: str) -> None:
        error_id = new_error_id()
        log.error("error %s: %s is orphaned: %s", error_id, run.id, cause)
        self.settler.settle(run.id, cause=cause, error_id=error_id)

    def workflow_status(self, run_id: str) -> str | None:
        return self.runtime.status(run_id)

    def workflow_id(self, run_id: str) -> str:
        return self.runtime.workflow_id(run_id)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.settings.budget_interval):
            try:
                self.tick()
            except Exception:  # the ticker must outlive a bad moment; the next tick tries again
                log.exception("RTO budget tick failed")

    # ------------------------------------------------------------------------------------------- events

    def emit(self, event: Event, *, dedupe_key: str | None = None) -> Event | None:
        """Store an event (secrets redacted) and show it on every surface."""
        event = event.model_copy(update={"text": redact_text(event.text), "data": redact(event.data)})
        stored = self.store.append_event(event, dedupe_key=dedupe_key)
        if stored is not None:
            self.publish(stored)
        return stored

    def publish(self, event: Event) -> None:
        for notifier in list(self.notifiers):
            try:
                notifier.notify(event)
            except Exception:  # a surface failure must not undo the stored event; it is logged once
                log.exception("notifier %r failed on event %s", notifier, event.seq)

    # ------------------------------------------------------------------------------------------- config

    def environment(self, name: str) -> Environment:
        env = self.settings.environments.get(name)
        if env is None:
            known = ", ".join(sorted(self.settings.environments))
            raise NotFound(f"There is no environment called {name!r}. Known environments: {known}.")
        return env

    def tier(self, name: str) -> Tier:
        tier = self.settings.tiers.get(name)
        if tier is None:
            raise ConfigError(f"tier {name!r} is not defined (tiers: {', '.join(sorted(self.settings.tiers))})")
        return tier

    # ------------------------------------------------------------------------------------------- commands

    def parse(self, text: str) -> g.Command:
        return g.parse(text, now=self.clock.now(), environments=list(self.settings.environments))

    def handle(self, *, command: g.Command, actor: str, incident_id: str | None = None, text: str = "",
               groups: Mapping[str, Sequence[str]] | None = None) -> Reply:
        """Carry out one parsed command. Business refusals come back as a non-public `Reply`. `groups`: members
        of approver user groups, resolved by the surface now (`/dr cancel` by a member of one)."""
        try:
            return self._handle(command, actor=actor, incident_id=incident_id, text=text, groups=groups)
        except CommandError as exc:
            return refusal(exc)

    def _handle(self, command: g.Command, *, actor: str, incident_id: str | None, text: str,
                groups: Mapping[str, Sequence[str]] | None) -> Reply:
        if isinstance(command, g.Help):
            return Reply(text=g.help_text(command.topic), public=False)
        if isinstance(command, g.ListRunbooks):
            lines = [f"• {r.name} (v{r.version}): {r.title}" for r in self.catalog.runbooks.values()]
            return Reply(text="Runbooks:\n" + "\n".join(lines), public=False)
        if isinstance(command, g.IncidentOpen):
            return inc.open_incident(self, command, actor=actor)
        if isinstance(command, g.Status):
            return inc.status(self, self._incident(incident_id))
        if isinstance(command, g.IncidentDetected):
            return inc.set_detected(self, self._incident(incident_id), command, actor=actor)
        if isinstance(command, g.IncidentImpact):
            return inc.set_impact(self, self._incident(incident_id), command, actor=actor)
        if isinstance(command, g.IncidentRestored):
            return inc.set_restored(self, self._incident(incident_id), actor=actor)
        if isinstance(command, g.IncidentResolve):
            return inc.resolve(self, self._incident(incident_id), command, actor=actor)
        if isinstance(command, g.Timeline):
            incident = self._incident(incident_id)
            return self.export_reply(incident_id=incident.id, fmt=command.format)
        if isinstance(command, g.CancelRun):
            return self.cancel(run_id=command.run_id, actor=actor, groups=groups)
        if isinstance(command, g.RetryRun):
            return self.retry(run_id=command.run_id, actor=actor)
        return self.request_run(command=command, actor=actor, incident_id=incident_id, text=text)

    def _incident(self, incident_id: str | None) -> Incident:
        if incident_id is not None:
            found = self.store.get_incident(incident_id)
            if found is None:
                raise NotFound(f"There is no incident {incident_id}. Open one with `/dr incident open <title>`.")
            return found
        open_ = self.store.list_incidents(open_only=True)
        if len(open_) == 1:
            return open_[0]
        if not open_:
            raise NotFound("No incident is open. Open one with `/dr incident open <title> [sev1|sev2|sev3] [env]`.")
        raise CommandError("Several incidents are open (" + ", ".join(i.id for i in open_) +
                           "): say which one — in Slack, use its thread; in the shell, `:incident INC-n` first.")

    # ------------------------------------------------------------------------------------------- runs

    def request_run(self, *, command: g.Command, actor: str, incident_id: str | None, text: str) -> Reply:
        runbook_name, env_name, params, echo = inc.runbook_request(self, command)
        return self._request(runbook_name=runbook_name, env_name=env_name, params=params, echo=echo, actor=actor,
                             incident_id=incident_id, text=text or f"/dr run {runbook_name} {env_name}")

    def retry(self, *, run_id: str, actor: str) -> Reply:
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
                             incident_id=run.incident_id if open_incident else None, text=run.command,
                             retry_of=run.id)

    def _request(self, *, runbook_name: str, env_name: str, params: dict[str, Any], echo: str, actor: str,
                 incident_id: str | None, text: str, retry_of: str | None = None) -> Reply:
        runbook = self.catalog.get(runbook_name)
        env = self.environment(env_name)
        blocking = [gap for gap in gaps(runbook, env) if not gap.optional]
        if blocking:
            raise CommandError("\n".join(f"Refused, nothing was started: {gap.sentence()}. Add it to drbot.yml "
                                         f"(`drbot check` lists every such gap), then ask again." for gap in blocking))
        incident, opened = inc.incident_for(self, env=env, incident_id=incident_id, actor=actor,
                                            reason=f"{runbook.title} ({env.name})")
        for other in self.store.runs_for(incident_id=incident.id):
            if other.status.finished or other.runbook != runbook.name or other.environment != env.name:
                continue
            cause = why_orphaned(other, workflow_status=self.workflow_status(other.id), now=self.clock.now(),
                                 started_at=self._started_at)
            if cause is not None:  # nothing owns it: settle it (visibly) rather than let it block this request
                self._settle_orphan(other, cause)
                continue
            raise CommandError(f"{other.id} ({runbook.name} on {env.name}) is already {other.status.value} in "
                               f"{incident.id}; wait for it, or stop it with `/dr cancel {other.id}` before starting "
                               f"another.")
        now = self.clock.now()
        run = self.store.create_run(incident_id=incident.id, runbook=runbook.name, environment=env.name,
                                    command=text, requested_by=actor, requested_at=now, params=params)
        again = f" (retry of {retry_of})" if retry_of else ""
        self.emit(Event(incident_id=incident.id, run_id=run.id, at=now, actor=actor, kind="run.requested",
                        text=f"{actor} requested {runbook.name} on {env.name} ({run.id}){again}: {run.command}"
                             + (f" — {echo}" if echo else ""),
                        data={"runbook": runbook.name, "params": run.params, "retry_of": retry_of}),
                  dedupe_key=f"{run.id}:requested")
        self.runtime.launch(run.id)
        lines = []
        if opened:
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
        env = self.environment(run.environment)
        if actor != run.requested_by and not rule.is_approver(actor, allowlist=env.approvals.approvers,
                                                              groups=groups):
            self.store.audit_refusal(at=self.clock.now(), actor=actor, action="run.cancel_refused", subject=run.id,
                                     data={"reason": "not requester or approver"})
            return refusal(CommandError(f"Only {run.requested_by} (who requested {run.id}) or an approver of "
                                        f"{env.name} can cancel it."))
        self.store.request_cancel(run.id, actor=actor)
        self.emit(Event(incident_id=run.incident_id, run_id=run.id, at=self.clock.now(), actor=actor,
                        kind="run.cancel_requested", text=f"{actor} asked to cancel {run.id}."),
                  dedupe_key=f"{run.id}:cancel")
        status = self.workflow_status(run.id)
        orphaned = why_orphaned(run, workflow_status=status, now=self.clock.now(), started_at=self._started_at)
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

    # ------------------------------------------------------------------------------------------- buttons

    def press(self, *, action: str, value: str, actor: str, plan_hash: str | None = None,
              groups: Mapping[str, Sequence[str]] | None = None) -> Reply:
        """A button click. The value only names what was clicked; everything else is looked up."""
        try:
            if action in ("approve", "reject", "retry", "skip", "abort"):
                decision = Decision.REJECT if action == "reject" else Decision.APPROVE
                return self.vote(request_id=value, actor=actor, decision=decision, plan_hash=plan_hash, groups=groups)
            if action == "tick":
                incident_id, _, item = value.partition(":")
                return inc.tick(self, incident_id=incident_id, item_id=item, actor=actor)
            if action == "cancel":
                return self.cancel(run_id=value, actor=actor, groups=groups)
            if action == "pd_ack":
                from runbooks.pagerduty_sync import acknowledge

                return acknowledge(self, incident_id=value, actor=actor)
            raise CommandError(f"Unknown button action {action!r}.")
        except CommandError as exc:
            return refusal(exc)

    def vote(self, *, request_id: str, actor: str, decision: Decision, plan_hash: str | None = None,
             groups: Mapping[str, Sequence[str]] | None = None) -> Reply:
        now = self.clock.now()
        request = self.store.get_request(request_id)
        run = self.store.get_run(request.run_id) if request is not None else None
        current_hash = request.plan_hash if request is not None else ""
        if run is not None and request is not None and request.gate == "plan":
            current_hash = run.plan_hash
        try:
            rule.check_vote(request=request, request_id=request_id,
                            votes=self.store.votes(request_id=request_id) if request else [], actor=actor,
                            decision=decision, plan_hash=plan_hash or current_hash, now=now, groups=groups)
            if request is not None and request.plan_hash != current_hash:
                rule.check_vote(request=request, request_id=request_id, votes=[], actor=actor, decision=decision,
                                plan_hash=current_hash, now=now, groups=groups)
        except ApprovalRefused as exc:
            self._audit_refusal(actor=actor, request_id=request_id, run=run, reason=exc.reason, message=exc.message,
                                now=now)
            if exc.reason == "expired" and run is not None:
                self.runtime.wake(run.id, key=f"expired:{request_id}")  # let the run record its expiry now
            raise
        assert request is not None and run is not None
        what = {"plan": "approved" if decision is Decision.APPROVE else "rejected"}.get(
            request.gate, f"chose {request.option} for")
        event = Event(incident_id=run.incident_id, run_id=run.id, at=now, actor=actor,
                      kind="approval.vote", text=f"{actor} {what} {run.id}"
                      + (f" step {request.step_id}" if request.step_id else "")
                      + f" (plan {rule.short_hash(request.plan_hash)}).",
                      data={"request_id": request.id, "decision": decision.value, "plan_hash": request.plan_hash,
                            "option": request.option})
        stored = self.store.add_vote(Approval(request_id=request.id, actor=actor, decision=decision,
                                              plan_hash=request.plan_hash, at=now), event=event)
        if not stored:
            raise ApprovalRefused(f"{actor}, you already voted on {request.id}; each person counts once.",
                                  reason="duplicate")
        self.publish(self.store.events_for(incident_id=run.incident_id, run_id=run.id)[-1])
        self.runtime.wake(run.id, key=f"{request.id}:{actor}")
        votes = self.store.votes(request_id=request.id)
        return Reply(text=f"Recorded: {event.text} "
                          f"{rule.describe(request=request, votes=votes, now=now)}.", run_id=run.id,
                     incident_id=run.incident_id)

    def _audit_refusal(self, *, actor: str, request_id: str, run: Run | None, reason: str, message: str,
                       now: datetime) -> None:
        if run is None:
            self.store.audit_refusal(at=now, actor=actor, action="approval.refused", subject="unknown-request",
                                     data={"reason": reason, "request": request_id[:40]})
            return
        self.emit(Event(incident_id=run.incident_id, run_id=run.id, at=now, actor=actor, kind="approval.refused",
                        text=f"Refused {actor}: {message}", data={"reason": reason, "request_id": request_id}))

    # ------------------------------------------------------------------------------------------- incidents

    def mark_restored(self, *, incident_id: str, actor: str, why: str, dedupe: str) -> None:
        incident = self.store.get_incident(incident_id)
        if incident is None or incident.restored_at is not None:
            return
        now = self.clock.now()
        elapsed = format_duration(now - incident.detected_at)
        self.store.update_incident(
            incident.id, restored_at=now, status=IncidentStatus.RESTORED, dedupe_key=dedupe,
            event=Event(incident_id=incident.id, at=now, actor=actor, kind="incident.restored",
                        text=f"Service restored: {why}. RTO {elapsed}.", data={"why": why}))
        restored = self.store.events_for(incident_id=incident.id)
        if restored and restored[-1].kind == "incident.restored":
            self.publish(restored[-1])

    def record(self, incident_id: str) -> IncidentRecord:
        incident = self.store.get_incident(incident_id)
        if incident is None:
            raise NotFound(f"There is no incident {incident_id}.")
        events = self.store.events_for(incident_id=incident.id)
        restore_point: datetime | None = None
        lag: timedelta | None = None
        for event in events:
            if event.kind == "rpo.restore_point":
                restore_point = parse_iso(str(event.data["restore_point"]))
            elif event.kind == "rpo.replica_lag":
                lag = timedelta(seconds=float(event.data["replica_lag_seconds"]))
        return IncidentRecord(
            incident=incident, tier=self.tier(incident.tier), events=events,
            runs=self.store.runs_for(incident_id=incident.id),
            steps=self.store.steps_for_incident(incident_id=incident.id),
            requests=self.store.requests_for(incident_id=incident.id),
            approvals=self.store.votes(incident_id=incident.id),
            checklist=self.store.checklist(incident_id=incident.id), restore_point=restore_point, replica_lag=lag)

    def export_text(self, *, incident_id: str, fmt: str) -> str:
        record = self.record(incident_id)
        try:
            return export(record, fmt=fmt, now=self.clock.now())
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def export_reply(self, *, incident_id: str, fmt: str) -> Reply:
        content = self.export_text(incident_id=incident_id, fmt=fmt)
        mimetype = {"md": "text/markdown", "json": "application/json", "csv": "text/csv"}[fmt]
        summary = inc.summary_line(self, self.record(incident_id))
        return Reply(text=summary, incident_id=incident_id,
                     attachment=Attachment(filename=f"{incident_id}-timeline.{fmt}", content=content,
                                           mimetype=mimetype))

    def run_report(self, run_id: str) -> str:
        run = self.store.get_run(run_id)
        assert run is not None
        incident = self.store.get_incident(run.incident_id)
        assert incident is not None
        steps = self.store.steps_for(run_id=run.id)
        done = ", ".join(f"{s.title} ({s.status.value})" for s in steps)
        b = budget(incident=incident, tier=self.tier(incident.tier), now=self.clock.now())
        return (f"{run.id} report: {done}. RTO so far {format_duration(b.elapsed)} of {format_duration(b.target)} "
                f"({b.percent:.0f}%).")

    def tick(self) -> None:
        """Warn once at 50/75/100 % of the RTO target for each open, unrestored incident."""
        now = self.clock.now()
        for incident in self.store.list_incidents(open_only=True):
            if incident.restored_at is not None:
                continue
            tier = self.tier(incident.tier)
            already = [pct for pct in THRESHOLDS if self.store.has_event(dedupe_key=f"{incident.id}:rto:{pct}")]
            for pct in crossed_thresholds(incident=incident, tier=tier, now=now, already=already):
                b = budget(incident=incident, tier=tier, now=now)
                self.emit(Event(incident_id=incident.id, at=now, actor="drbot", kind="rto.warning",
                                text=f"RTO budget {pct}% used: {format_duration(b.elapsed)} of "
                                     f"{format_duration(b.target)} ({tier.name} target).",
                                data={"percent": pct, "elapsed_seconds": b.elapsed.total_seconds()}),
                          dedupe_key=f"{incident.id}:rto:{pct}")

    # ------------------------------------------------------------------------------------------- waiting

    def settled(self) -> bool:
        """True when no run is doing work right now (each is finished, or waiting for a person)."""
        for run in self.store.active_runs():
            waiting = run.status in (RunStatus.AWAITING_APPROVAL, RunStatus.PAUSED)
            now = self.clock.now()
            if waiting and self.store.cancel_requested(run.id) is None and any(
                    rule.tally(request=r, votes=self.store.votes(request_id=r.id), now=now) == "pending"
                    for r in self.store.requests_for(run_id=run.id)):
                continue
            return False
        return True

    def wait_settled(self, *, timeout: float = 120.0, sleep: Callable[[float], None] | None = None) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                return True
            (sleep or time.sleep)(0.05)
        return self.settled()

