"""The base every sandbox twin shares: the common action dispatch (`integrations.common.ActionDispatch`) plus
failure injection, operation records and polling over a simulated world that lives entirely in the `StateStore`.

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

The state kinds are named in `records.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from integrations.common import ActionDispatch
from integrations.sandbox.failures import SandboxCrash, parse_failures
from integrations.sandbox.phases import Timeline, human_duration, stamp, status_at
from integrations.sandbox.records import FAILURES_KIND, OPS_KIND, PROVIDER_KIND, TARGETS_KIND, Write, operation_id
from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, PermanentError, TransientError
from runbooks.ports import Clock, Operation, OperationStatus, RecoveryPoint, StateStore
from runbooks.timeline import format_duration, parse_duration, parse_iso


class SandboxProvider(ActionDispatch):
    """Base of the sandbox twins: failure injection, operation records and polling over the common dispatch."""

    kind: str = PROVIDER_KIND
    resource: ClassVar[str] = ""
    required_settings: ClassVar[dict[str, str]] = {}
    """Setting → example, checked at construction so `drbot check` reports a bad drbot.yml before any run."""

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any], state: StateStore,
                 clock: Clock, speed: float) -> None:
        if not speed or speed <= 0:
            raise ConfigError(f"DRBOT_SANDBOX_SPEED must be a positive number such as 60; got {speed!r}.")
        self.state = state
        self.clock = clock
        self.speed = float(speed)
        super().__init__(environment=environment, resource=resource, settings=settings)
        for name, example in self.required_settings.items():
            self._setting(name, example)
        declared = {a.name for a in ACTIONS.values() if a.resource == self.resource}
        missing = declared - set(self._impls)
        if missing:  # a programming error in this package, not a user mistake
            raise TypeError(f"{type(self).__name__} does not implement {sorted(missing)}")
        self._failures = parse_failures(self.settings.get("failures"), where=self.where,
                                        actions=frozenset(self._impls) | {"recovery_point"})

    # ---- the RPO monitor's read (`runbooks.ports.RecoveryPointReader`)

    def recovery_point(self) -> RecoveryPoint:
        """The store's newest recovery point, as the real provider would read it (one "call"). A resource's
        `stale: 3h` in drbot.yml makes it that much older, with backups that stopped as the cause, so an RPO breach
        can be rehearsed offline."""
        self._inject("recovery_point", "start")  # `failures: {recovery_point: {at: start, …}}`: a store unreadable
        self._seed()
        point = self._recovery_point()
        raw = self.settings.get("stale")
        if not raw or point.newest is None:
            return point
        try:
            lag = parse_duration(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{self.where}.stale: {exc}") from None
        return point.model_copy(update={
            "newest": point.newest - lag,
            "cause": f"backups stopped {format_duration(lag)} ago (the sandbox's `stale: {raw}` in drbot.yml)"})

    def _recovery_point(self) -> RecoveryPoint:
        raise PermanentError(f"the sandbox's {self.resource} has no recovery points", provider=self.kind)

    # ---- to be provided by each resource module

    def _seed(self) -> None:
        """Create the world's starting objects the first time they are needed (deterministic content)."""

    def _progress_message(self, record: Mapping[str, Any], fraction: float, status: str) -> str:
        return f"{status} ({fraction:.0%})" if 0 < fraction < 1 else status

    # ---- hooks of the common dispatch

    def _entering(self, name: str, at: str) -> None:
        self._inject(name, at)
        if at != "verify":  # verify judges the outputs it is given and reads no world
            self._seed()

    def _unknown_action(self, action: str) -> str:
        return (f"The sandbox {self.resource} provider has no action `{action}`; supported: "
                f"{', '.join(sorted(self._impls))}.")

    def _probe(self) -> list[str]:
        """The simulated resource exists once seeded, so a sandbox resource is always reachable."""
        self._seed()
        return []

    # ---- Provider protocol (the rest is `ActionDispatch`)

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

    # ---- helpers for the resource modules

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
