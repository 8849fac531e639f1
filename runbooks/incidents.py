"""Incidents: open (by hand, for a run, or from an alert), detection and impact times, restored, resolved, the
checklist, `/dr status`, and the RTO budget warnings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from runbooks import approvals as rule
from runbooks import grammar as g
from runbooks.catalog import Catalog
from runbooks.drills import Ledger, leaks_line
from runbooks.errors import CommandError, NotFound
from runbooks.models import ChecklistItem, Environment, Event, EventKind, Incident, IncidentStatus, Run
from runbooks.ports import Clock
from runbooks.records import Records
from runbooks.replies import Button, Reply, button_action
from runbooks.settings import EngineSettings
from runbooks.sink import EventSink
from runbooks.store import Store
from runbooks.timeline import THRESHOLDS, budget, crossed_thresholds, format_duration, iso

__all__ = ["CHANNEL", "Incidents", "Upstream"]

CHANNEL = "slack_channel"
"""Incident.external key: the channel it was opened from (a command's, or an alert route's): its thread goes there."""

Upstream = Callable[[Incident, str, str], None]
"""Told when drbot resolves an incident (incident, note, actor): the PagerDuty mirror resolves it there too."""

FAILED_RUN = ("failed", "cancelled", "expired", "rejected")


class Incidents:
    def __init__(self, *, store: Store, catalog: Catalog, clock: Clock, settings: EngineSettings,
                 events: EventSink, records: Records, upstream: Upstream | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.events = events
        self.records = records
        self.upstream = upstream

    # ------------------------------------------------------------------------------------------- lookups

    def get(self, incident_id: str | None) -> Incident:
        """The named incident, or the one open incident; refuses clearly when there is none or several."""
        if incident_id is not None:
            found = self.store.get_incident(incident_id)
            if found is None:
                raise NotFound(f"There is no incident {incident_id}. Open one with `/dr incident open <title>`.")
            return found
        everything = self.store.list_incidents(open_only=True)
        open_ = [i for i in everything if not i.drill] or everything  # a drill in progress is not "the" incident
        if len(open_) == 1:
            return open_[0]
        if not open_:
            raise NotFound("No incident is open. Open one with `/dr incident open <title> [sev1|sev2|sev3] [env]`.")
        raise CommandError("Several incidents are open (" + ", ".join(i.id for i in open_) +
                           "): say which one — in Slack, use its thread; in the shell, `:incident INC-n` first.")

    def for_run(self, *, env: Environment, incident_id: str | None, actor: str, reason: str,
                channel: str | None = None) -> tuple[Incident, bool]:
        """The incident a runbook command belongs to; opens one (detected now) when none is open for `env`."""
        if incident_id is not None:
            found = self.store.get_incident(incident_id)
            if found is None:
                raise NotFound(f"There is no incident {incident_id}.")
            if found.status is not IncidentStatus.RESOLVED and found.environment == env.name and not found.drill:
                return found, False
        candidates = [i for i in self.store.list_incidents(open_only=True) if i.environment == env.name and not i.drill]
        if len(candidates) == 1:
            return candidates[0], False
        if len(candidates) > 1:
            raise CommandError(f"Several incidents are open for {env.name} (" + ", ".join(i.id for i in candidates)
                               + "): run the command in the incident's thread (shell: `:incident INC-n` first).")
        return self.create(title=reason, severity="sev2", env=env, actor=actor,
                           external={CHANNEL: channel} if channel else None)

    # ------------------------------------------------------------------------------------------- opening

    def create(self, *, title: str, severity: str, env: Environment, actor: str, detected_at: datetime | None = None,
               external: dict[str, Any] | None = None, external_key: str | None = None, tier: str | None = None,
               also: Callable[[str], list[Event]] | None = None, checklist: bool = True) -> tuple[Incident, bool]:
        """Open an incident with its own checklist instance. Idempotent on `external_key` (a PagerDuty id).
        Detection defaults to the moment of opening; the tier to the environment's (an alert route may override).
        `also` makes events (for the new id) written in the same transaction, such as suggested runbooks."""
        now = self.clock.now()
        detected = detected_at or now

        def items(incident_id: str) -> list[ChecklistItem]:
            if not checklist:  # a drill: nobody is paged, nothing to acknowledge
                return []
            return [ChecklistItem(incident_id=incident_id, item_id=f"{phase.id}.{item.id}", phase=phase.id,
                                  text=item.text, due_at=detected + item.due)
                    for phase in self.catalog.checklist.phases for item in phase.items]

        incident, created, stored = self.store.create_incident(
            title=title, severity=severity, environment=env.name, tier=tier or env.tier, opened_by=actor,
            opened_at=now, detected_at=detected, external=external, external_key=external_key, checklist=items,
            also=also, event_text=f"{actor} opened the incident: {title} ({severity}, {env.name}, tier "
                                  f"{tier or env.tier}); detected {iso(detected)}.")
        self.events.publish_all(stored)
        return incident, created

    def open(self, command: g.IncidentOpen, *, actor: str, channel: str | None = None) -> Reply:
        env = self.settings.environment(command.environment) if command.environment \
            else self.settings.default_environment()
        incident, _ = self.create(title=command.title, severity=command.severity or "sev2", env=env, actor=actor,
                                  external={CHANNEL: channel} if channel else None)
        tier = self.settings.tier(incident.tier)
        return Reply(text=f"{incident.id} opened: {incident.title} ({incident.severity}, {env.name}, tier "
                          f"{tier.name}: RTO target {format_duration(tier.rto)}, RPO target "
                          f"{format_duration(tier.rpo)}). Detected {iso(incident.detected_at)}.\n"
                          + self.checklist_text(incident),
                     buttons=self.checklist_buttons(incident), incident_id=incident.id)

    # ------------------------------------------------------------------------------------------- times

    def set_detected(self, incident: Incident, command: g.IncidentDetected, *, actor: str) -> Reply:
        _require_open(incident)
        if command.at > self.clock.now():
            raise CommandError(f"{command.expression} is in the future; the detection time must be in the past.")
        now = self.clock.now()
        stored = self.store.change_incident(
            incident.id, detected_at=command.at, event=Event(
                incident_id=incident.id, at=now, actor=actor, kind=EventKind.INCIDENT_DETECTED,
                text=f"{actor} set the detection time to {iso(command.at)} (was {iso(incident.detected_at)}).",
                data={"detected_at": iso(command.at), "previous": iso(incident.detected_at)}))
        self.store.shift_checklist(incident_id=incident.id, delta=command.at - incident.detected_at)
        self.events.publish(stored)
        return Reply(text=f"{incident.id}: detected at {iso(command.at)} (from `{command.expression}`); "
                          f"the RTO clock starts there.", incident_id=incident.id)

    def set_impact(self, incident: Incident, command: g.IncidentImpact, *, actor: str) -> Reply:
        _require_open(incident)
        now = self.clock.now()
        previous = f" (was {iso(incident.impact_start_at)})" if incident.impact_start_at else ""
        self.events.publish(self.store.change_incident(incident.id, impact_start_at=command.at, event=Event(
            incident_id=incident.id, at=now, actor=actor, kind=EventKind.INCIDENT_IMPACT,
            text=f"{actor} set the impact start to {iso(command.at)}{previous}.",
            data={"impact_start_at": iso(command.at)})))
        return Reply(text=f"{incident.id}: impact started at {iso(command.at)} (from `{command.expression}`); the "
                          f"RPO is measured from it. " + self.records.summary(incident.id), incident_id=incident.id)

    def set_restored(self, incident: Incident, *, actor: str) -> Reply:
        _require_open(incident)
        if incident.restored_at is not None:
            raise CommandError(f"{incident.id} was already marked restored at {iso(incident.restored_at)}.")
        self.mark_restored(incident_id=incident.id, actor=actor, why=f"marked by {actor}",
                           dedupe=f"{incident.id}:restored:manual")
        return Reply(text=self.records.summary(incident.id), incident_id=incident.id)

    def mark_restored(self, *, incident_id: str, actor: str, why: str, dedupe: str) -> None:
        """Stop the RTO clock (once): by hand, or when a recovery runbook succeeds."""
        incident = self.store.get_incident(incident_id)
        if incident is None or incident.restored_at is not None:
            return
        now = self.clock.now()
        elapsed = format_duration(now - incident.detected_at)
        self.events.publish(self.store.change_incident(
            incident.id, restored_at=now, status=IncidentStatus.RESTORED, dedupe_key=dedupe,
            event=Event(incident_id=incident.id, at=now, actor=actor, kind=EventKind.INCIDENT_RESTORED,
                        text=f"Service restored: {why}. RTO {elapsed}.", data={"why": why})))

    def resolve(self, incident: Incident, command: g.IncidentResolve, *, actor: str) -> Reply:
        _require_open(incident)
        active = [r for r in self.store.runs_for(incident_id=incident.id) if not r.status.finished]
        if active:
            raise CommandError(f"{incident.id} still has "
                               f"{', '.join(r.id + ' (' + r.status.value + ')' for r in active)}; let it finish or "
                               f"cancel it before resolving.")
        now = self.clock.now()
        fields: dict[str, Any] = {"status": IncidentStatus.RESOLVED, "resolved_at": now,
                                  "resolution_note": command.note}
        if incident.restored_at is None:
            fields["restored_at"] = now
        self.events.publish(self.store.change_incident(incident.id, event=Event(
            incident_id=incident.id, at=now, actor=actor, kind=EventKind.INCIDENT_RESOLVED,
            text=f"{actor} resolved the incident" + (f": {command.note}" if command.note else "."),
            data={"note": command.note}), **fields))
        if self.upstream is not None:
            self.upstream(incident, command.note, actor)
        return Reply(text=f"{incident.id} resolved. " + self.records.summary(incident.id), incident_id=incident.id)

    def end_drill(self, run: Run) -> None:
        """A drill's incident ends with its run: resolved, the run's outcome as the note. Idempotent."""
        incident = self.store.get_incident(run.incident_id)
        if incident is None or not incident.drill or incident.status is IncidentStatus.RESOLVED:
            return
        ended = self.store.get_run(run.id)
        outcome = ended.status.value if ended is not None else run.status.value
        now = self.clock.now()
        note = f"drill {run.id} {outcome}"
        fields: dict[str, Any] = {"status": IncidentStatus.RESOLVED, "resolved_at": now, "resolution_note": note}
        if incident.restored_at is None:
            fields["restored_at"] = now
        self.events.publish(self.store.change_incident(incident.id, event=Event(
            incident_id=incident.id, at=now, actor="drbot", kind=EventKind.INCIDENT_RESOLVED,
            text=f"Drill over: {run.id} {outcome}.", data={"note": note}), **fields))

    def warn_budgets(self) -> None:
        """Warn once at 50/75/100 % of the RTO target for each open, unrestored incident."""
        now = self.clock.now()
        for incident in self.store.list_incidents(open_only=True):
            if incident.restored_at is not None or incident.drill:
                continue
            tier = self.settings.tier(incident.tier)
            already = [pct for pct in THRESHOLDS if self.store.has_event(dedupe_key=f"{incident.id}:rto:{pct}")]
            for pct in crossed_thresholds(incident=incident, tier=tier, now=now, already=already):
                b = budget(incident=incident, tier=tier, now=now)
                self.events.emit(Event(incident_id=incident.id, at=now, actor="drbot", kind=EventKind.RTO_WARNING,
                                       text=f"RTO budget {pct}% used: {format_duration(b.elapsed)} of "
                                            f"{format_duration(b.target)} ({tier.name} target).",
                                       data={"percent": pct, "elapsed_seconds": b.elapsed.total_seconds()}),
                                 dedupe_key=f"{incident.id}:rto:{pct}")

    # ------------------------------------------------------------------------------------------- checklist

    def tick(self, *, incident_id: str, item_id: str, actor: str) -> Reply:
        incident = self.store.get_incident(incident_id)
        item = next((i for i in self.store.checklist(incident_id=incident_id) if i.item_id == item_id), None)
        if incident is None or item is None:
            raise NotFound(f"There is no checklist item {item_id!r} in {incident_id}.")
        if item.done_at is not None:
            raise CommandError(f"“{item.text}” was already ticked by {item.done_by} at {iso(item.done_at)}.")
        now = self.clock.now()
        late = f" ({format_duration(now - item.due_at)} after its due time)" if now > item.due_at else ""
        event = Event(incident_id=incident_id, at=now, actor=actor, kind=EventKind.CHECKLIST_TICKED,
                      text=f"{actor} ticked “{item.text}”{late}.", data={"item_id": item_id, "phase": item.phase})
        stored = self.store.tick(incident_id=incident_id, item_id=item_id, actor=actor, at=now, event=event)
        if stored is None:
            raise CommandError(f"“{item.text}” was just ticked by someone else.")
        self.events.publish(stored)
        items = self.store.checklist(incident_id=incident_id)
        done = sum(1 for i in items if i.done_at)
        return Reply(text=f"Ticked: {item.text} — by {actor} at {iso(now)}{late}. Checklist {done}/{len(items)}.",
                     incident_id=incident_id)

    def checklist_text(self, incident: Incident) -> str:
        items = self.store.checklist(incident_id=incident.id)
        done = sum(1 for i in items if i.done_at)
        return f"Checklist: {done}/{len(items)} done (`/dr status` shows the open items as buttons)."

    def checklist_buttons(self, incident: Incident) -> tuple[Button, ...]:
        titles = {p.id: p.title for p in self.catalog.checklist.phases}
        today = self.clock.now().date()

        def due(at: datetime) -> str:
            return at.strftime("%H:%MZ") if at.date() == today else at.strftime("%b %d %H:%MZ")

        return tuple(Button(f"{titles.get(i.phase, i.phase)}: {i.text} (due {due(i.due_at)})", "tick",
                            f"{incident.id}:{i.item_id}")
                     for i in self.store.checklist(incident_id=incident.id) if i.done_at is None)

    # ------------------------------------------------------------------------------------------- status

    def status(self, incident: Incident) -> Reply:
        tier = self.settings.tier(incident.tier)
        now = self.clock.now()
        b = budget(incident=incident, tier=tier, now=now)
        lines = [f"{incident.id}: {incident.title} ({incident.severity}, {incident.environment}) — "
                 f"{incident.status.value}",
                 f"Detected {iso(incident.detected_at)}; RTO budget {format_duration(b.elapsed)} of "
                 f"{format_duration(b.target)} ({b.percent:.0f}%)"
                 + (f", restored at {iso(incident.restored_at)}" if incident.restored_at else "")]
        for run in self.store.runs_for(incident_id=incident.id):
            line = f"• {run.id} {run.runbook} on {run.environment}: {run.status.value} (by {run.requested_by})"
            for req in self.store.requests_for(run_id=run.id):
                if req.status == "pending":
                    votes = self.store.votes(request_id=req.id)
                    line += f"; {req.id} {rule.describe(request=req, votes=votes, now=now)}"
            if not run.status.finished:
                line += f" — to stop it: `/dr cancel {run.id}`"
            elif run.status.value in FAILED_RUN:
                line += f" — to run it again: `/dr retry {run.id}`"
            lines.append(line)
        items = self.store.checklist(incident_id=incident.id)
        overdue = [i for i in items if i.done_at is None and i.due_at < now]
        if items:
            lines.append(f"Checklist: {sum(1 for i in items if i.done_at)}/{len(items)} done"
                         + (f", {len(overdue)} overdue" if overdue else ""))
        leaked = leaks_line(Ledger(self.store).leaks(now=now, ttl=self.settings.drills.ttl),
                            ttl=self.settings.drills.ttl)
        if leaked:
            lines.append(leaked)
        return Reply(text="\n".join(lines), buttons=self.pending_buttons(incident) + self.checklist_buttons(incident),
                     incident_id=incident.id, public=False)

    def pending_buttons(self, incident: Incident) -> tuple[Button, ...]:
        """The buttons of every question still open in the incident, so they can be pressed again after a restart
        or when the original message has scrolled away."""
        buttons: list[Button] = []
        for run in self.store.runs_for(incident_id=incident.id):
            if run.status.finished:
                continue
            for req in self.store.requests_for(run_id=run.id):
                if req.status != "pending":
                    continue
                if req.gate == "plan":
                    buttons += [Button(f"Approve {run.id}", "approve", req.id, "primary"),
                                Button(f"Reject {run.id}", "reject", req.id, "danger")]
                else:
                    buttons.append(Button(f"{req.option.capitalize()} {run.id} {req.step_id}",
                                          button_action(req.option), req.id))
        return tuple(buttons)


def _require_open(incident: Incident) -> None:
    if incident.status is IncidentStatus.RESOLVED:
        raise CommandError(f"{incident.id} is already resolved.")
