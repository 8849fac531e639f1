"""What the Azure PostgreSQL provider's actions share: the lazily built ARM client, server look-ups, and
long-running operations that survive a crash.

Why an LRO is *started* with `polling=False` and followed by reading its `Azure-AsyncOperation` URL: the SDK's
`LROPoller` polls in a background thread of this process and cannot be checkpointed, whereas the engine polls
with its own backoff and may resume the run in another process. `start` keeps the status URL (from the initial
202's headers, via azure-core's `raw_response_hook`) in the Operation and in the StateStore; `poll` GETs it
through the client's own pipeline (`send_request`: same credential, retries and TLS settings) and, once it says
`Succeeded`, reads the server for its `state` and outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.azure.errors import azure_errors
from integrations.database import DatabaseActions
from runbooks.errors import ConfigError, PermanentError
from runbooks.ports import Operation, OperationStatus
from runbooks.timeline import iso

ARM = "https://management.azure.com"
RP = "Microsoft.DBforPostgreSQL/flexibleServers"
TAG_RUN, TAG_SOURCE, TAG_TIME = "drbot-run", "drbot-source", "drbot-restore-time"
FAILED_STATES = frozenset({"Disabled", "Inaccessible", "Dropping"})
SCRATCH_MARKERS = ("-pitr-", "-verify-", "-geo-", "-drill-")


def make_client(settings: Mapping[str, Any]) -> Any:
    """The ARM client from DefaultAzureCredential (env vars, managed identity, `az login`) and settings."""
    from azure.identity import DefaultAzureCredential  # lazily: importing azure takes ~0.5 s
    from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

    return PostgreSQLManagementClient(credential=DefaultAzureCredential(),
                                      subscription_id=str(settings["subscription"]),
                                      base_url=str(settings.get("endpoint_url") or ARM))


def as_dict(model: Any) -> dict[str, Any]:
    """SDK models are MutableMappings in the wire's camelCase; plain dicts keep the rest of the code SDK-free."""
    return dict(model.as_dict()) if hasattr(model, "as_dict") else dict(model)


def to_utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return None


class AzureBase(DatabaseActions):
    """Client, settings and LRO plumbing; the actions live in `postgres.py` and `replica.py`."""

    kind = "azure-postgres"
    resource = "database"
    state_kind = "azure.postgres"
    replica_state_code = "InvalidServerState"

    def _make_client(self) -> Any:
        self._setting("subscription", "00000000-0000-0000-0000-000000000000")
        return make_client(self.settings)

    @property
    def client(self) -> Any:
        if self._client is None:
            with azure_errors(provider=self.kind, doing="creating the Azure PostgreSQL client"):
                self._client = self._make_client()
        return self._client

    @property
    def group(self) -> str:
        return self._setting("resource_group", "dr-rg")

    @property
    def location(self) -> str:
        return self._setting("location", "eastus")

    def _server_id(self, name: str) -> str:
        subscription = self._setting("subscription", "00000000-0000-0000-0000-000000000000")
        return f"/subscriptions/{subscription}/resourceGroups/{self.group}/providers/{RP}/{name}"

    def _probe(self) -> list[str]:
        name = self._setting("server", "rag-engine-prod")
        return [] if self._describe(name) is not None else [self._missing(name)]

    def _missing(self, name: Any, setting: str = "server") -> str:
        return (f"Azure PostgreSQL flexible server `{name}` does not exist in resource group `{self.group}` "
                f"(ResourceNotFound); check {self.where}.{setting} in drbot.yml or the step's parameters.")

    def _describe(self, name: str) -> dict[str, Any] | None:
        """The server as camelCase JSON, or None when ARM says it does not exist."""
        try:
            with azure_errors(provider=self.kind, doing=f"reading flexible server `{name}`", subject=name):
                found = self.client.servers.get(self.group, name)
        except PermanentError as exc:
            if exc.code in {"ResourceNotFound", "ServerNotExist", "404"}:
                return None
            raise
        return as_dict(found)

    # ---- long-running operations

    def _begin(self, call: Any, *args: Any, doing: str, subject: str = "", setting: str = "") -> str:
        """Send an LRO's first request without the SDK's poller; the `Azure-AsyncOperation` URL it answered."""
        headers: dict[str, str] = {}

        def keep(response: Any) -> None:
            raw = response.http_response
            if raw.status_code in {200, 201, 202}:
                headers.update({k.lower(): v for k, v in raw.headers.items()})

        with azure_errors(provider=self.kind, doing=doing, subject=subject, setting=setting):
            call(*args, polling=False, raw_response_hook=keep)
        return headers.get("azure-asyncoperation") or headers.get("location") or ""

    def _lro_status(self, url: str, *, doing: str) -> tuple[str, str]:
        """(status, error sentence) of an async operation: InProgress, Succeeded, Failed or Canceled."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        with azure_errors(provider=self.kind, doing=doing):
            response = self.client.send_request(HttpRequest("GET", url))
            if response.status_code >= 400:
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            code = response.status_code
            body = response.json() if response.content else {}
        error = body.get("error") or {}
        message = f"{error.get('code', 'Failed')}: {error.get('message', 'no detail')}" if error else ""
        # An `Azure-AsyncOperation` body carries `status`; a bare `Location` URL answers 202 until it is done.
        return str(body.get("status") or ("InProgress" if code == 202 else "Succeeded")), message

    def _follow(self, operation: Operation, *, what: str) -> tuple[OperationStatus | None, dict[str, Any] | None]:
        """Not-done/failed status while the LRO runs; else (None, the server) once it is `Ready`."""
        url = str(operation.data.get("async_url") or "")
        if url:
            status, error = self._lro_status(url, doing=f"reading the status of {what}")
            if status in {"Failed", "Canceled"}:
                return OperationStatus(done=True, failed=True, status=status,
                                       message=f"Azure reports {what} as `{status}` ({error or 'no detail'}); "
                                               "check the server's activity log in the portal, then retry or "
                                               "abort."), None
            if status != "Succeeded":
                return OperationStatus(done=False, status=status), None
        server = self._describe(operation.target)
        if server is None:
            if url:
                raise PermanentError(f"`{operation.target}` is gone although {what} succeeded (ResourceNotFound); "
                                     "it was deleted meanwhile — check the activity log.", provider=self.kind,
                                     code="ResourceNotFound")
            return OperationStatus(done=False, status="Provisioning"), None
        state = str((server.get("properties") or {}).get("state") or "")
        if state in FAILED_STATES:
            return OperationStatus(done=True, failed=True, status=state,
                                   message=f"Azure reports `{operation.target}` as `{state}` after {what}."), None
        if state != "Ready":
            return OperationStatus(done=False, status=state or "Provisioning"), None
        return None, server

    def _remember_op(self, key: str, *, url: str, **facts: Any) -> dict[str, Any]:
        value = {"async_url": url, "started_at": iso(self.clock.now()), **facts}
        self._remember(key, value)
        return value

    def _settings_replica(self) -> Mapping[str, Any]:
        replica = self.settings.get("replica")
        if replica is not None and not isinstance(replica, Mapping):
            raise ConfigError(f"{self.where}.replica must be a mapping such as `replica: {{server: prod-pg-dr}}`.")
        return replica or {}


def endpoint(server: Mapping[str, Any]) -> str:
    return str((server.get("properties") or {}).get("fullyQualifiedDomainName") or "")


def server_tags(server: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (server.get("tags") or {}).items()}
