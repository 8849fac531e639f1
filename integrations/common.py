"""What every cloud provider (AWS, Google Cloud, Azure) shares: dispatch against the action vocabulary, parameter
checks, time handling, "instant" operations, StateStore notes and the never-raising `probe`.

Why one module: the three providers answer the same Provider protocol over the same vocabulary, so the parts
that do not talk to a cloud must read — and fail — alike; each provider keeps its own client and error
translation. The sandbox twins reuse the dispatch (`ActionDispatch`) and keep their own simulated operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, DrbotError, PermanentError
from runbooks.ports import Clock, Operation, OperationStatus, StateStore, SystemClock

Params = Mapping[str, Any]


def to_time(value: Any, *, name: str, provider: str) -> datetime:
    """Accept an aware datetime or an ISO-8601 string (the engine renders times as datetimes)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise PermanentError(f"`{name}` must be a UTC time with a zone, such as 2026-11-24T10:00:00Z; got "
                                 f"{value.isoformat()} without one.", provider=provider, code="InvalidParameter")
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC)
    raise PermanentError(f"`{name}` must be an ISO-8601 UTC time such as 2026-11-24T10:00:00Z; got {value!r}.",
                         provider=provider, code="InvalidParameter")


def vocabulary(resource: str, *, without: Iterable[str] = ()) -> frozenset[str]:
    """The actions `runbooks.actions` defines for `resource`, less those a provider leaves out: what a package
    declares its provider offers (`ProviderSpec.actions`)."""
    return frozenset(a.name for a in ACTIONS.values() if a.resource == resource) - frozenset(without)


def is_latest(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in {"", "latest"})


@dataclass(frozen=True)
class ActionImpl:
    plan: Callable[[Params], dict[str, Any]]
    preflight: Callable[[Params], list[str]]
    start: Callable[[Params, str], Operation]
    poll: Callable[[Operation], OperationStatus] | None = None
    """None for actions that always finish inside `start` (see `_instant`), and in the sandbox, which polls its
    own operation records."""
    verify: Callable[[Params, Mapping[str, Any]], list[str]] | None = None


class ActionDispatch:
    """The Provider protocol over a table of actions: name lookup, parameter checks and the never-raising `probe`.

    Shared by the real clouds (`CloudProvider`) and the sandbox twins, so a misspelt action or a missing parameter
    is refused the same way everywhere. A subclass fills in `_actions_table` and `_probe`, adds `poll`, and may
    hook `_entering` (the sandbox injects failures there) and `_unknown_action` (its own refusal).
    """

    kind: str = ""
    resource: ClassVar[str] = ""

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any]) -> None:
        self.environment = environment
        self.resource_name = resource
        self.settings: dict[str, Any] = dict(settings)
        self._impls = self._actions_table()

    # ---- to be provided

    def _actions_table(self) -> dict[str, ActionImpl]:
        raise NotImplementedError

    def _probe(self) -> list[str]:
        raise NotImplementedError

    def _entering(self, name: str, at: str) -> None:
        """Called once the parameters are checked, just before `plan`, `preflight`, `start` or `verify` runs."""

    def _unknown_action(self, action: str) -> str:
        return f"The {self.kind} provider has no action `{action}`; it supports {', '.join(sorted(self._impls))}."

    # ---- Provider protocol

    @property
    def where(self) -> str:
        return f"environments.{self.environment}.{self.resource_name}"

    def actions(self) -> frozenset[str]:
        return frozenset(self._impls)

    def plan(self, *, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        name, impl = self._impl(action)
        self._require(name, params)
        self._entering(name, "plan")
        return impl.plan(params)

    def preflight(self, *, action: str, params: Mapping[str, Any]) -> list[str]:
        name, impl = self._impl(action)
        missing = self._missing_params(name, params)
        if missing:
            info = ACTIONS[f"{self.resource}.{name}"]
            return [f"Missing parameter `{p}` for {self.resource}.{name}; the step needs "
                    f"{', '.join(sorted(info.required))}." for p in missing]
        self._entering(name, "preflight")
        return impl.preflight(params)

    def start(self, *, action: str, params: Mapping[str, Any], run_id: str) -> Operation:
        name, impl = self._impl(action)
        self._require(name, params)
        self._entering(name, "start")
        return impl.start(params, run_id)

    def verify(self, *, action: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
        name, impl = self._impl(action)
        self._entering(name, "verify")
        return impl.verify(params, outputs) if impl.verify else []

    def probe(self) -> list[str]:
        """Read-only reachability check for `drbot check`: an unreachable resource is reported, never raised."""
        try:
            return self._probe()
        except DrbotError as exc:
            return [exc.message]

    # ---- helpers

    def _impl(self, action: str) -> tuple[str, ActionImpl]:
        name = action.removeprefix(f"{self.resource}.")
        impl = self._impls.get(name)
        if impl is None:
            raise PermanentError(self._unknown_action(action), provider=self.kind, code="UnknownAction")
        return name, impl

    def _missing_params(self, name: str, params: Params) -> list[str]:
        info = ACTIONS[f"{self.resource}.{name}"]
        return sorted(p for p in info.required if params.get(p) is None and p != "restore_time")

    def _require(self, name: str, params: Params) -> None:
        missing = self._missing_params(name, params)
        if missing:
            info = ACTIONS[f"{self.resource}.{name}"]
            raise PermanentError(f"{self.resource}.{name} is missing {', '.join(missing)}; it needs "
                                 f"{', '.join(sorted(info.required))}.", provider=self.kind, code="MissingParameter")

    def _setting(self, name: str, example: str) -> str:
        value = self.settings.get(name)
        if not value:
            raise ConfigError(f"{self.where}.{name} is missing; add it, e.g. `{name}: {example}`.")
        return str(value)


class CloudProvider(ActionDispatch):
    """A real cloud's provider: each adds its `client` and fills in `_actions_table` and `_probe`."""

    state_kind: ClassVar[str] = ""

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any], client: Any = None,
                 state: StateStore | None = None, clock: Clock | None = None) -> None:
        self._client = client
        self.state = state
        self.clock: Clock = clock or SystemClock()
        super().__init__(environment=environment, resource=resource, settings=settings)

    def poll(self, *, operation: Operation) -> OperationStatus:
        if operation.data.get("instant"):
            return OperationStatus(done=True, status=str(operation.data.get("status", "done")),
                                   failed=bool(operation.data.get("failed", False)),
                                   message=str(operation.data.get("message", "")), progress=1.0,
                                   outputs=dict(operation.data.get("outputs", {})))
        _, impl = self._impl(operation.action)
        if impl.poll is None:
            raise PermanentError(f"{operation.action} finishes inside start; operation `{operation.id}` has no "
                                 "status to poll.", provider=self.kind, code="UnknownOperation")
        return impl.poll(operation)

    def _time(self, value: Any, name: str) -> datetime:
        return to_time(value, name=name, provider=self.kind)

    def _instant(self, *, action: str, target: str, run_id: str, outputs: Mapping[str, Any], status: str,
                 message: str = "") -> Operation:
        """An action that finished inside `start`: the outputs travel in the handle, so `poll` is pure."""
        return Operation(provider=self.kind, action=action, id=f"{action}:{target}:{run_id}", target=target,
                         data={"instant": True, "status": status, "message": message, "outputs": dict(outputs)})

    def _remember(self, key: str, value: Mapping[str, Any]) -> None:
        """Keep a fact (a replica's lag, a clone's operation, a record's previous value) across a crash."""
        if self.state is not None:
            self.state.save_state(kind=self.state_kind, key=key, value=value)

    def _recall(self, key: str) -> dict[str, Any] | None:
        return None if self.state is None else self.state.load_state(kind=self.state_kind, key=key)
