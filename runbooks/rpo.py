"""RPO compliance (issue 12, item 6), its first part: which configured resources hold data that has a recovery
point, and the RPO target each must meet (its environment's tier). The monitor that reads each store's newest
recovery point and compares its age with the target builds on this table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from runbooks.settings import EngineSettings

__all__ = ["STORES", "Target", "targets"]

STORES = ("database", "kubernetes", "vectors", "objects")
"""Resources whose data is restored from a recovery point (a backup, a snapshot, versions); DNS is not."""


@dataclass(frozen=True)
class Target:
    environment: str
    resource: str
    """The configured resource (`database`, `vectors`, …): the metric calls it `store`."""
    tier: str
    rpo: timedelta


def targets(settings: EngineSettings) -> list[Target]:
    """Every configured store with its tier's RPO target, environments and stores in configuration order."""
    found = []
    for name, environment in settings.environments.items():
        tier = settings.tier(environment.tier)
        found += [Target(environment=name, resource=store, tier=tier.name, rpo=tier.rpo)
                  for store in environment.resources if store in STORES]
    return found
