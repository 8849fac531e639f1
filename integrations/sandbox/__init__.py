"""Simulated providers — the embedded default, so `drbot shell` behaves like the real clouds offline.

Each class implements `runbooks.ports.Provider` for one resource kind with the provider's own status words and
real-world durations divided by `speed`; all simulated state lives in the `StateStore` (see `world.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.common import vocabulary
from integrations.sandbox.database import SandboxDatabase, create_count
from integrations.sandbox.dns import SandboxDns
from integrations.sandbox.kubernetes import SandboxKubernetes
from integrations.sandbox.objects import SandboxObjects
from integrations.sandbox.pagerduty import SandboxPagerDuty
from integrations.sandbox.vectors import SandboxVectors
from integrations.sandbox.world import SandboxProvider
from runbooks.errors import ConfigError
from runbooks.ports import Clock, Provider, ProviderServices, ProviderSpec, StateStore

PROVIDERS: dict[str, type[SandboxProvider]] = {
    "database": SandboxDatabase,
    "kubernetes": SandboxKubernetes,
    "dns": SandboxDns,
    "vectors": SandboxVectors,
    "objects": SandboxObjects,
    "pagerduty": SandboxPagerDuty,
}

__all__ = ["PROVIDERS", "PROVIDES", "SandboxDatabase", "SandboxDns", "SandboxKubernetes", "SandboxObjects",
           "SandboxPagerDuty", "SandboxProvider", "SandboxVectors", "build_sandbox_provider", "create_count"]


def build_sandbox_provider(*, environment: str, resource: str, settings: Mapping[str, Any], state: StateStore,
                           clock: Clock, speed: float) -> Provider:
    """Pick the simulated twin by resource name, so wiring needs no per-resource knowledge of the sandbox."""
    cls = PROVIDERS.get(resource)
    if cls is None:
        raise ConfigError(f"environments.{environment}.{resource}: the sandbox has no `{resource}` resource; "
                          f"use one of {', '.join(sorted(PROVIDERS))}.")
    return cls(environment=environment, resource=resource, settings=settings, state=state, clock=clock,
               speed=speed)


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    return build_sandbox_provider(environment=environment, resource=resource, settings=settings,
                                  state=services.state, clock=services.clock, speed=services.speed)


PROVIDES = (ProviderSpec(name="sandbox", actions={resource: vocabulary(resource) for resource in PROVIDERS},
                         build=_build),)
"""`provider: sandbox` serves every resource kind; it needs no SDK."""
