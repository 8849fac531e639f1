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
from integrations.builders import build_cloud_provider
from integrations.common import vocabulary
from runbooks.ports import Clock, Provider, ProviderServices, ProviderSpec, StateStore

PROVIDERS: dict[str, type[AzureBase]] = {"database": AzurePostgres}

__all__ = ["PROVIDERS", "PROVIDES", "AzureBase", "AzurePostgres", "azure_errors", "build_azure_provider",
           "make_client", "translate"]


def build_azure_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                         state: StateStore | None = None, clock: Clock | None = None,
                         environ: Mapping[str, str] | None = None) -> Provider:
    """The Azure provider for one resource; its ARM client is built from `settings` and DefaultAzureCredential
    on first use, so a bad drbot.yml is reported before any credential is looked for."""
    return build_cloud_provider(PROVIDERS, cloud="Azure", serves="Azure", environment=environment,
                                resource=resource, settings=settings, state=state, clock=clock, environ=environ)


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    return build_azure_provider(environment=environment, resource=resource, settings=settings, state=services.state,
                                clock=services.clock, environ=services.environ)


PROVIDES = (ProviderSpec(name="azure-postgres",
                         actions={"database": vocabulary("database", without=("backup_age", "create_replica"))},
                         build=_build, extra="azure", sdk=("azure.identity", "azure.mgmt.postgresqlflexibleservers")),)
"""The `provider:` names this package serves, for wiring (`ProviderSpec`)."""
