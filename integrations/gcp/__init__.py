"""Google Cloud providers: Cloud SQL (`cloudsql`, resource `database`). The discovery client for the Cloud SQL
Admin API (`sqladmin v1`) is built only when an action runs; tests inject one aimed at a local HTTP double.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.gcp.base import CloudSqlBase, make_client
from integrations.gcp.cloudsql import CloudSql
from integrations.gcp.errors import gcp_errors, translate
from integrations.integrity import IntegrityActions
from runbooks.errors import ConfigError
from runbooks.ports import Clock, Provider, StateStore

PROVIDERS: dict[str, type[CloudSqlBase]] = {"database": CloudSql}
PROVIDER_NAMES: dict[str, str] = {cls.kind: resource for resource, cls in PROVIDERS.items()}
"""`provider:` value in drbot.yml → the resource it serves (`cloudsql` → `database`)."""

__all__ = ["PROVIDERS", "PROVIDER_NAMES", "CloudSql", "build_gcp_provider", "gcp_errors", "make_client",
           "translate"]


def build_gcp_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                       state: StateStore | None = None, clock: Clock | None = None,
                       environ: Mapping[str, str] | None = None) -> Provider:
    """The Google Cloud provider for one resource; its client is created from `settings` on first use
    (Application Default Credentials; `endpoint_url` and `credentials: anonymous` aim it at a local double)."""
    cls = PROVIDERS.get(resource)
    if cls is None:
        raise ConfigError(f"environments.{environment}.{resource}: Google Cloud has no provider for `{resource}`; "
                          "it serves " + ", ".join(f"{r} (provider: {c.kind})" for r, c in sorted(PROVIDERS.items()))
                          + ".")
    # The database provider reads its `integrity.url_env` variable from `environ` (bot.config hands it over).
    extra: dict[str, Any] = {"environ": environ} if issubclass(cls, IntegrityActions) else {}
    provider: Provider = cls(environment=environment, resource=resource, settings=settings, state=state, clock=clock,
                             **extra)
    return provider
