"""Qdrant provider for the `vectors` resource (`provider: qdrant` in drbot.yml).

Settings: `url` (REST address, e.g. http://qdrant:6333), `collection`, and optionally `api_key_env` (the NAME of
the environment variable holding the API key — never the key), `snapshot_url` (the address the server uses to
fetch its own snapshots, when it differs from `url`), `timeout` (seconds) and `settle_seconds`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from integrations.common import vocabulary
from integrations.qdrant.errors import translate
from integrations.qdrant.provider import OPS_KIND, QdrantProvider
from runbooks.errors import ConfigError
from runbooks.ports import Clock, Provider, ProviderServices, ProviderSpec, StateStore

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = ["OPS_KIND", "PROVIDES", "QdrantProvider", "build_qdrant_provider", "translate"]


def build_qdrant_provider(*, environment: str, resource: str, settings: Mapping[str, Any], state: StateStore,
                          clock: Clock, client: QdrantClient | None = None,
                          environ: Mapping[str, str] | None = None) -> Provider:
    """Read the API key from the variable `api_key_env` names (tests pass `environ`); the client is built lazily."""
    env = os.environ if environ is None else environ
    name = settings.get("api_key_env")
    api_key: str | None = None
    if name:
        api_key = env.get(str(name)) or None
        if api_key is None:
            raise ConfigError(f"environments.{environment}.{resource}.api_key_env names `{name}`, but that "
                              f"environment variable is not set; export {name}=<the Qdrant API key>.")
    return QdrantProvider(environment=environment, resource=resource, settings=settings, client=client,
                          state=state, clock=clock, api_key=api_key)


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    return build_qdrant_provider(environment=environment, resource=resource, settings=settings, state=services.state,
                                 clock=services.clock, environ=services.environ)


PROVIDES = (ProviderSpec(name="qdrant", actions={"vectors": vocabulary("vectors")}, build=_build, extra="qdrant",
                         sdk=("qdrant_client",)),)
"""The `provider:` names this package serves, for wiring (`ProviderSpec`)."""
