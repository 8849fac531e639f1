"""Google Cloud providers: Cloud SQL (`cloudsql`, resource `database`). The discovery client for the Cloud SQL
Admin API (`sqladmin v1`) is built only when an action runs; tests inject one aimed at a local HTTP double.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.builders import build_cloud_provider
from integrations.common import vocabulary
from integrations.gcp.base import CloudSqlBase, make_client
from integrations.gcp.cloudsql import CloudSql
from integrations.gcp.errors import gcp_errors, translate
from runbooks.ports import Clock, Provider, ProviderServices, ProviderSpec, StateStore

PROVIDERS: dict[str, type[CloudSqlBase]] = {"database": CloudSql}

__all__ = ["PROVIDERS", "PROVIDES", "CloudSql", "build_gcp_provider", "gcp_errors", "make_client",
           "translate"]


def build_gcp_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                       state: StateStore | None = None, clock: Clock | None = None,
                       environ: Mapping[str, str] | None = None) -> Provider:
    """The Google Cloud provider for one resource; its client is created from `settings` on first use
    (Application Default Credentials; `endpoint_url` and `credentials: anonymous` aim it at a local double)."""
    return build_cloud_provider(PROVIDERS, cloud="Google Cloud", serves="it", environment=environment,
                                resource=resource, settings=settings, state=state, clock=clock, environ=environ)


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    return build_gcp_provider(environment=environment, resource=resource, settings=settings, state=services.state,
                              clock=services.clock, environ=services.environ)


PROVIDES = (ProviderSpec(name="cloudsql", actions={"database": vocabulary("database", without=("create_replica",))},
                         build=_build, extra="gcp", sdk=("googleapiclient", "google.auth")),)
"""The `provider:` names this package serves, for wiring (`ProviderSpec`)."""
