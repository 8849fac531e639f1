"""What the Cloud SQL provider's actions add to `integrations.common`: the lazily built discovery client, Cloud SQL's
nanosecond timestamps, describe helpers and reading Cloud SQL's own `Operation` resources.

Why the discovery client (`googleapiclient.discovery.build("sqladmin", "v1")`) and not `google-cloud-sql`: the
GAPIC package ships gRPC transports only, so it cannot be aimed at a local HTTP double; the discovery client
speaks the same REST API the console uses and takes `client_options={"api_endpoint": ...}`. It is built only when
an action runs, so `drbot --help` stays fast and `drbot check` reports a bad drbot.yml first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.database import DatabaseActions
from integrations.gcp.errors import gcp_errors
from runbooks.errors import ConfigError, PermanentError


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


class CloudSqlBase(DatabaseActions):
    """The client and describe helpers (dispatch is in `integrations.common`); the actions live in `cloudsql.py`
    and `replica.py`."""

    kind = "cloudsql"
    resource = "database"
    state_kind = "gcp.cloudsql"
    deleting_state = "PENDING_DELETE"
    no_backup_code = "NoBackup"
    age_status = "SUCCESSFUL"
    replica_state_code = "InvalidInstanceState"

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

    def _time(self, value: Any, name: str) -> datetime:
        """Cloud SQL's own variant: nanosecond timestamps are accepted and a zone-less datetime is refused."""
        return to_time(value, name=name, provider=self.kind)

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

    def _probe(self) -> list[str]:
        name = self.settings.get("instance")
        if not name:
            return [f"{self.where}.instance is missing; add it, e.g. `instance: rag-engine-prod`."]
        return [] if self._describe(str(name)) is not None else [self._missing(name)]

    def _missing(self, name: Any, setting: str = "instance") -> str:
        return (f"Cloud SQL instance `{name}` does not exist in project `{self.settings.get('project')}` "
                f"(HTTP 404); check {self.where}.{setting} in drbot.yml or the step's parameters.")

    def _state(self, found: Mapping[str, Any]) -> str:
        return str(found.get("state"))

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
