"""How a cloud package (AWS, Google Cloud, Azure) builds the provider of one resource from its `PROVIDERS` table.

Why here and not in `common`: the database providers take the process environment for their integrity check
(`integrations.integrity`), which itself builds on `common`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.common import CloudProvider
from integrations.integrity import IntegrityActions
from runbooks.errors import ConfigError
from runbooks.ports import Clock, StateStore

__all__ = ["build_cloud_provider"]


def build_cloud_provider(providers: Mapping[str, type[CloudProvider]], *, cloud: str, serves: str,
                         environment: str, resource: str, settings: Mapping[str, Any],
                         state: StateStore | None = None, clock: Clock | None = None,
                         environ: Mapping[str, str] | None = None) -> CloudProvider:
    """The provider `providers` maps `resource` to; `cloud` and `serves` word the refusal when there is none
    ("AWS has no provider for `dns`; AWS serves …"). The SDK client is created from `settings` on first use."""
    cls = providers.get(resource)
    if cls is None:
        raise ConfigError(f"environments.{environment}.{resource}: {cloud} has no provider for `{resource}`; "
                          f"{serves} serves "
                          + ", ".join(f"{r} (provider: {c.kind})" for r, c in sorted(providers.items())) + ".")
    # The database provider reads its `integrity.url_env` variable from `environ` (bot.config hands it over).
    extra: dict[str, Any] = {"environ": environ} if issubclass(cls, IntegrityActions) else {}
    return cls(environment=environment, resource=resource, settings=settings, state=state, clock=clock, **extra)
