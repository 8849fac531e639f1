"""What the durable steps of a run return to its workflow: plain dicts (DBOS checkpoints them as they are), typed
here so that the workflow (`runbooks.workflows`) and the step bodies (`runbooks.execution`) agree on the keys."""

from __future__ import annotations

from typing import Any, Literal, Required, TypedDict

__all__ = ["Began", "GateState", "Preflight", "Started", "StepResult"]


class Preflight(TypedDict):
    """The plan was made and checked (`ok`); whether it waits for approval before anything runs."""

    ok: bool
    needs_approval: bool


class GateState(TypedDict, total=False):
    """Where approval requests stand: decided (with how), or still open for `remaining` seconds."""

    decided: Required[bool]
    status: Literal["granted", "rejected", "expired", "cancelled"]
    request: str
    """The request that decided it."""
    by: str
    """Who cancelled the run, when `status` is cancelled."""
    option: str
    """The option chosen on a failed step's decision: retry, skip or abort."""
    remaining: float
    """Seconds until the requests expire, when not decided."""


class Began(TypedDict, total=False):
    """A step's start was recorded and its parameters rendered (`params`), or why not (`error`)."""

    ok: Required[bool]
    error: Required[str]
    params: Required[dict[str, Any]]
    builtin: Required[bool]
    """drbot's own action (notify, report, record): no provider is called."""
    skipped: str
    """Why the step does not run here (a resource the environment does not configure)."""


class Started(TypedDict, total=False):
    """The provider's operation was started (`op`: an `Operation` as JSON), or why not."""

    ok: Required[bool]
    op: dict[str, Any]
    error: str


class StepResult(TypedDict, total=False):
    """How a step ended, as `finish` records it."""

    ok: bool
    error: str
    outputs: dict[str, Any]
    cancelled: bool
    skipped: str
