"""The DBOS workflows: a run is a workflow, each of its steps a child workflow made of durable steps.

Workflow code must be deterministic: it branches only on the results of steps (which DBOS checkpoints), never
on the clock or the database directly. After a crash, `DBOS.launch()` re-runs each workflow from the top,
returning checkpointed results for finished steps and re-running the one that was in flight — which is safe
because every step body (`runbooks.execution`) is idempotent.

DBOS registers decorated functions globally, so what they act on is held in one module variable, set by
`bind()` with a `Binding` and read through `bound()`; there is one engine per process, as there is one DBOS.
The step bodies are described here as protocols (`Steps`, `PagerDutySteps`), so this module imports neither
the execution nor the PagerDuty mirror: `runbooks.execution.Execution` and `runbooks.pagerduty_sync.PagerDuty`
satisfy them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar

from dbos import DBOS

from runbooks.models import Gate
from runbooks.step_results import Began, GateState, Preflight, Started, StepResult

__all__ = ["APPLICATION_VERSION", "Binding", "GateSteps", "PagerDutySteps", "Steps", "bind", "bound",
           "pagerduty_workflow", "run_workflow"]

APPLICATION_VERSION = "drbot-workflows-3"
"""Bump when a workflow's sequence of steps changes, so that runs in flight are not replayed by new code."""

MAX_RECOVERY_ATTEMPTS = 10_000  # every restart counts; runbooks may wait hours for a person



class Steps(Protocol):
    """The step bodies of a run (`runbooks.execution.Execution`); each is idempotent."""

    def preflight(self, run_id: str) -> Preflight: ...
    def structure(self, run_id: str) -> list[list[str]]: ...
    def skip(self, run_id: str, step_id: str, attempt: int) -> None: ...
    def begin(self, run_id: str, step_id: str, attempt: int) -> Began: ...
    def start(self, run_id: str, step_id: str, params: dict[str, Any]) -> Started: ...
    def wait(self, run_id: str, step_id: str, op_data: dict[str, Any]) -> StepResult: ...
    def verify(self, run_id: str, step_id: str, params: dict[str, Any], outputs: dict[str, Any]) -> list[str]: ...
    def builtin(self, run_id: str, step_id: str, params: dict[str, Any]) -> StepResult: ...
    def finish(self, run_id: str, step_id: str, attempt: int, result: StepResult) -> str: ...
    def settle(self, run_id: str, *, cause: str, error_id: str = "") -> str: ...
    def cleanup(self, run_id: str) -> list[str]: ...
    def conclude(self, run_id: str, *, trace: str = "") -> None: ...


class GateSteps(Protocol):
    """The approval gates between them, and the run's status (`runbooks.gates.Gates`)."""

    def open_request(self, run_id: str, gate: Gate, step_id: str, attempt: int) -> list[str]: ...
    def evaluate(self, run_id: str, request_ids: list[str]) -> GateState: ...
    def mark(self, run_id: str, status: str, reason: str) -> None: ...
    def cancel_requested(self, run_id: str) -> str | None: ...


class TickSteps(Protocol):
    """What the leader's minute tick does (`runbooks.ticks.Ticks`)."""

    def rpo(self) -> int: ...
    def schedules(self, at: str) -> list[str]: ...
    def workflow_id(self, run_id: str) -> str: ...


class PagerDutySteps(Protocol):
    """The two steps of a call to PagerDuty (`runbooks.pagerduty_sync.PagerDuty`)."""

    def call(self, *, incident_id: str, action: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def report(self, *, incident_id: str, action: str, params: dict[str, Any], key: str, actor: str,
               result: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Binding:
    """What the workflows of this process act on."""

    steps: Steps
    gates: GateSteps
    pagerduty: PagerDutySteps
    stopping: Callable[[], bool]
    """True once the engine is stopping: an interruption then is not a failure (DBOS resumes the run)."""
    ticks: TickSteps | None = None
    owned: Callable[[], None] = lambda: None
    """Called at the end of every step body (returning or raising), before DBOS records its result or its error:
    a replica that no longer leads stops there (`Engine.fence_writes`), so a frozen ex-leader that wakes up
    mid-step never records a step the new leader is running too (DBOS would then leave the new leader's execution
    waiting for the dead one's outcome)."""


_binding: Binding | None = None
R = TypeVar("R")
P = ParamSpec("P")


def bind(binding: Binding | None) -> None:
    global _binding
    _binding = binding


def bound() -> Binding:
    if _binding is None:
        raise RuntimeError("the drbot engine is not started")
    return _binding


def _x() -> Steps:
    return bound().steps


def _checked(body: Callable[P, R]) -> Callable[P, R]:
    """A step body that ends — returning or raising — with `Binding.owned()`, before DBOS records its result or
    its error: a replica that no longer leads stops there."""

    @functools.wraps(body)
    def step(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return body(*args, **kwargs)
        finally:
            bound().owned()

    return step


# --------------------------------------------------------------------------------------------------- steps


@DBOS.step()
@_checked
def preflight_step(run_id: str) -> Preflight:
    return _x().preflight(run_id)


@DBOS.step()
@_checked
def structure_step(run_id: str) -> list[list[str]]:
    return _x().structure(run_id)


@DBOS.step()
@_checked
def open_request_step(run_id: str, gate: Gate, step_id: str, attempt: int) -> list[str]:
    return bound().gates.open_request(run_id, gate, step_id, attempt)


@DBOS.step()
@_checked
def evaluate_step(run_id: str, request_ids: list[str]) -> GateState:
    return bound().gates.evaluate(run_id, request_ids)


@DBOS.step()
@_checked
def mark_step(run_id: str, status: str, reason: str) -> None:
    bound().gates.mark(run_id, status, reason)


@DBOS.step()
@_checked
def cancel_check_step(run_id: str) -> str | None:
    return bound().gates.cancel_requested(run_id)


@DBOS.step()
@_checked
def skip_step(run_id: str, step_id: str, attempt: int) -> None:
    _x().skip(run_id, step_id, attempt)


@DBOS.step()
@_checked
def begin_step(run_id: str, step_id: str, attempt: int) -> Began:
    return _x().begin(run_id, step_id, attempt)


@DBOS.step()
@_checked
def start_step(run_id: str, step_id: str, params: dict[str, Any]) -> Started:
    return _x().start(run_id, step_id, params)


@DBOS.step()
@_checked
def wait_step(run_id: str, step_id: str, op: dict[str, Any]) -> StepResult:
    return _x().wait(run_id, step_id, op)


@DBOS.step()
@_checked
def verify_step(run_id: str, step_id: str, params: dict[str, Any], outputs: dict[str, Any]) -> list[str]:
    return _x().verify(run_id, step_id, params, outputs)


@DBOS.step()
@_checked
def builtin_step(run_id: str, step_id: str, params: dict[str, Any]) -> StepResult:
    return _x().builtin(run_id, step_id, params)


@DBOS.step()
@_checked
def cleanup_step(run_id: str) -> list[str]:
    return _x().cleanup(run_id)


@DBOS.step()
@_checked
def conclude_step(run_id: str, trace: str) -> None:
    _x().conclude(run_id, trace=trace)


@DBOS.step()
@_checked
def finish_step(run_id: str, step_id: str, attempt: int, result: StepResult) -> str:
    return _x().finish(run_id, step_id, attempt, result)


# --------------------------------------------------------------------------------------------------- workflows


def _await_gate(run_id: str, request_ids: list[str]) -> GateState:
    """Wait for a decision on approval requests. The deadline lives in the store (written by a step), and the
    remaining time is read inside a step, so a restart never extends it."""
    while True:
        state = evaluate_step(run_id, request_ids)
        if state["decided"]:
            return state
        DBOS.recv("vote", timeout_seconds=max(1.0, min(float(state["remaining"]), 60.0)))


@DBOS.workflow(max_recovery_attempts=MAX_RECOVERY_ATTEMPTS)
def step_workflow(run_id: str, step_id: str, attempt: int) -> str:
    """One step: begin (render parameters), start (idempotent), wait (poll), verify, finish."""
    began = begin_step(run_id, step_id, attempt)
    if began.get("skipped"):
        return finish_step(run_id, step_id, attempt, {"skipped": began["skipped"]})
    if not began["ok"]:
        return finish_step(run_id, step_id, attempt, {"ok": False, "error": began["error"]})
    params = began["params"]
    if began["builtin"]:
        return finish_step(run_id, step_id, attempt, builtin_step(run_id, step_id, params))
    started = start_step(run_id, step_id, params)
    if not started["ok"]:
        return finish_step(run_id, step_id, attempt, {"ok": False, "error": started["error"]})
    result = wait_step(run_id, step_id, started["op"])
    if result["ok"]:
        problems = verify_step(run_id, step_id, params, result["outputs"])
        if problems:
            result = {"ok": False, "error": "verification failed: " + "; ".join(problems),
                      "outputs": result["outputs"]}
    return finish_step(run_id, step_id, attempt, result)


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=1.0, backoff_rate=2.0)
@_checked
def settle_step(run_id: str, trace: str) -> str:
    """The last line of defence: something outside every step body failed (a store write between two steps, a
    bug in this module). Retried, because a database hiccup is the likeliest cause; if even this fails, the
    workflow ends in ERROR and the reconciler settles the run."""
    from runbooks import faults

    error_id = faults.new_error_id()
    faults.log.error("error %s in the workflow of %s:\n%s", error_id, run_id, trace)
    return _x().settle(run_id, cause="drbot hit an internal error while following it", error_id=error_id)


@DBOS.workflow(max_recovery_attempts=MAX_RECOVERY_ATTEMPTS)
def run_workflow(run_id: str) -> str:
    """A runbook run. Whatever is raised ends it decided and visible (see `settle_step`), never half-way; an
    interruption by shutdown is not a failure (the run resumes at the next start), so it is let through. Then,
    whatever the ending, the clean-up steps delete what the run made (`_clean_up`)."""
    import traceback

    try:
        status = _run_workflow(run_id)
    except Exception:
        if bound().stopping():
            raise
        status = settle_step(run_id, traceback.format_exc())
    trace = ""
    try:
        _clean_up(run_id)
    except Exception:
        if bound().stopping():
            raise
        trace = traceback.format_exc()
    conclude_step(run_id, trace)
    return status


def _clean_up(run_id: str) -> None:
    """The runbook's clean-up steps, in order, each as durable as any step; a failing one does not stop the next
    (each deletes its own thing) and pauses nothing: the report (`conclude_step`) says what is left."""
    for step_id in cleanup_step(run_id):
        DBOS.start_workflow(step_workflow, run_id, step_id, 1).get_result()


def _run_workflow(run_id: str) -> str:
    pre = preflight_step(run_id)
    if not pre["ok"]:
        return "failed"
    if pre["needs_approval"]:
        gate = _await_gate(run_id, open_request_step(run_id, "plan", "", 0))
        if gate["status"] != "granted":
            status = {"cancelled": "cancelled", "expired": "expired"}.get(gate["status"], "rejected")
            reason = f"cancelled by {gate.get('by', '')} before approval" if status == "cancelled" else ""
            mark_step(run_id, status, reason)
            return status
    mark_step(run_id, "running", "")
    attempts: dict[str, int] = {}
    for wave in structure_step(run_id):
        todo = list(wave)
        while todo:
            handles = []
            for step_id in todo:
                attempts[step_id] = attempts.get(step_id, 0) + 1
                handles.append((step_id, DBOS.start_workflow(step_workflow, run_id, step_id, attempts[step_id])))
            results = [(step_id, handle.get_result()) for step_id, handle in handles]
            todo = []
            for step_id, outcome in results:
                if outcome in ("succeeded", "skipped"):
                    continue
                if outcome == "cancelled":
                    mark_step(run_id, "cancelled", f"cancelled by {cancel_check_step(run_id)} during {step_id}")
                    return "cancelled"
                choice = _await_gate(run_id, open_request_step(run_id, "decision", step_id, attempts[step_id]))
                if choice["status"] == "cancelled":
                    mark_step(run_id, "cancelled", f"cancelled by {choice.get('by', '')} after {step_id} failed")
                    return "cancelled"
                option = choice.get("option") if choice["status"] == "granted" else "abort"
                if option == "retry":
                    mark_step(run_id, "running", f"retry of {step_id} after attempt {attempts[step_id]}")
                    todo.append(step_id)
                elif option == "skip":
                    mark_step(run_id, "running", f"skip of {step_id} after attempt {attempts[step_id]}")
                    skip_step(run_id, step_id, attempts[step_id])
                else:
                    mark_step(run_id, "failed", f"aborted after step {step_id} failed")
                    return "failed"
        by = cancel_check_step(run_id)
        if by is not None:
            mark_step(run_id, "cancelled", f"cancelled by {by}")
            return "cancelled"
    mark_step(run_id, "succeeded", "")
    return "succeeded"


# --------------------------------------------------------------------------------------------------- the tick

TICK = "drbot-tick"
"""The one DBOS schedule drbot keeps (every minute): the RPO monitor when due, and drbot.yml's `schedules:`."""
TICK_CRON = "* * * * *"


@DBOS.step()
@_checked
def rpo_tick_step() -> int:
    ticks = bound().ticks
    return ticks.rpo() if ticks is not None else 0


@DBOS.step()
@_checked
def schedules_tick_step(at: str) -> list[str]:
    ticks = bound().ticks
    return ticks.schedules(at) if ticks is not None else []


@DBOS.workflow(max_recovery_attempts=MAX_RECOVERY_ATTEMPTS)
def minute_tick(scheduled_at: datetime, context: Any) -> None:
    """Every minute on the leader (DBOS runs each scheduled time once: its workflow id is the time): scan the
    stores' recovery points when `rpo.check_every` has passed, and start the drills whose cron time has come."""
    from dbos import SetWorkflowID

    ticks = bound().ticks
    for run_id in schedules_tick_step(scheduled_at.isoformat()):
        assert ticks is not None
        with SetWorkflowID(ticks.workflow_id(run_id)):  # the run's own id: started once, even when replayed
            DBOS.start_workflow(run_workflow, run_id)
    rpo_tick_step()


# --------------------------------------------------------------------------------------------------- PagerDuty


@DBOS.step()
@_checked
def pagerduty_call_step(incident_id: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return bound().pagerduty.call(incident_id=incident_id, action=action, params=params)


@DBOS.step()
@_checked
def pagerduty_report_step(incident_id: str, action: str, params: dict[str, Any], key: str, actor: str,
                          result: dict[str, Any]) -> None:
    bound().pagerduty.report(incident_id=incident_id, action=action, params=params, key=key, actor=actor,
                             result=result)


@DBOS.workflow(max_recovery_attempts=MAX_RECOVERY_ATTEMPTS)
def pagerduty_workflow(incident_id: str, action: str, params: dict[str, Any], key: str, actor: str) -> str:
    """One call to PagerDuty (note, acknowledge, resolve) and its outcome in the timeline."""
    result = pagerduty_call_step(incident_id, action, params)
    pagerduty_report_step(incident_id, action, params, key, actor, result)
    return "sent" if result.get("ok") else "failed"
