"""Azure providers: Database for PostgreSQL Flexible Server (`azure-postgres`, resource `database`).

azure-identity and azure-mgmt-postgresqlflexibleservers are imported only when a client is first needed; tests
inject a `PostgreSQLManagementClient` aimed at the TLS fake in `tests/doubles/fake_azure.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.azure.common import AzureBase, make_client
from integrations.azure.errors import azure_errors, translate
from integrations.azure.postgres import AzurePostgres
from integrations.integrity import IntegrityActions
from runbooks.errors import ConfigError
from runbooks.ports import Clock, Provider, StateStore

PROVIDERS: dict[str, type[AzureBase]] = {"database": AzurePostgres}
PROVIDER_NAMES: dict[str, str] = {cls.kind: resource for resource, cls in PROVIDERS.items()}
"""`provider:` value in drbot.yml → the resource it serves (`azure-postgres` → `database`)."""

__all__ = ["PROVIDERS", "PROVIDER_NAMES", "AzureBase", "AzurePostgres", "azure_errors", "build_azure_provider",
           "make_client", "translate"]


def build_azure_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                         state: StateStore | None = None, clock: Clock | None = None,
                         environ: Mapping[str, str] | None = None) -> Provider:
    """The Azure provider for one resource; its ARM client is built from `settings` and DefaultAzureCredential
    on first use, so a bad drbot.yml is reported before any credential is looked for."""
    cls = PROVIDERS.get(resource)
    if cls is None:
        raise ConfigError(f"environments.{environment}.{resource}: Azure has no provider for `{resource}`; Azure "
                          "serves " + ", ".join(f"{r} (provider: {c.kind})" for r, c in sorted(PROVIDERS.items()))
                          + ".")
    # The database provider reads its `integrity.url_env` variable from `environ` (bot.config hands it over).
    extra: dict[str, Any] = {"environ": environ} if issubclass(cls, IntegrityActions) else {}
    provider: Provider = cls(environment=environment, resource=resource, settings=settings, state=state, clock=clock,
                             **extra)
    return provider
