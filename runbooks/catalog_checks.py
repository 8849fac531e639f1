"""The rules a runbook and the checklist must satisfy beyond their pydantic shape.

Each rule stops a mistake that would otherwise surface only while a run is in flight: an action or parameter
the providers do not know, a step reading an output of a step it does not wait for (a race that works in the
sandbox and fails in prod), a dependency cycle (a run that never finishes), a side effect outside the
two-person rule, an `env.settings` value read without being declared under `settings:` (then `drbot check` could
not say what it is for or give an example). Checks return every problem as `key.path: message` lines, so that
an author fixes a file in one pass; `runbooks.catalog` adds the file name and raises `ConfigError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from runbooks.actions import ACTIONS, RESOURCES, ActionInfo
from runbooks.models import Checklist, Runbook, StepSpec
from runbooks.templating import TemplateError, references

__all__ = [
    "CONTEXT_ROOTS",
    "ENV_FIELDS",
    "INCIDENT_FIELDS",
    "PARAM_KINDS",
    "RECORD_FACTS",
    "RUN_FIELDS",
    "VERIFY_OPS",
    "check_checklist",
    "check_runbook",
]

CONTEXT_ROOTS = frozenset({"cmd", "env", "run", "incident", "steps"})
RUN_FIELDS = frozenset({"id", "short"})
INCIDENT_FIELDS = frozenset({"id"})
ENV_FIELDS = frozenset({"name", "tier", "settings"}) | RESOURCES
"""`env.<resource>.<key>` reads the resource's settings from drbot.yml; `env.settings.<key>` free values."""
PARAM_KINDS = frozenset({"str", "time", "int", "bool"})
VERIFY_OPS = frozenset({"==", "!=", ">", ">=", "<", "<="})
RECORD_FACTS = frozenset({"restore_point", "replica_lag_seconds"})
"""Timeline facts a step may record from its outputs; the RPO is computed from them."""

_STEP_ID = re.compile(r"^[A-Za-z][\w-]*$")


def _names(values: Any) -> str:
    return ", ".join(sorted(values)) or "none"


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(close)}?" if close else f"expected one of: {_names(choices)}"


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string inside `value` with its key path, so a template problem points at the exact leaf."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


# --------------------------------------------------------------------------------------------- runbooks


def _check_params(runbook: Runbook, problems: list[str]) -> None:
    seen: set[str] = set()
    for i, param in enumerate(runbook.params):
        if param.name in seen:
            problems.append(f"params[{i}].name: duplicate parameter {param.name!r}")
        seen.add(param.name)
        if param.kind not in PARAM_KINDS:
            problems.append(f"params[{i}].kind: unknown kind {param.kind!r} (expected: {_names(PARAM_KINDS)})")
        if param.required and param.default is not None:
            problems.append(f"params[{i}].default: a required parameter has no default; "
                            f"drop `required: true` or the default")


def _check_step(runbook: Runbook, i: int, step: StepSpec, ids: set[str], problems: list[str]) -> None:
    at = f"steps[{i}]"
    if not _STEP_ID.match(step.id):
        problems.append(f"{at}.id: {step.id!r} is not a valid step id (letters, digits, _ or -, e.g. restore)")
    for j, dep in enumerate(step.after):
        if dep == step.id:
            problems.append(f"{at}.after[{j}]: a step cannot wait for itself")
        elif dep not in ids:
            problems.append(f"{at}.after[{j}]: no step called {dep!r} ({_suggest(dep, ids)})")
    if step.marks_restored and not runbook.recovery:
        problems.append(f"{at}.marks_restored: {runbook.name} is not a recovery runbook (recovery: false), "
                        f"so none of its steps may mark the service restored")
    action = ACTIONS.get(step.action)
    if action is None:
        problems.append(f"{at}.action: unknown action {step.action!r} ({_suggest(step.action, ACTIONS)})")
        return
    _check_action_use(at, step, action, problems)


def _check_action_use(at: str, step: StepSpec, action: ActionInfo, problems: list[str]) -> None:
    allowed = action.required | action.optional
    missing = sorted(action.required - set(step.params))
    if missing:
        problems.append(f"{at}.params: missing required parameter{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)} for {step.action} (expected: {_names(allowed)})")
    for key in step.params:
        if key not in allowed:
            problems.append(f"{at}.params.{key}: unknown parameter for {step.action} (expected: {_names(allowed)})")
    if action.resource == "builtin" and step.guarded:
        problems.append(f"{at}.guarded: {step.action} is run by drbot itself and is never guarded; "
                        f"remove `guarded: true`")
    elif action.mutates and not step.guarded:
        problems.append(f"{at}.guarded: {step.action} changes things, so the step must be `guarded: true` "
                        f"(the two-person rule covers every side effect)")
    for k, check in enumerate(step.verify):
        if check.output not in action.outputs:
            problems.append(f"{at}.verify[{k}].output: {step.action} has no output {check.output!r} "
                            f"(outputs: {_names(action.outputs)})")
        if check.op not in VERIFY_OPS:
            problems.append(f"{at}.verify[{k}].op: unknown operator {check.op!r} (expected: {_names(VERIFY_OPS)})")
    for fact, output in step.records.items():
        if fact not in RECORD_FACTS:
            problems.append(f"{at}.records.{fact}: unknown fact (expected: {_names(RECORD_FACTS)})")
        if output not in action.outputs:
            problems.append(f"{at}.records.{fact}: {step.action} has no output {output!r} "
                            f"(outputs: {_names(action.outputs)})")


def _find_cycle(steps: tuple[StepSpec, ...]) -> list[str] | None:
    """A dependency cycle as `[a, b, a]`, or None. Unknown `after:` names are reported elsewhere."""
    deps = {s.id: list(s.after) for s in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in deps.get(node, []):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if state.get(dep) is None and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for step in steps:
        if step.id not in state and (cycle := visit(step.id)) is not None:
            return cycle
    return None


def _ancestors(steps: tuple[StepSpec, ...]) -> dict[str, set[str]]:
    """Every step each step (transitively) waits for; only valid on an acyclic graph."""
    deps = {s.id: s.after for s in steps}
    memo: dict[str, set[str]] = {}

    def walk(node: str) -> set[str]:
        if node not in memo:
            found: set[str] = set()
            for dep in deps.get(node, ()):
                if dep in deps:
                    found |= {dep} | walk(dep)
            memo[node] = found
        return memo[node]

    return {s.id: walk(s.id) for s in steps}


def _check_reference(ref: str, *, runbook: Runbook, step: StepSpec, before: set[str]) -> str | None:
    parts = ref.split(".")
    root = parts[0]
    shown = "{{ " + ref + " }}"
    if root not in CONTEXT_ROOTS:
        return f"{shown}: unknown root {root!r} ({_suggest(root, CONTEXT_ROOTS)})"
    field = parts[1] if len(parts) > 1 else ""
    if root == "cmd":
        declared = {p.name for p in runbook.params}
        if field not in declared:
            return (f"{shown}: cmd.{field} is not a parameter of {runbook.name} "
                    f"(declared: {_names(declared)}; declare it under params:)")
    elif root == "env":
        if field not in ENV_FIELDS:
            return f"{shown}: env has no {field!r} ({_suggest(field, ENV_FIELDS)})"
        if field not in {"name", "tier"} and len(parts) < 3:
            return f"{shown}: name a key of env.{field}, e.g. env.{field}.<key>"
        if field == "settings" and parts[2] not in runbook.settings:
            return (f"{shown}: env.settings.{parts[2]} is not declared under settings: of {runbook.name} "
                    f"(declared: {_names(runbook.settings)}); declare what it is for and an example, "
                    f"settings: {{{parts[2]}: {{help: …, example: …}}}}, plus optional: true if the steps reading "
                    f"it may be skipped when it is not set")
    elif root in {"run", "incident"}:
        known = RUN_FIELDS if root == "run" else INCIDENT_FIELDS
        if field not in known or len(parts) != 2:
            return f"{shown}: {root} has no {'.'.join(parts[1:])!r} (expected: {_names(known)})"
    else:
        return _check_step_output(shown, parts, runbook=runbook, step=step, before=before)
    return None


def _check_step_output(shown: str, parts: list[str], *, runbook: Runbook, step: StepSpec,
                       before: set[str]) -> str | None:
    if len(parts) < 4 or parts[2] != "outputs":
        return f"{shown}: write steps.<step id>.outputs.<output>"
    source_id, output = parts[1], parts[3]
    source = next((s for s in runbook.steps if s.id == source_id), None)
    if source is None:
        return f"{shown}: no step called {source_id!r} ({_suggest(source_id, [s.id for s in runbook.steps])})"
    if source_id not in before:
        return (f"{shown}: step {step.id!r} does not wait for {source_id!r}; "
                f"add {source_id} to its after: list")
    action = ACTIONS.get(source.action)
    if action is not None and output not in action.outputs:
        return (f"{shown}: {source.action} (step {source_id!r}) has no output {output!r} "
                f"(outputs: {_names(action.outputs)})")
    return None


def _check_templates(runbook: Runbook, problems: list[str]) -> None:
    before = _ancestors(runbook.steps)
    for i, step in enumerate(runbook.steps):
        leaves = list(_strings(step.params, f"steps[{i}].params"))
        leaves += [leaf for k, check in enumerate(step.verify)
                   for leaf in _strings(check.value, f"steps[{i}].verify[{k}].value")]
        for where, text in leaves:
            try:
                refs = references(text)
            except TemplateError as exc:
                problems.append(f"{where}: {exc.message}")
                continue
            for ref in sorted(refs):
                problem = _check_reference(ref, runbook=runbook, step=step, before=before[step.id])
                if problem:
                    problems.append(f"{where}: {problem}")


def _check_settings(runbook: Runbook, problems: list[str]) -> None:
    """Each declared setting says what it is for and is read by a step: `drbot check` prints the help and the
    example as the fix, and a declaration nothing reads would make it ask for a value that does nothing."""
    read = {ref.split(".")[2] for step in runbook.steps for ref in _step_references(step)
            if ref.startswith("env.settings.") and ref.count(".") >= 2}
    for key, spec in runbook.settings.items():
        if key not in read:
            problems.append(f"settings.{key}: no step reads {{{{ env.settings.{key} }}}}; remove the declaration "
                            f"or use the value in a step's params")
        if not spec.help.strip():
            problems.append(f"settings.{key}.help: say what the value is for (drbot check shows it to people "
                            f"who have to set it)")
        if not spec.example.strip():
            problems.append(f"settings.{key}.example: give an example value (drbot check shows it next to the help)")


def check_runbook(runbook: Runbook) -> list[str]:
    """Every rule a shape-valid runbook breaks, as `key.path: message` lines (empty when it is sound)."""
    problems: list[str] = []
    if not runbook.steps:
        return ["steps: a runbook needs at least one step"]
    _check_params(runbook, problems)
    _check_settings(runbook, problems)
    first_at: dict[str, int] = {}
    for i, step in enumerate(runbook.steps):
        if step.id in first_at:
            problems.append(f"steps[{i}].id: duplicate step id {step.id!r} (first used by steps[{first_at[step.id]}])")
        else:
            first_at[step.id] = i
    ids = set(first_at)
    for i, step in enumerate(runbook.steps):
        _check_step(runbook, i, step, ids, problems)
    cycle = _find_cycle(runbook.steps)
    if cycle is not None:
        at = first_at[cycle[0]]
        problems.append(f"steps[{at}].after: dependency cycle {' → '.join(cycle)} (each waits for the next), "
                        f"so a run would never finish")
    elif len(ids) == len(runbook.steps):
        _check_templates(runbook, problems)
        _check_checks_come_first(runbook, problems)
    _check_cleanup(runbook, ids, problems)
    if runbook.drilled:
        _check_drill_changes_nothing_live(runbook, problems)
    elif runbook.drill is not None and not runbook.drill.refuse:
        _check_drill(runbook, ids, problems)
    return problems


def _check_cleanup(runbook: Runbook, ids: set[str], problems: list[str]) -> None:
    """Clean-up steps: their own ids, known actions, each `removes` naming a step that `creates` something, and
    params known at plan time (a clean-up runs even when the step that made the thing failed without outputs)."""
    creators = {s.id for s in runbook.steps if s.creates is not None}
    removed: set[str] = set()
    for i, step in enumerate(runbook.cleanup):
        at = f"cleanup[{i}]"
        if step.id in ids:
            problems.append(f"{at}.id: {step.id!r} is already a step id; clean-up steps need ids of their own")
        ids = ids | {step.id}
        if step.after:
            problems.append(f"{at}.after: clean-up steps run in the order written, after every step; remove after:")
        if not step.removes:
            problems.append(f"{at}.removes: name the step(s) whose created resource this deletes, e.g. [restore]")
        for j, target in enumerate(step.removes):
            if target not in creators:
                problems.append(f"{at}.removes[{j}]: no step called {target!r} declares creates: "
                                f"({_suggest(target, creators) if creators else 'no step creates anything'})")
        removed |= set(step.removes)
        action = ACTIONS.get(step.action)
        if action is None:
            problems.append(f"{at}.action: unknown action {step.action!r} ({_suggest(step.action, ACTIONS)})")
            continue
        _check_action_use(at, step, action, problems)
        for where, text in _strings(step.params, f"{at}.params"):
            try:
                refs = references(text)
            except TemplateError as exc:
                problems.append(f"{where}: {exc.message}")
                continue
            if any(ref.split(".")[0] == "steps" for ref in refs):
                problems.append(f"{where}: a clean-up step cannot read a step's outputs (it also runs when that "
                                f"step failed before it had any); name the resource as its creates: does, "
                                f"e.g. {{{{ env.database.instance }}}}-drill-{{{{ run.short }}}}")
    for i, step in enumerate(runbook.steps):
        if step.creates is not None and step.id not in removed:
            problems.append(f"steps[{i}].creates: no clean-up step deletes it; add one with removes: [{step.id}]")


def _check_drill(runbook: Runbook, ids: set[str], problems: list[str]) -> None:
    from runbooks.drills import drill_variant

    assert runbook.drill is not None
    for sid in runbook.drill.steps:
        if sid not in ids:
            problems.append(f"drill.steps.{sid}: no step called {sid!r} ({_suggest(sid, ids)})")
    if problems:
        return
    problems.extend(f"drill: {problem}" for problem in check_runbook(drill_variant(runbook)))


def _check_drill_changes_nothing_live(runbook: Runbook, problems: list[str]) -> None:
    """In a drill every step that changes something changes only what it creates (and a clean-up deletes)."""
    for step in runbook.steps:
        action = ACTIONS.get(step.action)
        if action is not None and action.mutates and step.creates is None:
            problems.append(f"steps.{step.id}: {step.action} would change a live resource in a drill; under "
                            f"drill.steps.{step.id} give it an isolated target with creates:, replace it with a "
                            f"read-only check (action:), or remove: true")


def _step_references(step: StepSpec) -> set[str]:
    """Every template path the step's params read; a malformed template is skipped here because
    `_check_templates` reports it with its key path."""
    found: set[str] = set()
    for _, text in _strings(step.params, ""):
        try:
            found |= references(text)
        except TemplateError:
            continue
    return found


def _outputs_read(step: StepSpec) -> set[str]:
    """The steps whose outputs `step` reads (`steps.<id>.outputs.…`)."""
    return {ref.split(".")[1] for ref in _step_references(step) if ref.startswith("steps.") and ref.count(".") >= 3}


def _check_checks_come_first(runbook: Runbook, problems: list[str]) -> None:
    """A read-only check of what a step made (the integrity query on a restored database) must finish before
    any guarded step puts that thing to use (the cut-over): run side by side, prod could be pointed at data that
    fails the check, and the pause for a decision would come after the damage."""
    before = _ancestors(runbook.steps)
    reads = {step.id: _outputs_read(step) for step in runbook.steps}
    for i, user in enumerate(runbook.steps):
        if not user.guarded:
            continue
        for check in runbook.steps:
            action = ACTIONS.get(check.action)
            if action is None or action.mutates or action.resource == "builtin" or check.id == user.id:
                continue
            shared = reads[check.id] & reads[user.id]
            if shared and check.id not in before[user.id] and user.id not in before[check.id]:
                problems.append(f"steps[{i}].after: {user.id!r} uses what {sorted(shared)[0]!r} made while "
                                f"{check.id!r} is still checking it; add {check.id} to its after: list so the "
                                f"check decides before the change")


# --------------------------------------------------------------------------------------------- the checklist


def check_checklist(checklist: Checklist) -> list[str]:
    """Ids unique (items are ticked off by id), phases in order, each item due within its phase."""
    problems: list[str] = []
    phase_ids: set[str] = set()
    item_ids: set[str] = set()
    previous_start: timedelta | None = None
    for i, phase in enumerate(checklist.phases):
        at = f"phases[{i}]"
        if phase.id in phase_ids:
            problems.append(f"{at}.id: duplicate phase id {phase.id!r}")
        phase_ids.add(phase.id)
        if phase.ends <= phase.starts:
            problems.append(f"{at}.ends: must be after starts ({phase.starts} → {phase.ends})")
        if previous_start is not None and phase.starts < previous_start:
            problems.append(f"{at}.starts: phases must be listed in the order they start")
        previous_start = phase.starts
        if not phase.items:
            problems.append(f"{at}.items: a phase needs at least one item")
        for j, item in enumerate(phase.items):
            if item.id in item_ids:
                problems.append(f"{at}.items[{j}].id: duplicate item id {item.id!r}")
            item_ids.add(item.id)
            if not phase.starts <= item.due <= phase.ends:
                problems.append(f"{at}.items[{j}].due: {item.due} is outside the phase "
                                f"({phase.starts} → {phase.ends})")
    if not checklist.phases:
        problems.append("phases: the checklist needs at least one phase")
    return problems
