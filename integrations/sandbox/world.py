"""The machinery every sandbox provider shares: a simulated world that lives entirely in the `StateStore`.

Why it is built this way:
- Every fact (instances, records, operations, counters) is a JSON value in the `StateStore`, never a Python
  attribute, so a drbot process killed mid-restore re-attaches to the same simulated operation after a restart,
  exactly as it would to a real RDS restore.
- An operation stores absolute phase times (`[["creating", t0], ["backing-up", t1], ["available", t2]]`) computed
  from a real-world duration divided by `speed`. Status is a pure function of the clock, so `poll` is read-only
  and no background thread is needed.
- `start` is idempotent: the operation id is derived from (action, target, run id); an operation that already
  exists, or one in flight for the same target, is attached to instead of created again. Each creation bumps a
  per-target counter (`creates`) that tests use to prove "exactly one create".
- World changes (a new instance, a moved DNS record) are stored inside the operation record as full-value writes
  and applied after it is saved, so a crash between the two is healed on re-attach.

State kinds: `sandbox.ops` (operation id → record), `sandbox.targets` (`<resource>.<action>:<target>` → creates and
latest operation), `sandbox.failures` (injected-failure counters); each resource module adds its own world kind.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, PermanentError, TransientError
from runbooks.ports import Clock, Operation, OperationStatus, StateStore
from runbooks.timeline import iso, parse_iso

OPS_KIND = "sandbox.ops"
TARGETS_KIND = "sandbox.targets"
FAILURES_KIND = "sandbox.failures"
PROVIDER_KIND = "sandbox"

Params = Mapping[str, Any]


# --------------------------------------------------------------------------------------------- time helpers


def stamp(moment: datetime) -> str:
    """A sandbox record's time: `runbooks.timeline.iso`, keeping sub-seconds when there are some (fake clocks)."""
    return iso(moment, fraction=True)


def to_time(value: Any, *, name: str) -> datetime:
    """Accept an aware datetime or an ISO-8601 string; anything else is refused with the right form."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise PermanentError(f"`{name}` must be a UTC time with a zone, such as 2026-11-24T10:00:00Z; "
                                 f"got {value.isoformat()} without one.", provider=PROVIDER_KIND)
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC)
    raise PermanentError(f"`{name}` must be an ISO-8601 UTC time such as 2026-11-24T10:00:00Z; got {value!r}.",
                         provider=PROVIDER_KIND)


def whole_seconds(moment: datetime, *, up: bool = False) -> datetime:
    """Cloud APIs report restorable bounds to the second; round inward so the bound itself is valid."""
    trimmed = moment.replace(microsecond=0)
    return trimmed + timedelta(seconds=1) if up and trimmed != moment else trimmed


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_at(phases: Sequence[Sequence[str]], now: datetime) -> str:
    """The last phase that has begun; phases are `[status, iso time]` in chronological order."""
    current = phases[0][0] if phases else "unknown"
    for name, at in phases:
        if parse_iso(at) <= now:
            current = name
    return current


def first_time(phases: Sequence[Sequence[str]], status: str) -> datetime | None:
    for name, at in phases:
        if name == status:
            return parse_iso(at)
    return None


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def operation_id(*, action: str, target: str, run_id: str) -> str:
    """Deterministic, so that a restarted start finds the operation it began before the crash."""
    return f"sbx-{digest(action, target, run_id)[:16]}"


def create_count(state: StateStore, *, action: str, target: str) -> int:
    """How many times `action` (e.g. `database.restore_pitr`) created something for `target`."""
    record = state.load_state(kind=TARGETS_KIND, key=f"{action}:{target}") or {}
    return int(record.get("creates", 0))


# --------------------------------------------------------------------------------------------- failures


INJECTION_POINTS = ("plan", "preflight", "start", "poll", "verify")
"""Where a failure can be injected: each is one `Provider` call, in the order a run makes them."""


class SandboxCrash(RuntimeError):
    """An injected bug: deliberately *not* a `ProviderError`, so it takes the path an untranslated SDK exception
    or a plain programming error would, and a test can prove that such a surprise never strands a run (no
    half-started step left without a message, a decision or a way to resume)."""


@dataclass(frozen=True)
class Failure:
    """An injected failure from drbot.yml: fail `times` times at one of `INJECTION_POINTS`, then succeed.

    A failure raises a `PermanentError` (or `TransientError` when `transient`); with `crash` it raises a
    `SandboxCrash` instead.
    """

    message: str
    times: int = 1
    at: str = "start"
    transient: bool = False
    crash: bool = False


FAILURE_KEYS = ("at", "message", "times", "transient", "crash")


def parse_failures(raw: Any, *, where: str, actions: frozenset[str]) -> dict[str, Failure]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.failures must be a mapping of action → {{at, message, times, transient, crash}}; "
                          f"got {type(raw).__name__}.")
    failures: dict[str, Failure] = {}
    for name, spec in raw.items():
        action = str(name).split(".")[-1]
        path = f"{where}.failures.{name}"
        if action not in actions:
            raise ConfigError(f"{path}: unknown action `{name}`; use one of {', '.join(sorted(actions))}.")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{path} must be a mapping such as {{message: 'throttled', times: 1, at: start}} "
                              f"or {{at: poll, crash: true}}.")
        unknown = sorted(str(k) for k in spec if k not in FAILURE_KEYS)
        if unknown:  # a typo such as `crsh: true` would otherwise inject an ordinary failure, silently
            raise ConfigError(f"{path}.{unknown[0]}: unknown key; a failure takes {', '.join(FAILURE_KEYS)}.")
        at = str(spec.get("at", "start"))
        if at not in INJECTION_POINTS:
            raise ConfigError(f"{path}.at must be one of {', '.join(INJECTION_POINTS)}; got {at!r}.")
        times = spec.get("times", 1)
        if not isinstance(times, int) or isinstance(times, bool) or times < 0:
            raise ConfigError(f"{path}.times must be a whole number ≥ 0; got {times!r}.")
        crash = spec.get("crash", False)
        if not isinstance(crash, bool):
            raise ConfigError(f"{path}.crash must be true or false; got {crash!r}.")
        transient = spec.get("transient", False)
        if not isinstance(transient, bool):
            raise ConfigError(f"{path}.transient must be true or false; got {transient!r}.")
        if crash and transient:
            raise ConfigError(f"{path}: `crash` and `transient` cannot be combined — a crash is an unexpected "
                              f"exception, never a provider error; drop one of them.")
        default = (f"Injected sandbox crash in {action} at {at}." if crash
                   else f"Injected sandbox failure for {action}.")
        failures[action] = Failure(message=str(spec.get("message") or default), times=times, at=at,
                                   transient=transient, crash=crash)
    return failures


# --------------------------------------------------------------------------------------------- base provider


@dataclass(frozen=True)
class ActionImpl:
    """One action's behaviour. `start` takes (params, run id) and returns the operation handle."""

    plan: Callable[[Params], dict[str, Any]]
    preflight: Callable[[Params], list[str]]
    start: Callable[[Params, str], Operation]
    verify: Callable[[Params, Mapping[str, Any]], list[str]] | None = None


@dataclass(frozen=True)
class Timeline:
    """Absolute phase times of one operation, already divided by `speed`."""

    started_at: datetime
    finishes_at: datetime
    phases: list[list[str]]
    real_seconds: float


@dataclass
class Write:
    """A full-value world change an operation makes (applied idempotently, re-applied on re-attach)."""

    kind: str
    key: str
    value: dict[str, Any] = field(default_factory=dict)


class SandboxProvider:
    """Base of the sandbox twins: dispatch, failure injection, operation records and polling."""

    kind: str = PROVIDER_KIND
    resource: ClassVar[str] = ""
    required_settings: ClassVar[dict[str, str]] = {}
    """Setting → example, checked at construction so `drbot check` reports a bad drbot.yml before any run."""

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any], state: StateStore,
                 clock: Clock, speed: float) -> None:
        if not speed or speed <= 0:
            raise ConfigError(f"DRBOT_SANDBOX_SPEED must be a positive number such as 60; got {speed!r}.")
        self.environment = environment
        self.resource_name = resource
        self.settings: dict[str, Any] = dict(settings)
        self.state = state
        self.clock = clock
        self.speed = float(speed)
        for name, example in self.required_settings.items():
            if not self.settings.get(name):
                raise ConfigError(f"{self.where}.{name} is missing; add it, e.g. `{name}: {example}`.")
        self._impls = self._actions_table()
        declared = {a.name for a in ACTIONS.values() if a.resource == self.resource}
        missing = declared - set(self._impls)
        if missing:  # a programming error in this package, not a user mistake
            raise TypeError(f"{type(self).__name__} does not implement {sorted(missing)}")
        self._failures = parse_failures(self.settings.get("failures"), where=self.where,
                                        actions=frozenset(self._impls))

    # ---- to be provided by each resource module

    def _actions_table(self) -> dict[str, ActionImpl]:
        raise NotImplementedError

    def _seed(self) -> None:
        """Create the world's starting objects the first time they are needed (deterministic content)."""

    def _progress_message(self, record: Mapping[str, Any], fraction: float, status: str) -> str:
        return f"{status} ({fraction:.0%})" if 0 < fraction < 1 else status

    # ---- Provider protocol

    @property
    def where(self) -> str:
        return f"environments.{self.environment}.{self.resource_name}"

    def actions(self) -> frozenset[str]:
        return frozenset(self._impls)

    def plan(self, *, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        name, impl = self._impl(action)
        self._require(name, params)
        self._inject(name, "plan")
        self._seed()
        return impl.plan(params)

    def preflight(self, *, action: str, params: Mapping[str, Any]) -> list[str]:
        name, impl = self._impl(action)
        info = ACTIONS[f"{self.resource}.{name}"]
        missing = sorted(p for p in info.required if params.get(p) is None and p != "restore_time")
        if missing:
            return [f"Missing parameter `{p}` for {self.resource}.{name}; the step needs "
                    f"{', '.join(sorted(info.required))}." for p in missing]
        self._inject(name, "preflight")
        self._seed()
        return impl.preflight(params)

    def start(self, *, action: str, params: Mapping[str, Any], run_id: str) -> Operation:
        name, impl = self._impl(action)
        self._require(name, params)
        self._inject(name, "start")
        self._seed()
        return impl.start(params, run_id)

    def poll(self, *, operation: Operation) -> OperationStatus:
        record = self.state.load_state(kind=OPS_KIND, key=operation.id)
        if record is None:
            raise PermanentError(f"The sandbox has no operation `{operation.id}` ({operation.action} on "
                                 f"{operation.target or '?'}); it was never started in this state database.",
                                 provider=self.kind, code="OperationNotFound")
        self._settle(record)
        self._inject(str(record["action"]), "poll")
        now = self.clock.now()
        started, finishes = parse_iso(record["started_at"]), parse_iso(record["finishes_at"])
        total = (finishes - started).total_seconds()
        fraction = 1.0 if total <= 0 else min(1.0, max(0.0, (now - started).total_seconds() / total))
        done = now >= finishes
        status = status_at(record["phases"], now)
        return OperationStatus(done=done, status=status, progress=fraction,
                               message=self._progress_message(record, fraction, status),
                               outputs=dict(record["outputs"]) if done else {})

    def verify(self, *, action: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
        name, impl = self._impl(action)
        self._inject(name, "verify")
        return impl.verify(params, outputs) if impl.verify else []

    def probe(self) -> list[str]:
        """The simulated resource exists once seeded, so a sandbox resource is always reachable."""
        self._seed()
        return []

    # ---- helpers for the resource modules

    def _impl(self, action: str) -> tuple[str, ActionImpl]:
        name = action.removeprefix(f"{self.resource}.")
        impl = self._impls.get(name)
        if impl is None:
            raise PermanentError(f"The sandbox {self.resource} provider has no action `{action}`; supported: "
                                 f"{', '.join(sorted(self._impls))}.", provider=self.kind, code="UnknownAction")
        return name, impl

    def _require(self, name: str, params: Params) -> None:
        info = ACTIONS[f"{self.resource}.{name}"]
        missing = sorted(p for p in info.required if params.get(p) is None and p != "restore_time")
        if missing:
            raise PermanentError(f"{self.resource}.{name} is missing {', '.join(missing)}; it needs "
                                 f"{', '.join(sorted(info.required))}.", provider=self.kind, code="MissingParameter")

    def _inject(self, action: str, at: str) -> None:
        """Raise the configured failure while its persisted count is below `times` (so it survives restarts)."""
        failure = self._failures.get(action)
        if failure is None or failure.at != at:
            return
        key = f"{self.environment}/{self.resource_name}/{action}/{at}"
        count = int((self.state.load_state(kind=FAILURES_KIND, key=key) or {}).get("count", 0))
        if count >= failure.times:
            return
        self.state.save_state(kind=FAILURES_KIND, key=key, value={"count": count + 1})
        if failure.crash:
            raise SandboxCrash(failure.message)
        error = TransientError if failure.transient else PermanentError
        raise error(failure.message, provider=self.kind, code="InjectedFailure")

    def _load(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.state.load_state(kind=kind, key=key)

    def _save(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        self.state.save_state(kind=kind, key=key, value=value)

    def _scaled(self, real_seconds: float) -> float:
        return real_seconds / self.speed

    def _timeline(self, real_seconds: float, phases: Sequence[tuple[str, float]]) -> Timeline:
        """Phases are (status, fraction of the duration at which it begins)."""
        start = self.clock.now()
        span = timedelta(seconds=self._scaled(real_seconds))
        absolute = [[name, stamp(start + span * frac)] for name, frac in phases]
        return Timeline(started_at=start, finishes_at=start + span, phases=absolute, real_seconds=real_seconds)

    def _instant(self, status: str) -> Timeline:
        return self._timeline(0, [(status, 0.0)])

    def _expected(self, real_seconds: float) -> str:
        return (f"about {human_duration(real_seconds)} in the real world; "
                f"{human_duration(self._scaled(real_seconds))} in the sandbox at speed {self.speed:g}")

    def _op_id(self, action: str, target: str, run_id: str) -> str:
        return operation_id(action=f"{self.resource}.{action}", target=target, run_id=run_id)

    def _attach(self, op_id: str) -> Operation | None:
        record = self._load(OPS_KIND, op_id)
        if record is None:
            return None
        self._settle(record)
        return self._handle(record)

    def _handle(self, record: Mapping[str, Any]) -> Operation:
        return Operation(provider=self.kind, action=str(record["action"]), id=str(record["id"]),
                         target=str(record["target"]),
                         data={"run_id": record["run_id"], "started_at": record["started_at"],
                               "finishes_at": record["finishes_at"]})

    def _begin(self, *, action: str, target: str, run_id: str, timeline: Timeline, outputs: Mapping[str, Any],
               writes: Sequence[Write] = (), detail: Mapping[str, Any] | None = None,
               inflight_key: str = "") -> Operation:
        """Describe before create: attach to this run's operation, or to one in flight for the same target.

        Read-only actions (checks, counts) get a fresh operation every time: re-reading has no side effect, and
        a retried health check must see the world as it is now, not as it was at the first attempt.
        """
        read_only = not ACTIONS[f"{self.resource}.{action}"].mutates
        op_id = self._op_id(action, target, run_id + (f"@{uuid.uuid4().hex}" if read_only else ""))
        mine = self._attach(op_id)
        if mine is not None:
            return mine
        index = self._load(TARGETS_KIND, f"{self.resource}.{action}:{target}") or {}
        latest = self._load(OPS_KIND, str(index.get("operation", ""))) if index.get("operation") else None
        if (not read_only and latest is not None and parse_iso(latest["finishes_at"]) > self.clock.now()
                and latest.get("inflight_key", "") == inflight_key):
            self._settle(latest)
            return self._handle(latest)
        record: dict[str, Any] = {
            "id": op_id, "action": action, "resource": self.resource, "environment": self.environment,
            "target": target, "run_id": run_id, "started_at": stamp(timeline.started_at),
            "finishes_at": stamp(timeline.finishes_at), "real_seconds": timeline.real_seconds,
            "phases": timeline.phases, "outputs": dict(outputs), "detail": dict(detail or {}),
            "writes": [[w.kind, w.key, w.value] for w in writes], "inflight_key": inflight_key, "applied": False,
        }
        self._save(OPS_KIND, op_id, record)
        self._settle(record)
        return self._handle(record)

    def _settle(self, record: dict[str, Any]) -> None:
        """Count the creation and apply the world writes once; safe to repeat after a crash in between."""
        if record.get("applied"):
            return
        key = f"{record['resource']}.{record['action']}:{record['target']}"
        index = self._load(TARGETS_KIND, key) or {}
        if index.get("operation") != record["id"]:
            self._save(TARGETS_KIND, key, {"creates": int(index.get("creates", 0)) + 1, "operation": record["id"]})
        for kind, world_key, value in record["writes"]:
            self._save(kind, world_key, value)
        record["applied"] = True
        self._save(OPS_KIND, record["id"], record)


def refuse(message: str, *, code: str = "InvalidParameter") -> PermanentError:
    return PermanentError(message, provider=PROVIDER_KIND, code=code)
