"""What the Cloud SQL provider's actions share: dispatch against the action vocabulary, the lazily built discovery
client, time handling, describe helpers and reading Cloud SQL's own `Operation` resources.

Why the discovery client (`googleapiclient.discovery.build("sqladmin", "v1")`) and not `google-cloud-sql`: the
GAPIC package ships gRPC transports only, so it cannot be aimed at a local HTTP double; the discovery client
speaks the same REST API the console uses and takes `client_options={"api_endpoint": ...}`. It is built only when
an action runs, so `drbot --help` stays fast and `drbot check` reports a bad drbot.yml first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from integrations.gcp.errors import gcp_errors
from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, DrbotError, PermanentError
from runbooks.ports import Clock, Operation, OperationStatus, StateStore, SystemClock

Params = Mapping[str, Any]


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with `Z`, to the second: what Cloud SQL accepts as `pointInTime` and the thread shows."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Cloud SQL timestamps carry up to nanoseconds (`2026-11-24T10:00:00.123456789Z`); keep the second."""
    head = text.strip().replace("Z", "+00:00")
    if "." in head:
        whole, rest = head.split(".", 1)
        zone = rest[next((i for i, c in enumerate(rest) if c in "+-"), len(rest)):]
        head = whole + zone
    return datetime.fromisoformat(head).astimezone(UTC)


def to_time(value: Any, *, name: str, provider: str) -> datetime:
    """Accept an aware datetime or an ISO-8601 string (the engine renders times as datetimes)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise PermanentError(f"`{name}` must be an ISO-8601 UTC time such as 2026-11-24T10:00:00Z; got {value!r}.",
                         provider=provider, code="InvalidParameter")


def is_latest(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in {"", "latest"})


def run_short(run_id: str) -> str:
    """The run's short id as the catalog renders it into target names (`R-7` → `r7`)."""
    return run_id.lower().replace("-", "")


def make_client(settings: Mapping[str, Any]) -> Any:
    """The sqladmin v1 discovery client: Application Default Credentials, or anonymous ones for a local double."""
    from googleapiclient.discovery import build  # lazily: see the docstring

    if settings.get("credentials") == "anonymous" or settings.get("anonymous") is True:
        from google.auth.credentials import AnonymousCredentials

        credentials: Any = AnonymousCredentials()  # type: ignore[no-untyped-call]
    else:
        import google.auth

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/sqlservice.admin"])
    options = {"api_endpoint": str(settings["endpoint_url"])} if settings.get("endpoint_url") else None
    return build("sqladmin", "v1", credentials=credentials, static_discovery=True, cache_discovery=False,
                 client_options=options)


@dataclass(frozen=True)
class ActionImpl:
    plan: Callable[[Params], dict[str, Any]]
    preflight: Callable[[Params], list[str]]
    start: Callable[[Params, str], Operation]
    poll: Callable[[Operation], OperationStatus] | None = None
    """None for actions that always finish inside `start` (see `_instant`)."""


class CloudSqlBase:
    """Dispatch, the client, and describe helpers; the actions live in `cloudsql.py` and `replica.py`."""

    kind = "cloudsql"
    resource = "database"
    state_kind = "gcp.cloudsql"

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any], client: Any = None,
                 state: StateStore | None = None, clock: Clock | None = None) -> None:
        self.environment = environment
        self.resource_name = resource
        self.settings: dict[str, Any] = dict(settings)
        self._client = client
        self.state = state
        self.clock: Clock = clock or SystemClock()
        self._impls = self._actions_table()

    def _actions_table(self) -> dict[str, ActionImpl]:
        raise NotImplementedError

    # ---- Provider protocol

    @property
    def where(self) -> str:
        return f"environments.{self.environment}.{self.resource_name}"

    @property
    def client(self) -> Any:
        if self._client is None:
            with gcp_errors(provider=self.kind, doing="creating the Cloud SQL Admin client"):
                self._client = make_client(self.settings)
        return self._client

    @property
    def project(self) -> str:
        value = self.settings.get("project")
        if not value:
            raise ConfigError(f"{self.where}.project is missing; add the Google Cloud project id, e.g. "
                              "`project: my-project-123`.")
        return str(value)

    def actions(self) -> frozenset[str]:
        return frozenset(self._impls)

    def plan(self, *, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        name, impl = self._impl(action)
        self._require(name, params)
        return impl.plan(params)

    def preflight(self, *, action: str, params: Mapping[str, Any]) -> list[str]:
        name, impl = self._impl(action)
        missing = self._missing_params(name, params)
        if missing:
            info = ACTIONS[f"{self.resource}.{name}"]
            return [f"Missing parameter `{p}` for {self.resource}.{name}; the step needs "
                    f"{', '.join(sorted(info.required))}." for p in missing]
        return impl.preflight(params)

    def start(self, *, action: str, params: Mapping[str, Any], run_id: str) -> Operation:
        name, impl = self._impl(action)
        self._require(name, params)
        return impl.start(params, run_id)

    def poll(self, *, operation: Operation) -> OperationStatus:
        if operation.data.get("instant"):
            return OperationStatus(done=True, status=str(operation.data.get("status", "done")), progress=1.0,
                                   message=str(operation.data.get("message", "")),
                                   outputs=dict(operation.data.get("outputs", {})))
        _, impl = self._impl(operation.action)
        if impl.poll is None:
            raise PermanentError(f"{operation.action} finishes inside start; operation `{operation.id}` has no "
                                 "status to poll.", provider=self.kind, code="UnknownOperation")
        return impl.poll(operation)

    def verify(self, *, action: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
        self._impl(action)
        return []

    # ---- dispatch helpers

    def _impl(self, action: str) -> tuple[str, ActionImpl]:
        name = action.removeprefix(f"{self.resource}.")
        impl = self._impls.get(name)
        if impl is None:
            raise PermanentError(f"The {self.kind} provider has no action `{action}`; it supports "
                                 f"{', '.join(sorted(self._impls))}.", provider=self.kind, code="UnknownAction")
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

    def _time(self, value: Any, name: str) -> datetime:
        return to_time(value, name=name, provider=self.kind)

    def _instant(self, *, action: str, target: str, run_id: str, outputs: Mapping[str, Any], status: str,
                 message: str = "") -> Operation:
        """An action that finished inside `start`: the outputs travel in the handle, so `poll` is pure."""
        return Operation(provider=self.kind, action=action, id=f"{action}:{target}:{run_id}", target=target,
                         data={"instant": True, "status": status, "message": message, "outputs": dict(outputs)})

    def _remember(self, key: str, value: Mapping[str, Any]) -> None:
        """Keep a fact (the operation a clone started) across a crash, when a store was given."""
        if self.state is not None:
            self.state.save_state(kind=self.state_kind, key=key, value=value)

    def _recall(self, key: str) -> dict[str, Any] | None:
        return None if self.state is None else self.state.load_state(kind=self.state_kind, key=key)

    # ---- Cloud SQL reads

    def _describe(self, name: str, *, setting: str = "instance") -> dict[str, Any] | None:
        """The instance, or None when Cloud SQL says it does not exist (HTTP 404)."""
        try:
            with gcp_errors(provider=self.kind, doing=f"describing Cloud SQL instance `{name}`", subject=name,
                            setting=f"{self.where}.{setting}", permission="cloudsql.instances.get"):
                found: dict[str, Any] = self.client.instances().get(project=self.project, instance=name).execute()
        except PermanentError as exc:
            if exc.code == "404":
                return None
            raise
        return found

    def probe(self) -> list[str]:
        """Read-only reachability check for `drbot check`: an unreachable instance is reported, never raised."""
        try:
            name = self.settings.get("instance")
            if not name:
                return [f"{self.where}.instance is missing; add it, e.g. `instance: rag-engine-prod`."]
            return [] if self._describe(str(name)) is not None else [self._missing(name)]
        except DrbotError as exc:
            return [exc.message]

    def _missing(self, name: Any, setting: str = "instance") -> str:
        return (f"Cloud SQL instance `{name}` does not exist in project `{self.settings.get('project')}` "
                f"(HTTP 404); check {self.where}.{setting} in drbot.yml or the step's parameters.")

    def _require_instance(self, name: str, setting: str = "instance") -> dict[str, Any]:
        instance = self._describe(name, setting=setting)
        if instance is None:
            raise PermanentError(self._missing(name, setting), provider=self.kind, code="404")
        return instance

    def _operation(self, name: str) -> dict[str, Any]:
        with gcp_errors(provider=self.kind, doing=f"reading Cloud SQL operation `{name}`", subject=name,
                        permission="cloudsql.instances.get"):
            found: dict[str, Any] = self.client.operations().get(project=self.project, operation=name).execute()
        return found

    def _operation_failure(self, op: Mapping[str, Any]) -> str:
        """Google's messages of a DONE operation's `error.errors`, joined; "" when it succeeded."""
        errors = ((op.get("error") or {}).get("errors")) or []
        return "; ".join(f"{e.get('code', 'ERROR')}: {e.get('message', '')}".strip() for e in errors)


def endpoint(instance: Mapping[str, Any]) -> str:
    """The instance's primary IP (else any IP, else its DNS name): what clients connect to."""
    addresses = instance.get("ipAddresses") or []
    primary = [a["ipAddress"] for a in addresses if a.get("type") == "PRIMARY" and a.get("ipAddress")]
    others = [a["ipAddress"] for a in addresses if a.get("ipAddress")]
    return str((primary or others or [instance.get("dnsName") or ""])[0])
