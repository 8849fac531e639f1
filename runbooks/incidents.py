"""Incident commands: open, detected, restored, resolve, status, checklist ticks, and which runbook a
`/dr` command runs. Split from the engine façade to keep each module about one thing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbooks import approvals as rule
from runbooks import grammar as g
from runbooks.catalog import COMMAND_RUNBOOKS
from runbooks.errors import CommandError, NotFound
from runbooks.models import ChecklistItem, Environment, Event, Incident, IncidentRecord, IncidentStatus
from runbooks.replies import Button, Reply
from runbooks.timeline import budget, format_duration, iso, rpo, rto

if TYPE_CHECKING:
    from runbooks.engine import Engine


def _reply(**kwargs: Any) -> Reply:
    return Reply(**kwargs)


def default_environment(engine: Engine) -> Environment:
    envs = engine.settings.environments
    return envs["prod"] if "prod" in envs else next(iter(envs.values()))


def create(engine: Engine, *, title: str, severity: str, env: Environment, actor: str,
           detected_at: datetime | None = None, external: dict[str, Any] | None = None,
           external_key: str | None = None, tier: str | None = None,
           also: Callable[[str], list[Event]] | None = None) -> tuple[Incident, bool]:
    """Open an incident with its own checklist instance. Idempotent on `external_key` (a PagerDuty id).
    Detection defaults to the moment of opening; the tier to the environment's (an alert route may override).
    `also` makes events (for the new id) written in the same transaction, such as suggested runbooks."""
    now = engine.clock.now()
    detected_at = detected_at or now

    def checklist(incident_id: str) -> list[ChecklistItem]:
        return [ChecklistItem(incident_id=incident_id, item_id=f"{phase.id}.{item.id}", phase=phase.id,
                              text=item.text, due_at=detected_at + item.due)
                for phase in engine.catalog.checklist.phases for item in phase.items]

    incident, created, stored = engine.store.create_incident(
        title=title, severity=severity, environment=env.name, tier=tier or env.tier, opened_by=actor, opened_at=now,
        detected_at=detected_at, external=external, external_key=external_key, checklist=checklist, also=also,
        event_text=f"{actor} opened the incident: {title} ({severity}, {env.name}, tier {tier or env.tier}); "
                   f"detected {iso(detected_at)}.")
    for event in stored:
        engine.publish(event)
    return incident, created


def open_incident(engine: Engine, command: g.IncidentOpen, *, actor: str) -> Reply:
    env = engine.environment(command.environment) if command.environment else default_environment(engine)
    incident, _ = create(engine, title=command.title, severity=command.severity or "sev2", env=env, actor=actor)
    tier = engine.tier(incident.tier)
    return _reply(text=f"{incident.id} opened: {incident.title} ({incident.severity}, {env.name}, tier {tier.name}: "
                       f"RTO target {format_duration(tier.rto)}, RPO target {format_duration(tier.rpo)}). "
                       f"Detected {iso(incident.detected_at)}.\n" + checklist_text(engine, incident),
                  buttons=checklist_buttons(engine, incident), incident_id=incident.id)


def incident_for(engine: Engine, *, env: Environment, incident_id: str | None, actor: str,
                 reason: str) -> tuple[Incident, bool]:
    """The incident a runbook command belongs to; opens one (detected now) when none is open for `env`."""
    if incident_id is not None:
        found = engine.store.get_incident(incident_id)
        if found is None:
            raise NotFound(f"There is no incident {incident_id}.")
        if found.status is not IncidentStatus.RESOLVED and found.environment == env.name:
            return found, False
    candidates = [i for i in engine.store.list_incidents(open_only=True) if i.environment == env.name]
    if len(candidates) == 1:
        return candidates[0], False
    if len(candidates) > 1:
        raise CommandError(f"Several incidents are open for {env.name} (" + ", ".join(i.id for i in candidates) +
                           "): run the command in the incident's thread (shell: `:incident INC-n` first).")
    return create(engine, title=reason, severity="sev2", env=env, actor=actor)


def set_detected(engine: Engine, incident: Incident, command: g.IncidentDetected, *, actor: str) -> Reply:
    _require_open(incident)
    if command.at > engine.clock.now():
        raise CommandError(f"{command.expression} is in the future; the detection time must be in the past.")
    now = engine.clock.now()
    updated = engine.store.update_incident(
        incident.id, detected_at=command.at, event=Event(
            incident_id=incident.id, at=now, actor=actor, kind="incident.detected",
            text=f"{actor} set the detection time to {iso(command.at)} (was {iso(incident.detected_at)}).",
            data={"detected_at": iso(command.at), "previous": iso(incident.detected_at)}))
    engine.store.shift_checklist(incident_id=incident.id, delta=command.at - incident.detected_at)
    engine.publish(engine.store.events_for(incident_id=incident.id)[-1])
    return _reply(text=f"{incident.id}: detected at {iso(updated.detected_at)} (from `{command.expression}`); "
                       f"the RTO clock starts there.", incident_id=incident.id)


def set_impact(engine: Engine, incident: Incident, command: g.IncidentImpact, *, actor: str) -> Reply:
    _require_open(incident)
    now = engine.clock.now()
    previous = f" (was {iso(incident.impact_start_at)})" if incident.impact_start_at else ""
    engine.store.update_incident(incident.id, impact_start_at=command.at, event=Event(
        incident_id=incident.id, at=now, actor=actor, kind="incident.impact",
        text=f"{actor} set the impact start to {iso(command.at)}{previous}.",
        data={"impact_start_at": iso(command.at)}))
    engine.publish(engine.store.events_for(incident_id=incident.id)[-1])
    return _reply(text=f"{incident.id}: impact started at {iso(command.at)} (from `{command.expression}`); the RPO "
                       f"is measured from it. " + summary_line(engine, engine.record(incident.id)),
                  incident_id=incident.id)


def set_restored(engine: Engine, incident: Incident, *, actor: str) -> Reply:
    _require_open(incident)
    if incident.restored_at is not None:
        raise CommandError(f"{incident.id} was already marked restored at {iso(incident.restored_at)}.")
    engine.mark_restored(incident_id=incident.id, actor=actor, why=f"marked by {actor}",
                         dedupe=f"{incident.id}:restored:manual")
    return _reply(text=summary_line(engine, engine.record(incident.id)), incident_id=incident.id)


def resolve(engine: Engine, incident: Incident, command: g.IncidentResolve, *, actor: str) -> Reply:
    _require_open(incident)
    active = [r for r in engine.store.runs_for(incident_id=incident.id) if not r.status.finished]
    if active:
        raise CommandError(f"{incident.id} still has {', '.join(r.id + ' (' + r.status.value + ')' for r in active)}"
                           f"; let it finish or cancel it before resolving.")
    now = engine.clock.now()
    fields: dict[str, Any] = {"status": IncidentStatus.RESOLVED, "resolved_at": now,
                              "resolution_note": command.note}
    if incident.restored_at is None:
        fields["restored_at"] = now
    engine.store.update_incident(incident.id, event=Event(
        incident_id=incident.id, at=now, actor=actor, kind="incident.resolved",
        text=f"{actor} resolved the incident" + (f": {command.note}" if command.note else "."),
        data={"note": command.note}), **fields)
    engine.publish(engine.store.events_for(incident_id=incident.id)[-1])
    from runbooks.pagerduty_sync import resolve_upstream  # (it imports this module)

    resolve_upstream(engine, incident=incident, note=command.note, actor=actor)
    return _reply(text=f"{incident.id} resolved. " + summary_line(engine, engine.record(incident.id)),
                  incident_id=incident.id)


def _require_open(incident: Incident) -> None:
    if incident.status is IncidentStatus.RESOLVED:
        raise CommandError(f"{incident.id} is already resolved.")


def tick(engine: Engine, *, incident_id: str, item_id: str, actor: str) -> Reply:
    incident = engine.store.get_incident(incident_id)
    item = next((i for i in engine.store.checklist(incident_id=incident_id) if i.item_id == item_id), None)
    if incident is None or item is None:
        raise NotFound(f"There is no checklist item {item_id!r} in {incident_id}.")
    if item.done_at is not None:
        raise CommandError(f"“{item.text}” was already ticked by {item.done_by} at {iso(item.done_at)}.")
    now = engine.clock.now()
    late = f" ({format_duration(now - item.due_at)} after its due time)" if now > item.due_at else ""
    event = Event(incident_id=incident_id, at=now, actor=actor, kind="checklist.ticked",
                  text=f"{actor} ticked “{item.text}”{late}.", data={"item_id": item_id, "phase": item.phase})
    if not engine.store.tick(incident_id=incident_id, item_id=item_id, actor=actor, at=now, event=event):
        raise CommandError(f"“{item.text}” was just ticked by someone else.")
    engine.publish(engine.store.events_for(incident_id=incident_id)[-1])
    done = sum(1 for i in engine.store.checklist(incident_id=incident_id) if i.done_at)
    total = len(engine.store.checklist(incident_id=incident_id))
    return _reply(text=f"Ticked: {item.text} — by {actor} at {iso(now)}{late}. Checklist {done}/{total}.",
                  incident_id=incident_id)


def checklist_text(engine: Engine, incident: Incident) -> str:
    items = engine.store.checklist(incident_id=incident.id)
    done = sum(1 for i in items if i.done_at)
    return f"Checklist: {done}/{len(items)} done (`/dr status` shows the open items as buttons)."


def checklist_buttons(engine: Engine, incident: Incident) -> tuple[Button, ...]:
    titles = {p.id: p.title for p in engine.catalog.checklist.phases}
    today = engine.clock.now().date()

    def due(at: datetime) -> str:
        return at.strftime("%H:%MZ") if at.date() == today else at.strftime("%b %d %H:%MZ")

    return tuple(Button(f"{titles.get(i.phase, i.phase)}: {i.text} (due {due(i.due_at)})", "tick",
                        f"{incident.id}:{i.item_id}")
                 for i in engine.store.checklist(incident_id=incident.id) if i.done_at is None)


def status(engine: Engine, incident: Incident) -> Reply:
    tier = engine.tier(incident.tier)
    now = engine.clock.now()
    b = budget(incident=incident, tier=tier, now=now)
    lines = [f"{incident.id}: {incident.title} ({incident.severity}, {incident.environment}) — {incident.status.value}",
             f"Detected {iso(incident.detected_at)}; RTO budget {format_duration(b.elapsed)} of "
             f"{format_duration(b.target)} ({b.percent:.0f}%)"
             + (f", restored at {iso(incident.restored_at)}" if incident.restored_at else "")]
    for run in engine.store.runs_for(incident_id=incident.id):
        line = f"• {run.id} {run.runbook} on {run.environment}: {run.status.value} (by {run.requested_by})"
        for req in engine.store.requests_for(run_id=run.id):
            if req.status == "pending":
                line += f"; {req.id} {rule.describe(request=req, votes=engine.store.votes(request_id=req.id), now=now)}"
        if not run.status.finished:
            line += f" — to stop it: `/dr cancel {run.id}`"
        elif run.status.value in ("failed", "cancelled", "expired", "rejected"):
            line += f" — to run it again: `/dr retry {run.id}`"
        lines.append(line)
    items = engine.store.checklist(incident_id=incident.id)
    overdue = [i for i in items if i.done_at is None and i.due_at < now]
    pending = pending_buttons(engine, incident)
    lines.append(f"Checklist: {sum(1 for i in items if i.done_at)}/{len(items)} done"
                 + (f", {len(overdue)} overdue" if overdue else ""))
    return _reply(text="\n".join(lines), buttons=pending + checklist_buttons(engine, incident),
                  incident_id=incident.id, public=False)


def pending_buttons(engine: Engine, incident: Incident) -> tuple[Button, ...]:
    """The buttons of every question still open in the incident, so they can be pressed again after a restart
    or when the original message has scrolled away."""
    buttons: list[Button] = []
    for run in engine.store.runs_for(incident_id=incident.id):
        if run.status.finished:
            continue
        for req in engine.store.requests_for(run_id=run.id):
            if req.status != "pending":
                continue
            if req.gate == "plan":
                buttons += [Button(f"Approve {run.id}", "approve", req.id, "primary"),
                            Button(f"Reject {run.id}", "reject", req.id, "danger")]
            else:
                buttons.append(Button(f"{req.option.capitalize()} {run.id} {req.step_id}", req.option, req.id))
    return tuple(buttons)


def summary_line(engine: Engine, record: IncidentRecord) -> str:
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


def runbook_request(engine: Engine, command: g.Command) -> tuple[str, str, dict[str, Any], str]:
    """(runbook name, environment, run parameters, the sentence echoing what was resolved)."""
    name = COMMAND_RUNBOOKS.get(type(command).__name__)
    now = engine.clock.now()
    if isinstance(command, g.RestoreDatabase):
        assert name is not None
        if command.at is None:
            return name, command.environment, {"time": "latest"}, "Restore point: the latest restorable time."
        return (name, command.environment, {"time": iso(command.at)},
                f"Restore point: {iso(command.at)} (from `{command.expression}`).")
    if isinstance(command, g.RestoreK8s):
        assert name is not None
        return name, command.environment, {"backup": command.backup or "latest"}, \
            f"Backup: {command.backup or 'the newest Completed backup'}."
    if isinstance(command, g.RestoreVectors):
        assert name is not None
        return name, command.environment, {"snapshot": command.snapshot or "latest"}, \
            f"Snapshot: {command.snapshot or 'the newest snapshot'}."
    if isinstance(command, g.UndeleteObjects):
        assert name is not None
        since = iso(command.since) if command.since else "latest"
        echo = (f"Undoing deletions since {since} (from `{command.expression}`)." if command.since
                else "Undoing every deletion under the prefix.")
        return name, command.environment, {"prefix": command.prefix, "since": since}, echo
    if isinstance(command, g.PromoteReplica | g.FailoverDns | g.FailoverRegion):
        assert name is not None
        return name, command.environment, {}, ""
    if isinstance(command, g.RunRunbook):
        return _run_params(engine, command, now=now)
    raise CommandError(f"drbot does not know how to run {type(command).__name__}.")


def _run_params(engine: Engine, command: g.RunRunbook, *, now: datetime) -> tuple[str, str, dict[str, Any], str]:
    runbook = engine.catalog.get(command.runbook)
    declared = {p.name: p for p in runbook.params}
    unknown = sorted(set(command.params) - set(declared))
    if unknown:
        form = " ".join(f"{p.name}=<{p.kind}>" for p in runbook.params) or "(no parameters)"
        raise CommandError(f"{runbook.name} has no parameter {unknown[0]!r}. "
                           f"Usage: /dr run {runbook.name} <env> {form}")
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
    return runbook.name, command.environment, values, "; ".join(echo)
