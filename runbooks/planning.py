"""From a runbook, an environment and a command's parameters to the exact plan an approver sees.

Parameters that depend on an earlier step's outputs (the endpoint of the instance a restore creates) cannot be
known before the run; the plan shows them as `«restore.endpoint»`, and they are part of the plan hash in that
form, so the approval covers "whatever the restore step returns", which is exactly what the approver agreed to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from runbooks.models import Environment, Plan, PlannedStep, Run, Runbook, StepSpec
from runbooks.templating import render
from runbooks.timeline import parse_iso

BUILTIN = "builtin"


class _Pending(Mapping[str, Any]):
    """Stands for a value a step has not produced yet; any path below it is pending too."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getitem__(self, key: str) -> Any:
        return _Pending(f"{self.path}.{key}" if self.path else key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __str__(self) -> str:
        step, _, rest = self.path.partition(".outputs.")
        return f"«{step}.{rest}»" if rest else f"«{self.path}»"


def _resolve_pending(value: Any) -> Any:
    if isinstance(value, _Pending):
        return str(value)
    if isinstance(value, dict):
        return {k: _resolve_pending(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve_pending(v) for v in value]
    return value


def has_pending(value: Any) -> bool:
    if isinstance(value, str):
        return "«" in value
    if isinstance(value, dict):
        return any(has_pending(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_pending(v) for v in value)
    return False


def run_short(run_id: str) -> str:
    """The run's short id as templates see it (`{{ run.short }}`, `R-7` → `r7`): providers derive their target
    names' suffix from it, so this is the one definition both sides use."""
    return run_id.lower().replace("-", "")


def command_values(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """The `cmd` root: the command's parameters with defaults, times as datetimes."""
    values: dict[str, Any] = {}
    for spec in runbook.params:
        raw = params.get(spec.name, spec.default)
        if spec.kind == "time" and isinstance(raw, str):
            raw = None if raw in ("", "latest") else parse_iso(raw)
        values[spec.name] = raw
    for key, raw in params.items():
        values.setdefault(key, raw)
    return values


def context(*, run: Run, runbook: Runbook, environment: Environment,
            outputs: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """The template context. With `outputs=None` every step output is pending (planning time)."""
    env: dict[str, Any] = {"name": environment.name, "tier": environment.tier, "settings": dict(environment.settings)}
    for name, resource in environment.resources.items():
        env[name] = {"provider": resource.provider, **resource.settings()}
    steps: Mapping[str, Any]
    if outputs is None:
        steps = _Pending("")
    else:
        steps = {sid: {"outputs": dict(out)} for sid, out in outputs.items()}
        steps = _StepsWithPending(steps)
    return {"cmd": command_values(runbook, run.params), "env": env, "steps": steps,
            "run": {"id": run.id, "short": run_short(run.id)}, "incident": {"id": run.incident_id}}


class _StepsWithPending(Mapping[str, Any]):
    def __init__(self, done: Mapping[str, Any]) -> None:
        self.done = done

    def __getitem__(self, key: str) -> Any:
        return self.done[key] if key in self.done else _Pending(f"{key}")

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.done)

    def __len__(self) -> int:
        return len(self.done)


def render_params(step: StepSpec, ctx: Mapping[str, Any]) -> dict[str, Any]:
    rendered = render(dict(step.params), ctx)
    result = _resolve_pending(rendered)
    assert isinstance(result, dict)
    return result


def resource_of(step: StepSpec) -> str:
    return step.action.split(".", 1)[0]


def action_of(step: StepSpec) -> str:
    return step.action.split(".", 1)[1]


def build_plan(*, run: Run, runbook: Runbook, environment: Environment,
               details: Mapping[str, Mapping[str, Any]] | None = None,
               skipped: Mapping[str, str] | None = None) -> Plan:
    """The plan; a step in `skipped` (step id → why) is not rendered: it reads a setting that is not there."""
    ctx = context(run=run, runbook=runbook, environment=environment, outputs=None)

    def planned(step: StepSpec) -> PlannedStep:
        resource = resource_of(step)
        provider = BUILTIN if resource == BUILTIN else environment.resources[resource].provider
        why = (skipped or {}).get(step.id, "")
        params = {} if why else render_params(step, ctx)
        return PlannedStep(id=step.id, title=step.title, action=step.action, provider=provider, params=params,
                           guarded=step.guarded, after=step.after, details=dict((details or {}).get(step.id, {})),
                           skipped=why)

    creates = tuple({"step": step.id, "kind": step.creates.kind, "name": created_name(step, ctx)}
                    for step in runbook.steps if step.creates is not None and not (skipped or {}).get(step.id))
    return Plan(runbook=runbook.name, runbook_version=runbook.version, environment=environment.name,
                steps=tuple(planned(step) for step in runbook.steps), drill=runbook.drilled,
                cleanup=tuple(planned(step) for step in runbook.cleanup), creates=creates)


def created_name(step: StepSpec, ctx: Mapping[str, Any]) -> str:
    """The name of what `step` creates, rendered from the run's context (known before the step starts)."""
    assert step.creates is not None
    return str(render(step.creates.name, ctx))


def waves(runbook: Runbook) -> list[list[StepSpec]]:
    """Steps grouped so that each group depends only on earlier groups; a group runs concurrently."""
    remaining = list(runbook.steps)
    done: set[str] = set()
    result: list[list[StepSpec]] = []
    while remaining:
        ready = [s for s in remaining if set(s.after) <= done]
        if not ready:  # the catalog loader refuses cycles; this is a second line of defence
            raise ValueError(f"runbook {runbook.name} has a dependency cycle")
        result.append(ready)
        done |= {s.id for s in ready}
        remaining = [s for s in remaining if s.id not in done]
    return result
