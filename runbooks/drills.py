"""Drills: a recovery runbook run against isolated targets, its clean-up, and the ledger of what it made.

A runbook says how it drills in its `drill:` block (`runbooks.models.DrillSpec`): per step, what changes (the
restore's target becomes `<instance>-drill-<run>`, the cut-over becomes a read-only check) and which clean-up
steps delete what the drill made. `drill_variant` applies that block and gives the runbook a drill runs; a
runbook without one, or whose block says `refuse:`, is refused with that sentence.

The ledger (`Ledger`) records each resource a step `creates` as the step begins — before the provider is asked,
so a crash in the middle still leaves it written down — and marks it gone when a clean-up step that `removes` it
succeeds. `drbot drills leaks` and `/dr status` list what is still there past its time to live.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbooks.actions import ACTIONS
from runbooks.errors import CommandError
from runbooks.models import Plan, Runbook, StepSpec
from runbooks.ports import StateStore
from runbooks.timeline import format_duration, iso, parse_iso

__all__ = ["BANNER", "DEFAULT_TTL", "DRILL", "LEDGER", "Ledger", "Leak", "drill_prefix_problem",
           "drill_replica_problem", "drill_variant", "drillable", "leaks_line", "leaks_text", "plan_lines"]

BANNER = "DRILL — no live resource is changed"
DRILL = "drill"
"""The key in a drill incident's `external` that marks it (`Incident.drill`)."""
LEDGER = "drill.resources"
"""The provider-state kind of the ledger; one entry per (run, step) that creates something."""
DEFAULT_TTL = timedelta(hours=6)
"""How long a drill's resource may live before `drbot drills leaks` reports it (`drills.ttl` in drbot.yml)."""


def drillable(runbook: Runbook) -> str:
    """Why `runbook` cannot be drilled ("" when it can)."""
    if runbook.drill is None:
        return (f"{runbook.name} does not say how to drill it (no `drill:` block in its runbook file), so drbot will "
                f"not guess which of its steps are safe against live resources.")
    if runbook.drill.refuse:
        return f"{runbook.name} cannot be drilled safely: {runbook.drill.refuse}"
    return ""


def drill_variant(runbook: Runbook) -> Runbook:
    """The runbook a drill of `runbook` runs: its `drill.steps` overrides applied, the drill's own `drill.add`
    steps appended, its clean-up and the drill's together, never marking anything restored. A `CommandError` when
    it cannot be drilled."""
    why = drillable(runbook)
    if why:
        raise CommandError(why)
    assert runbook.drill is not None
    overrides = runbook.drill.steps
    removed = {sid for sid, o in overrides.items() if o.remove}
    waits = {step.id: step.after for step in runbook.steps}

    def kept(after: tuple[str, ...]) -> tuple[str, ...]:
        """`after` without the removed steps, each replaced by what it waited for, so the order around it holds."""
        out: list[str] = []
        todo, seen = list(after), set()
        while todo:
            dep = todo.pop(0)
            if dep in seen:
                continue
            seen.add(dep)
            if dep in removed:
                todo.extend(waits.get(dep, ()))
            elif dep not in out:
                out.append(dep)
        return tuple(out)

    steps: list[StepSpec] = []
    for step in runbook.steps:
        if step.id in removed:
            continue
        change: dict[str, Any] = {"after": kept(step.after), "marks_restored": False}
        override = overrides.get(step.id)
        if override is not None:
            for key in ("title", "action", "guarded", "verify", "creates"):
                value = getattr(override, key)
                if value is not None:
                    change[key] = value
            if override.after is not None:
                change["after"] = kept(override.after)
            params = dict(step.params)
            new = ACTIONS.get(override.action or step.action)
            if override.action not in (None, step.action) and new is not None:
                # the old action's own parameters and timeline facts do not carry over to another action
                params = {k: v for k, v in params.items() if k in new.required | new.optional}
                change["records"] = {fact: out for fact, out in step.records.items() if out in new.outputs}
            if override.params is not None or params != step.params:
                change["params"] = {**params, **(override.params or {})}
            if override.records is not None:
                change["records"] = dict(override.records)
        steps.append(step.model_copy(update=change))
    steps += [step.model_copy(update={"after": kept(step.after), "marks_restored": False})
              for step in runbook.drill.add]
    return runbook.model_copy(update={
        "steps": tuple(steps), "cleanup": (*runbook.cleanup, *runbook.drill.cleanup), "recovery": False,
        "drilled": True})


def plan_lines(plan: Plan, *, summary: str = "") -> list[str]:
    """What a plan says about drills and clean-up, above its steps: the banner, what it creates and what the
    clean-up deletes at the end whatever happens. Empty for a plan that neither drills nor creates anything."""
    lines = []
    if plan.drill:
        lines.append(f"{BANNER}." + (f" {summary.strip()}" if summary.strip() else ""))
    if plan.creates:
        made = {c["name"]: c["kind"] for c in reversed(plan.creates)}  # one line per thing, its first kind
        lines.append("Creates: " + "; ".join(f"{kind} {name}" for name, kind in reversed(made.items())) + ".")
    if plan.cleanup:
        lines.append("Deletes at the end, whatever happens (success, failure, cancel, a crash): "
                     + "; ".join(step.title.rstrip(".") + (f" ({_target(step.params)})" if _target(step.params) else "")
                                 for step in plan.cleanup) + ".")
    return lines


def _target(params: Mapping[str, Any]) -> str:
    """What a clean-up step deletes, from its parameters (an instance, a namespace, a collection, a prefix)."""
    for key in ("instance", "namespace", "collection"):
        if params.get(key):
            return str(params[key])
    if params.get("bucket") and params.get("prefix"):
        return f"s3://{params['bucket']}/{params['prefix']}"
    return ""


_DRILL_PREFIX = re.compile(r"^drill-[a-z0-9]+/")


def drill_prefix_problem(bucket: str, prefix: str) -> str:
    """Why an object store's `delete_prefix` refuses `prefix` ("" when it is one drill's own prefix, `drill-r7/`):
    the rule the S3 provider and its sandbox twin share, so a clean-up can never reach live keys."""
    if _DRILL_PREFIX.match(prefix):
        return ""
    return (f"Refusing to delete under `{prefix}` in bucket `{bucket}`: delete_prefix only removes what one drill "
            f"copied, under its own prefix `drill-<run>/` (e.g. drill-r1/); live objects are never deleted this way.")


def drill_replica_problem(target: str) -> str:
    """Why `database.create_replica` refuses `target` ("" for a drill's stand-in, `<source>-drill-<run>`): the rule
    RDS and its sandbox twin share."""
    if "-drill-" in target:
        return ""
    return (f"Refusing to create replica `{target}`: create_replica only makes a drill's stand-in replica, "
            "named `<source>-drill-<run id>`; the live replica is configured, not created.")


# --------------------------------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class Leak:
    """A drill resource still present (not confirmed deleted) past its time to live."""

    run_id: str
    incident_id: str
    environment: str
    step_id: str
    kind: str
    name: str
    provider: str
    created_at: datetime
    age: timedelta

    def sentence(self) -> str:
        return (f"{self.kind} {self.name} ({self.provider}, {self.environment}), made by {self.run_id} "
                f"{format_duration(self.age)} ago and not deleted")


class Ledger:
    """What drills made and whether it is gone, in provider state (`LEDGER`), keyed `<run>:<step>`."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def record(self, *, run_id: str, incident_id: str, environment: str, step_id: str, kind: str, name: str,
               provider: str, at: datetime) -> None:
        """Write the resource down before it is asked for (again: a retried step keeps the first time)."""
        key = f"{run_id}:{step_id}"
        if self.state.load_state(kind=LEDGER, key=key) is not None:
            return
        if any(entry.get("name") == name for entry in self.of_run(run_id)):
            return  # a later step acting on what an earlier one made (promoting the drill's own replica)
        self.state.save_state(kind=LEDGER, key=key, value={
            "run_id": run_id, "incident_id": incident_id, "environment": environment, "step_id": step_id,
            "kind": kind, "name": name, "provider": provider, "created_at": iso(at), "gone_at": None})

    def gone(self, *, run_id: str, step_ids: tuple[str, ...], at: datetime) -> None:
        for step_id in step_ids:
            key = f"{run_id}:{step_id}"
            entry = self.state.load_state(kind=LEDGER, key=key)
            if entry is not None and entry.get("gone_at") is None:
                self.state.save_state(kind=LEDGER, key=key, value={**entry, "gone_at": iso(at)})

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        """The run's resources, each with `gone_at` (None while present)."""
        mine = [entry for key, entry in self.state.list_state(kind=LEDGER).items() if key.startswith(f"{run_id}:")]
        return sorted(mine, key=lambda e: str(e.get("created_at")))

    def began(self, run_id: str, step_id: str) -> bool:
        return self.state.load_state(kind=LEDGER, key=f"{run_id}:{step_id}") is not None

    def leaks(self, *, now: datetime, ttl: timedelta = DEFAULT_TTL) -> list[Leak]:
        """Every resource not confirmed deleted that is older than `ttl`, oldest first."""
        found = []
        for entry in self.state.list_state(kind=LEDGER).values():
            if entry.get("gone_at") is not None:
                continue
            created = parse_iso(str(entry["created_at"]))
            if now - created < ttl:
                continue
            found.append(Leak(run_id=str(entry["run_id"]), incident_id=str(entry["incident_id"]),
                              environment=str(entry["environment"]), step_id=str(entry["step_id"]),
                              kind=str(entry["kind"]), name=str(entry["name"]), provider=str(entry["provider"]),
                              created_at=created, age=now - created))
        return sorted(found, key=lambda leak: leak.created_at)


def leaks_text(leaks: list[Leak], *, ttl: timedelta, fmt: str = "text") -> str:
    """`drbot drills leaks`: one line per leaked resource with what to do, or JSON."""
    if fmt == "json":
        return json.dumps([{"run_id": leak.run_id, "incident_id": leak.incident_id, "environment": leak.environment,
                            "step_id": leak.step_id, "kind": leak.kind, "name": leak.name, "provider": leak.provider,
                            "created_at": iso(leak.created_at), "age_seconds": int(leak.age.total_seconds())}
                           for leak in leaks], indent=2) + "\n"
    if not leaks:
        return f"No drill resource is left past its TTL ({format_duration(ttl)}).\n"
    lines = [f"{len(leaks)} drill resource(s) still present past the {format_duration(ttl)} TTL — delete each by "
             f"hand (drbot deletes only what a clean-up step names), then check again:"]
    lines += [f"• {leak.sentence()}" for leak in leaks]
    return "\n".join(lines) + "\n"


def leaks_line(leaks: list[Leak], *, ttl: timedelta) -> str:
    """The `/dr status` line about leaked drill resources ("" when there are none)."""
    if not leaks:
        return ""
    shown = "; ".join(f"{leak.kind} {leak.name} ({leak.run_id})" for leak in leaks[:3])
    more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
    return (f":warning: {len(leaks)} drill resource(s) still present past the {format_duration(ttl)} TTL: "
            f"{shown}{more} — `drbot drills leaks` lists them.")
