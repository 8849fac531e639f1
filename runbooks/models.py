"""The nouns of drbot: incidents, environments, runbooks, runs, approvals and events.

Every time is timezone-aware UTC. Models are pydantic so that they validate on the way in (config files,
catalog YAML, rows from the store) and serialise to JSON for exports without hand-written code.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------- environments


class Tier(Frozen):
    """Recovery targets for a class of service."""

    name: str
    rpo: timedelta
    rto: timedelta


SEED_TIERS: dict[str, Tier] = {
    "critical": Tier(name="critical", rpo=timedelta(minutes=15), rto=timedelta(hours=1)),
    "standard": Tier(name="standard", rpo=timedelta(hours=1), rto=timedelta(hours=4)),
    "development": Tier(name="development", rpo=timedelta(hours=24), rto=timedelta(hours=24)),
    "archive": Tier(name="archive", rpo=timedelta(days=7), rto=timedelta(hours=48)),
}


class ApprovalPolicy(Frozen):
    """`required` distinct approvers other than the requester, drawn from `approvers`."""

    required: int = Field(default=1, ge=0, le=5)
    approvers: tuple[str, ...] = ()
    expire_after: timedelta = timedelta(minutes=30)


class ResourceConfig(BaseModel):
    """One resource of an environment (`database`, `dns`, …). `provider` picks the implementation;
    the other keys are the provider's own settings (instance, region, zone_id, …)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    provider: str

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Environment(Frozen):
    name: str
    tier: str = "standard"
    approvals: ApprovalPolicy = ApprovalPolicy(required=0)
    resources: dict[str, ResourceConfig] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    """Free values runbooks may reference as `env.settings.<key>` (e.g. an integrity query)."""


# --------------------------------------------------------------------------------------------- runbooks


class VerifyCheck(Frozen):
    """A check on a step's outputs: `output <op> value`, e.g. `{output: count, op: ">", value: 0}`."""

    output: str
    op: str = "=="
    value: Any = None
    message: str = ""


class Created(Frozen):
    """A resource a step creates: `kind` in words ("database instance"), `name` a template, resolved at plan time."""

    kind: str
    name: str


class StepSpec(Frozen):
    """One step of a runbook.

    `action` is `<resource>.<action>` (`database.restore_pitr`) or a built-in (`builtin.notify`,
    `builtin.report`, `builtin.record`). `params` are templates: `{{ cmd.time }}`, `{{ env.database.instance }}`,
    `{{ steps.restore.outputs.endpoint }}`, `{{ run.id }}`.
    """

    id: str
    title: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    guarded: bool = False
    after: tuple[str, ...] = ()
    verify: tuple[VerifyCheck, ...] = ()
    marks_restored: bool = False
    """When this step completes, the service counts as restored (RTO stops) unless already marked."""
    records: dict[str, str] = Field(default_factory=dict)
    """Timeline facts taken from outputs: {restore_point: restore_time} or {replica_lag_seconds: lag}."""
    creates: Created | None = None
    """What this step makes that a clean-up step deletes (a drill's scratch instance): recorded as the step begins,
    before the provider is asked, so that a crash in the middle still leaves it on the ledger."""
    removes: tuple[str, ...] = ()
    """For a clean-up step: the steps whose `creates` it deletes. It runs only if one of them began, and its success
    marks their resources gone."""


class StepOverride(Frozen):
    """How a drill changes one step (`drill.steps.<id>`): any field given replaces the step's (`params` are merged
    key by key; when `action` names another action, the step's parameters that action does not take and its
    `records:` of outputs it does not have are dropped first); `remove: true` drops the step (in every other step's
    `after` it is replaced by what it waited for, so the order around it holds)."""

    title: str | None = None
    action: str | None = None
    params: dict[str, Any] | None = None
    guarded: bool | None = None
    verify: tuple[VerifyCheck, ...] | None = None
    creates: Created | None = None
    after: tuple[str, ...] | None = None
    """Replaces the step's `after` (e.g. to wait for a step the drill adds)."""
    records: dict[str, str] | None = None
    """Replaces the step's timeline facts (`{}`: the drill's step records none, e.g. no RPO from a drill replica)."""
    remove: bool = False


class DrillSpec(Frozen):
    """How a runbook drills (`drill:`): against isolated targets, never live traffic. `refuse` says why it cannot be
    drilled safely (the drill is then refused with that sentence)."""

    refuse: str = ""
    summary: str = ""
    """One sentence for the plan: what the drill does instead of the live recovery."""
    steps: dict[str, StepOverride] = Field(default_factory=dict)
    add: tuple[StepSpec, ...] = ()
    """Steps only the drill runs, appended after the runbook's own (each names what it waits for in `after`)."""
    cleanup: tuple[StepSpec, ...] = ()


class RunbookParam(Frozen):
    name: str
    kind: str = "str"  # str | time | int | bool
    required: bool = False
    default: Any = None
    help: str = ""


class SettingSpec(Frozen):
    """A value a runbook reads as `{{ env.settings.<key> }}`: what it is for and an example, so `drbot check` and
    a refused request can say exactly what to add to drbot.yml. An optional setting that is not configured makes
    the steps reading it skipped (the plan and the export say so) instead of refusing the run."""

    help: str
    example: str
    optional: bool = False


class Runbook(Frozen):
    name: str
    version: int = 1
    title: str
    description: str = ""
    recovery: bool = True
    """A recovery runbook's successful end marks the service restored; verification drills do not."""
    params: tuple[RunbookParam, ...] = ()
    settings: dict[str, SettingSpec] = Field(default_factory=dict)
    """The `env.settings.<key>` values the steps read, each with its purpose and an example."""
    steps: tuple[StepSpec, ...]
    cleanup: tuple[StepSpec, ...] = ()
    """Steps that run at the end whatever happened (success, failure, abort, cancel, a crash): they delete what the
    steps' `creates` made. No approval gate: a failing clean-up is reported, never retried blindly."""
    drill: DrillSpec | None = None
    """How `/dr drill` runs this runbook; None: it has not said, so it is refused."""
    drilled: bool = False
    """True for the drill variant built from `drill` (`runbooks.drills.drill_variant`)."""


class ChecklistItemSpec(Frozen):
    id: str
    text: str
    due: timedelta


class ChecklistPhase(Frozen):
    id: str
    title: str
    starts: timedelta
    ends: timedelta
    items: tuple[ChecklistItemSpec, ...]


class Checklist(Frozen):
    name: str = "incident-checklist"
    version: int = 1
    phases: tuple[ChecklistPhase, ...]


# --------------------------------------------------------------------------------------------- incidents


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    RESTORED = "restored"
    RESOLVED = "resolved"


class Incident(BaseModel):
    id: str  # INC-<n>
    number: int
    title: str
    severity: str = "sev2"
    environment: str
    tier: str
    status: IncidentStatus = IncidentStatus.OPEN
    opened_by: str
    opened_at: datetime
    detected_at: datetime
    impact_start_at: datetime | None = None
    restored_at: datetime | None = None
    resolved_at: datetime | None = None
    resolution_note: str = ""
    external: dict[str, Any] = Field(default_factory=dict)
    """Surface/integration references: PagerDuty id and link, Slack channel and thread ts."""

    @property
    def drill(self) -> bool:
        """The incident a drill runs in (`/dr drill`): not a real one, so never picked for a real request."""
        return bool(self.external.get("drill"))


class ChecklistItem(BaseModel):
    incident_id: str
    item_id: str
    phase: str
    text: str
    due_at: datetime
    done_at: datetime | None = None
    done_by: str | None = None


# --------------------------------------------------------------------------------------------- runs


class RunStatus(enum.StrEnum):
    PREFLIGHT = "preflight"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    PAUSED = "paused"  # a step failed; waiting for retry / skip / abort
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # pre-flight failed, or aborted after a failure
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED,
                        RunStatus.CANCELLED}


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class PlannedStep(Frozen):
    """A step with its parameters resolved: what the approver sees and what the plan hash covers."""

    id: str
    title: str
    action: str
    provider: str
    params: dict[str, Any]
    guarded: bool
    after: tuple[str, ...] = ()
    details: dict[str, Any] = Field(default_factory=dict)
    """Provider's plan extras (restorable window, current DNS value, …). Shown; not hashed."""
    skipped: str = ""
    """Why the step will not run (an optional setting is not configured, and which one enables it); hashed."""


class Plan(Frozen):
    runbook: str
    runbook_version: int
    environment: str
    steps: tuple[PlannedStep, ...]
    drill: bool = False
    """A drill: the banner "DRILL — no live resource is changed" and the resources it creates and deletes."""
    cleanup: tuple[PlannedStep, ...] = ()
    """The clean-up steps that run at the end, whatever happens."""
    creates: tuple[dict[str, str], ...] = ()
    """What the steps create ({step, kind, name}), each deleted by a clean-up step."""


class Run(BaseModel):
    id: str  # R-<n>
    incident_id: str
    runbook: str
    environment: str
    command: str
    requested_by: str
    requested_at: datetime
    status: RunStatus
    params: dict[str, Any] = Field(default_factory=dict)
    plan: Plan | None = None
    plan_hash: str = ""
    finished_at: datetime | None = None
    reason: str = ""
    drill: bool = False
    """A drill (`/dr drill`): the runbook's drill variant, in an incident of its own."""


class StepRun(BaseModel):
    run_id: str
    step_id: str
    title: str
    attempt: int = 1
    status: StepStatus = StepStatus.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str = ""


# --------------------------------------------------------------------------------------------- approvals


class Decision(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


Gate = Literal["plan", "decision"]
"""What an approval request asks: run the plan, or what to do about a failed step."""
Option = Literal["", "retry", "skip", "abort"]
"""A decision request's option (each is its own request); "" for the plan gate."""
RequestStatus = Literal["pending", "granted", "rejected", "expired", "cancelled"]


class ApprovalRequest(BaseModel):
    """A pending question to approvers: run the plan (`gate="plan"`) or a decision after a failure
    (`gate="decision"`, `option` = retry | skip | abort)."""

    id: str  # AR-<n>
    run_id: str
    gate: Gate
    option: Option = ""
    step_id: str = ""
    plan_hash: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    required: int
    approvers: tuple[str, ...]
    status: RequestStatus = "pending"


class Approval(BaseModel):
    request_id: str
    actor: str
    decision: Decision
    plan_hash: str
    at: datetime


# --------------------------------------------------------------------------------------------- events


class EventKind(enum.StrEnum):
    """What drbot itself writes to the timeline. `Event.kind` stays a string: PagerDuty's own event types are
    stored as `pagerduty.<type>` (`runbooks.alerts`), an open set drbot does not choose."""

    APPROVAL_REFUSED = "approval.refused"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_VOTE = "approval.vote"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_EXPIRED = "approval.expired"
    CHECKLIST_TICKED = "checklist.ticked"
    INCIDENT_DETECTED = "incident.detected"
    INCIDENT_IMPACT = "incident.impact"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_RESOLVED = "incident.resolved"
    INCIDENT_RESTORED = "incident.restored"
    INCIDENT_SUGGESTED = "incident.suggested"
    LEADER_TAKEOVER = "leader.takeover"
    PAGERDUTY_FAILED = "pagerduty.failed"
    PAGERDUTY_SENT = "pagerduty.sent"
    RPO_REPLICA_LAG = "rpo.replica_lag"
    RPO_RESTORE_POINT = "rpo.restore_point"
    RTO_WARNING = "rto.warning"
    RUN_CANCEL_REQUESTED = "run.cancel_requested"
    RUN_CANCELLED = "run.cancelled"
    RUN_CLEANUP = "run.cleanup"
    RUN_EXPIRED = "run.expired"
    RUN_FAILED = "run.failed"
    RUN_NOTICE = "run.notice"
    RUN_PAUSED = "run.paused"
    RUN_PLANNED = "run.planned"
    RUN_PREFLIGHT_FAILED = "run.preflight_failed"
    RUN_PREFLIGHT_OK = "run.preflight_ok"
    RUN_REJECTED = "run.rejected"
    RUN_REPORT = "run.report"
    RUN_REQUESTED = "run.requested"
    RUN_RESULT = "run.result"
    RUN_RUNNING = "run.running"
    RUN_SUCCEEDED = "run.succeeded"
    STEP_CANCELLED = "step.cancelled"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    STEP_OPERATION = "step.operation"
    STEP_PROGRESS = "step.progress"
    STEP_SKIPPED = "step.skipped"
    STEP_STARTED = "step.started"


class Event(BaseModel):
    """One line of the timeline. `kind` is dotted (`step.started`, an `EventKind` or `pagerduty.<type>`); `text`
    is the human sentence."""

    seq: int = 0
    incident_id: str
    run_id: str | None = None
    at: datetime
    actor: str
    kind: str
    text: str
    data: dict[str, Any] = Field(default_factory=dict)


class IncidentRecord(BaseModel):
    """Everything known about one incident, as the timeline and exports need it."""

    incident: Incident
    tier: Tier
    events: list[Event]
    runs: list[Run] = Field(default_factory=list)
    steps: list[StepRun] = Field(default_factory=list)
    requests: list[ApprovalRequest] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    checklist: list[ChecklistItem] = Field(default_factory=list)
    restore_point: datetime | None = None
    replica_lag: timedelta | None = None
