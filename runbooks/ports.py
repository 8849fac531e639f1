"""The engine's doors to the outside: providers (clouds, sandbox), notifiers (surfaces), the clock,
and the small key-value state a provider may keep in drbot's database.

A provider implements every action of one kind of resource (`database`, `dns`, `kubernetes`, `vectors`,
`objects`, `pagerduty`) behind five calls. Long operations are `start` (idempotent: deterministic target names,
describe before create, "already exists" means attach) plus `poll`, which the engine repeats with capped
exponential backoff until `done`. Short actions finish in `start` and return `done=True` at once.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from runbooks.models import Event


class Operation(BaseModel):
    """A handle on a provider operation, serialisable so that the engine can checkpoint it."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    action: str
    id: str
    target: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class OperationStatus(BaseModel):
    """Where an operation stands, in the provider's own words (`creating`, `INSYNC`, `InProgress`)."""

    model_config = ConfigDict(extra="forbid")

    done: bool
    status: str
    failed: bool = False
    message: str = ""
    progress: float | None = None  # 0..1 when the provider knows
    outputs: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """One resource's implementation. Every method is keyword-only and raises only `ProviderError`s."""

    kind: str
    """The `provider:` value that selects it, e.g. `aws-rds`, `route53`, `sandbox`."""

    def actions(self) -> frozenset[str]:
        """Action names this provider implements (`restore_pitr`, `promote_replica`, …)."""
        ...

    def plan(self, *, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Resolved details for the approver (restorable window, current DNS value). No side effect."""
        ...

    def preflight(self, *, action: str, params: Mapping[str, Any]) -> list[str]:
        """Read-only checks. Each problem is a sentence that says what is wrong and how to fix it."""
        ...

    def start(self, *, action: str, params: Mapping[str, Any], run_id: str) -> Operation:
        """Begin the action. Idempotent for the same (action, params, run_id)."""
        ...

    def poll(self, *, operation: Operation) -> OperationStatus:
        """Read-only status of an operation begun by `start`."""
        ...

    def verify(self, *, action: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
        """Checks after completion; each problem is a sentence. Empty means verified."""
        ...

    def probe(self) -> list[str]:
        """Read-only reachability check of the configured resource (describe the instance / read the record /
        list backups …). Each problem is a sentence saying what is wrong and how to fix it; empty means reachable."""
        ...


class RecoveryPoint(BaseModel):
    """What a store can be restored to right now, as its provider reads it (the RPO monitor, `runbooks.rpo`).

    `newest` is the newest point data can be recovered to: RDS/Aurora's latest restorable time (or the newest
    automated snapshot when point-in-time recovery is off), Cloud SQL's newest successful backup run or its PITR
    recovery time, Azure PostgreSQL's latest restore time, the newest Completed Velero backup, the newest Qdrant
    snapshot, the newest S3 object version (versioning on). None: there is none at all."""

    model_config = ConfigDict(extra="forbid")

    newest: datetime | None
    what: str
    """What `newest` is, in words: "latest restorable time", "automated snapshot rds:db-2026-12-03-09-10",
    "Velero backup daily-20261203 (Completed)"."""
    failed: tuple[str, ...] = ()
    """Ids of failed backups among the newest ones (Velero Failed/PartiallyFailed, Cloud SQL FAILED runs, …):
    `drbot_backup_failures_total` counts each id once."""
    cause: str = ""
    """The likely cause when the point is old or missing, as a sentence: "automated backups are off (retention 0
    days)", "versioning is suspended on bucket X", "the newest backup daily-… Failed"; "" when nothing is wrong."""
    calls: int = 0
    """API calls this read made (the monitor's budget is 2 per store per scan)."""


@runtime_checkable
class RecoveryPointReader(Protocol):
    """A provider whose store has recovery points (databases, Velero, Qdrant, S3). Read-only, at most two API
    calls, raises only `ProviderError`s."""

    def recovery_point(self) -> RecoveryPoint: ...


class Notifier(Protocol):
    """A surface that shows engine events (the shell prints them; Slack posts and updates messages)."""

    def notify(self, event: Event) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        import time

        time.sleep(seconds)


class StateStore(Protocol):
    """Durable JSON state for providers that simulate the world (the sandbox) or remember things
    (Route53's previous value). Namespaced by `kind`."""

    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None: ...

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None: ...

    def list_state(self, *, kind: str) -> dict[str, dict[str, Any]]: ...


class ProviderFactory(Protocol):
    """Builds the provider for one resource of one environment (wiring supplies it)."""

    def __call__(self, *, environment: str, resource: str, config: Mapping[str, Any]) -> Provider: ...


# ---- how a provider plugs in: each integrations package declares its providers; wiring merges the declarations


@dataclass(frozen=True)
class ProviderServices:
    """What wiring hands every provider factory: the shared services and what bot.config read from the process."""

    state: StateStore
    clock: Clock
    speed: float = 1.0
    """DRBOT_SANDBOX_SPEED: how much faster than the real world the sandbox's operations run."""
    environ: Mapping[str, str] = field(default_factory=dict)
    """The process environment, for variables a drbot.yml block names (`api_key_env: QDRANT_API_KEY`)."""
    credentials: Mapping[str, str] = field(default_factory=dict)
    """drbot's own settings by field name (`pagerduty_api_token`, …), secrets unwrapped; unset ones are absent."""


class ProviderBuilder(Protocol):
    """Builds one resource's provider; the SDK client itself is created on first use, not here."""

    def __call__(self, *, environment: str, resource: str, settings: Mapping[str, Any],
                 services: ProviderServices) -> Provider: ...


@dataclass(frozen=True, eq=False)
class ProviderSpec:
    """One `provider:` name as an integrations package declares it: the resource kinds it serves with the actions
    it offers for each, its factory, and the pyproject extra that installs its SDK.

    Why declared rather than discovered by building: `drbot check` and wiring's refusals must name every provider
    of a build, including those whose SDK is not installed, without building (or importing) any of them."""

    name: str
    actions: Mapping[str, frozenset[str]]
    """Resource kind served (`database`, `dns`, …) → the actions the provider implements for it."""
    build: ProviderBuilder
    extra: str = ""
    """`pip install 'drbot[<extra>]'` installs the SDK; empty for providers that need none."""
    sdk: tuple[str, ...] = ()
    """Modules the provider imports when it first talks to its system (`boto3`, `azure.identity`, …)."""

    @property
    def serves(self) -> tuple[str, ...]:
        return tuple(sorted(self.actions))

    def missing_sdk(self) -> tuple[str, ...]:
        """The SDK modules that are not installed (empty when the provider can run)."""
        return tuple(module for module in self.sdk if not _importable(module))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (`azure` of `azure.identity`) is missing
        return False
