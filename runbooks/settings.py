"""What the core is configured with — environments, tiers, PagerDuty routes, how it polls — and the lookups that
refuse clearly when a name is not configured. Built once by the composition root (`bot.wiring`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from runbooks.errors import ConfigError, NotFound
from runbooks.models import ApprovalPolicy, Environment, Tier

__all__ = ["AlertRoute", "DrillPolicy", "EngineSettings", "PollPolicy", "Schedule"]


@dataclass(frozen=True)
class PollPolicy:
    """Capped exponential backoff for waits, in seconds. The gap between polls also never exceeds `share` of
    the time waited so far, so an operation is seen finished within max(initial, share × its duration) of
    finishing: a 10 s DNS change is noticed within ~1 s, a 40 min restore within ~20 s (bench_overhead.py)."""

    initial: float = 1.0
    factor: float = 1.6
    maximum: float = 20.0
    share: float = 0.04

    def next_delay(self, delay: float, *, waited: float) -> float:
        ceiling = min(self.maximum, max(self.initial, self.share * waited))
        return max(self.initial, min(delay * self.factor, ceiling))

    def backoff(self, delay: float) -> float:
        """The next delay of a plain capped backoff (transient retries, PagerDuty confirmations)."""
        return min(delay * self.factor, self.maximum)


@dataclass(frozen=True)
class AlertRoute:
    """Where a PagerDuty service's incidents go (drbot.yml `pagerduty.services.<id>`)."""

    service: str
    environment: str
    channel: str = ""
    tier: str | None = None
    runbooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class DrillPolicy:
    """drbot.yml `drills:`: the approval rule for drills (None: each environment's own) and how long a drill's
    resources may live before they count as leaked."""

    approvals: ApprovalPolicy | None = None
    ttl: timedelta = timedelta(hours=6)


@dataclass(frozen=True)
class Schedule:
    """drbot.yml `schedules.<name>`: a drill run on a cron expression (UTC)."""

    name: str
    cron: str
    runbook: str
    environment: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass
class EngineSettings:
    environments: Mapping[str, Environment]
    tiers: Mapping[str, Tier]
    poll: PollPolicy = field(default_factory=PollPolicy)
    budget_interval: float = 5.0
    reconcile_interval: float = 60.0
    """Seconds between looks for runs no live workflow owns (see runbooks.reconcile)."""
    alert_routes: Mapping[str, AlertRoute] = field(default_factory=dict)
    """PagerDuty service id → where its incidents go."""
    drills: DrillPolicy = field(default_factory=DrillPolicy)
    rpo_every: timedelta = timedelta(minutes=15)
    """drbot.yml `rpo.check_every`: how often the RPO monitor reads every store."""
    schedules: Mapping[str, Schedule] = field(default_factory=dict)

    def approvals(self, env: Environment, *, drill: bool) -> ApprovalPolicy:
        """The approval rule of a run in `env`: the environment's, or `drills.approvals` for a drill when set."""
        if drill and self.drills.approvals is not None:
            return self.drills.approvals
        return env.approvals

    def environment(self, name: str) -> Environment:
        env = self.environments.get(name)
        if env is None:
            known = ", ".join(sorted(self.environments))
            raise NotFound(f"There is no environment called {name!r}. Known environments: {known}.")
        return env

    def tier(self, name: str) -> Tier:
        tier = self.tiers.get(name)
        if tier is None:
            raise ConfigError(f"tier {name!r} is not defined (tiers: {', '.join(sorted(self.tiers))})")
        return tier

    def default_environment(self) -> Environment:
        """`prod` if there is one, else the first configured (an incident opened without naming one)."""
        return self.environments["prod"] if "prod" in self.environments else next(iter(self.environments.values()))
