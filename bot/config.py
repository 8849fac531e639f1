"""Configuration: the ONLY module that reads environment variables and drbot.yml.

Everything is read once and typed. Secrets are `SecretStr` and never printed. Without a drbot.yml (and without
`DRBOT_CONFIG`), drbot runs on the built-in sandbox configuration so that `drbot shell` works on a fresh machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runbooks.catalog import key_path
from runbooks.drills import DEFAULT_TTL
from runbooks.errors import ConfigError
from runbooks.models import SEED_TIERS, ApprovalPolicy, Environment, ResourceConfig, Tier
from runbooks.settings import DrillPolicy, Schedule
from runbooks.timeline import parse_duration


class Settings(BaseSettings):
    """Process environment (DESIGN §5)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    drbot_config: Path | None = None
    drbot_database_url: str = "sqlite:///drbot.db"
    drbot_sandbox_speed: float = Field(default=60.0, gt=0)
    drbot_replica_id: str | None = None
    """This serving process's name in the log and /healthz (default: host name and pid)."""
    drbot_leader_poll: float = Field(default=0.25, gt=0, le=10)
    """Seconds between a standby's attempts to take the leadership (PostgreSQL replicas)."""
    drbot_leader_beat: float = Field(default=1.0, gt=0, le=10)
    """Seconds between the leader's heartbeats."""
    drbot_leader_stale: float = Field(default=5.0, gt=0, le=120)
    """Seconds without a heartbeat after which a standby ends the leader's session and takes over."""
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None
    pagerduty_webhook_secrets: SecretStr | None = None
    pagerduty_api_token: SecretStr | None = None
    pagerduty_from_email: str | None = None
    pagerduty_api_url: str | None = None


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    return value


class TierFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpo: timedelta
    rto: timedelta

    _d = field_validator("rpo", "rto", mode="before")(_duration)


class ApprovalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    required: int = Field(default=1, ge=0, le=5)
    approvers: list[str] = Field(default_factory=list)
    expire_after: timedelta = timedelta(minutes=30)

    _d = field_validator("expire_after", mode="before")(_duration)


class EnvironmentFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    tier: str = "standard"
    approvals: ApprovalsFile = Field(default_factory=lambda: ApprovalsFile(required=0))
    settings: dict[str, Any] = Field(default_factory=dict)


class PagerDutyService(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str = ""
    environment: str
    tier: str | None = None
    runbooks: list[str] = Field(default_factory=list)


class DrillsFile(BaseModel):
    """`drills:` — the approval rule for drills when it differs from the environment's, and how long a drill's
    resources may live before `drbot drills leaks` reports them."""

    model_config = ConfigDict(extra="forbid")
    approvals: ApprovalsFile | None = None
    ttl: timedelta = DEFAULT_TTL

    _d = field_validator("ttl", mode="before")(_duration)


class RpoFile(BaseModel):
    """`rpo:` — how often the RPO monitor reads every store's newest recovery point."""

    model_config = ConfigDict(extra="forbid")
    check_every: timedelta = timedelta(minutes=15)

    _d = field_validator("check_every", mode="before")(_duration)


class ScheduleFile(BaseModel):
    """`schedules.<name>:` — `cron` (five fields, UTC) and the drill it runs: `drill: <runbook> <env> [k=v …]`."""

    model_config = ConfigDict(extra="forbid")
    cron: str
    drill: str


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drills: DrillsFile = Field(default_factory=DrillsFile)
    rpo: RpoFile = Field(default_factory=RpoFile)
    schedules: dict[str, ScheduleFile] = Field(default_factory=dict)
    tiers: dict[str, TierFile] = Field(default_factory=dict)
    slack: dict[str, Any] = Field(default_factory=dict)
    pagerduty: dict[str, Any] = Field(default_factory=dict)
    environments: dict[str, EnvironmentFile]
    sandbox: dict[str, Any] = Field(default_factory=dict)


class DrbotConfig(BaseModel):
    """The typed configuration the engine and surfaces are built from."""

    source: str
    tiers: dict[str, Tier]
    environments: dict[str, Environment]
    slack: dict[str, Any] = Field(default_factory=dict)
    pagerduty_services: dict[str, PagerDutyService] = Field(default_factory=dict)
    drills: DrillPolicy = Field(default_factory=DrillPolicy)
    rpo_every: timedelta = timedelta(minutes=15)
    schedules: dict[str, Schedule] = Field(default_factory=dict)


RESOURCE_KEYS = ("database", "dns", "kubernetes", "vectors", "objects", "pagerduty")

SANDBOX_CONFIG: dict[str, Any] = {
    "tiers": {"critical": {"rpo": "15m", "rto": "1h"}, "standard": {"rpo": "1h", "rto": "4h"}},
    "pagerduty": {"services": {
        "PSANDBOX": {"channel": "C0SANDBOX", "environment": "prod", "runbooks": ["database-pitr", "region-failover"]},
        "PSTAGING": {"channel": "C0SANDBOX", "environment": "staging", "runbooks": ["database-pitr"]},
    }},
    "environments": {
        "prod": {
            "tier": "critical",
            "approvals": {"required": 1, "approvers": ["alice", "bob", "carol"], "expire_after": "30m"},
            "settings": {"integrity_query": "SELECT count(*) FROM documents", "dr_replicas": 3},
            "database": {"provider": "sandbox", "instance": "rag-engine-prod", "region": "us-west-2",
                         "replica": {"instance": "rag-engine-prod-replica", "region": "us-east-1"}},
            "dns": {"provider": "sandbox", "zone_id": "ZSANDBOX", "record": "api.rag-engine.com", "type": "A",
                    "dr_target": "203.0.113.10"},
            "kubernetes": {"provider": "sandbox", "context": "prod", "namespace": "rag-engine",
                           "deployment": "rag-engine-api", "velero_namespace": "velero", "rpo": "24h"},
            "vectors": {"provider": "sandbox", "url": "http://qdrant.sandbox:6333", "collection": "documents",
                        "rpo": "24h"},
            "objects": {"provider": "sandbox", "bucket": "rag-engine-documents"},
            "pagerduty": {"provider": "sandbox"},
        },
        "staging": {
            "tier": "standard",
            "approvals": {"required": 0},
            "settings": {"integrity_query": "SELECT count(*) FROM documents", "dr_replicas": 1},
            "database": {"provider": "sandbox", "instance": "rag-engine-staging", "region": "us-west-2",
                         "replica": {"instance": "rag-engine-staging-replica", "region": "us-east-1"}},
            "dns": {"provider": "sandbox", "zone_id": "ZSANDBOX", "record": "api.staging.rag-engine.com",
                    "type": "A", "dr_target": "203.0.113.20"},
            "kubernetes": {"provider": "sandbox", "context": "staging", "namespace": "rag-engine-staging",
                           "deployment": "rag-engine-api", "velero_namespace": "velero", "rpo": "24h"},
            "vectors": {"provider": "sandbox", "url": "http://qdrant.sandbox:6333", "collection": "documents-staging",
                        "rpo": "24h"},
            "objects": {"provider": "sandbox", "bucket": "rag-engine-documents-staging"},
            "pagerduty": {"provider": "sandbox"},
        },
    },
}


def load_config(path: Path | None) -> DrbotConfig:
    """Read drbot.yml (or the built-in sandbox config when `path` is None). Errors name the file and key."""
    if path is None:
        return build_config(SANDBOX_CONFIG, source="built-in sandbox config")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with an `environments:` key at the top")
    return build_config(data, source=str(path))


def build_config(data: dict[str, Any], *, source: str) -> DrbotConfig:
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {key_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc
    tiers = dict(SEED_TIERS)
    for name, tier in parsed.tiers.items():
        tiers[name] = Tier(name=name, rpo=tier.rpo, rto=tier.rto)
    environments: dict[str, Environment] = {}
    for name, env in parsed.environments.items():
        if env.tier not in tiers:
            raise ConfigError(f"{source}: environments.{name}.tier: unknown tier {env.tier!r} "
                              f"(known: {', '.join(sorted(tiers))})")
        resources: dict[str, ResourceConfig] = {}
        for key, value in (env.model_extra or {}).items():
            if key not in RESOURCE_KEYS:
                raise ConfigError(f"{source}: environments.{name}.{key}: unknown key "
                                  f"(resources: {', '.join(RESOURCE_KEYS)}; also tier, approvals, settings)")
            if not isinstance(value, dict) or "provider" not in value:
                raise ConfigError(f"{source}: environments.{name}.{key}.provider: missing; every resource names its "
                                  f"provider, e.g. `provider: sandbox`")
            if key == "database" and "instance" not in value:
                # Runbooks name the database `env.database.instance`; Azure calls it a server, Aurora a cluster.
                alias = value.get("server") or value.get("cluster")
                value = {**value, "instance": alias} if alias else value
            resources[key] = ResourceConfig.model_validate(value)
        policy = _policy(env.approvals, where=f"{source}: environments.{name}.approvals")
        environments[name] = Environment(name=name, tier=env.tier, approvals=policy, resources=resources,
                                         settings=env.settings)
    services: dict[str, PagerDutyService] = {}
    for sid, svc in dict(parsed.pagerduty.get("services", {})).items():
        try:
            services[sid] = PagerDutyService.model_validate(svc)
        except ValidationError as exc:
            raise ConfigError(f"{source}: pagerduty.services.{sid}: {exc.errors()[0]['msg']}") from exc
        where = f"{source}: pagerduty.services.{sid}"
        if services[sid].environment not in environments:
            raise ConfigError(f"{where}.environment: unknown environment {services[sid].environment!r} "
                              f"(known: {', '.join(sorted(environments))})")
        if services[sid].tier is not None and services[sid].tier not in tiers:
            raise ConfigError(f"{where}.tier: unknown tier {services[sid].tier!r} (known: {', '.join(sorted(tiers))})")
    drills = DrillPolicy(approvals=_policy(parsed.drills.approvals, where=f"{source}: drills.approvals")
                         if parsed.drills.approvals is not None else None, ttl=parsed.drills.ttl)
    if parsed.rpo.check_every < timedelta(minutes=1):
        raise ConfigError(f"{source}: rpo.check_every: at least 1m (the monitor runs on a minute tick); got "
                          f"{parsed.rpo.check_every}")
    schedules = {name: _schedule(name, spec, environments=environments, where=f"{source}: schedules.{name}")
                 for name, spec in parsed.schedules.items()}
    return DrbotConfig(source=source, tiers=tiers, environments=environments, slack=parsed.slack,
                       pagerduty_services=services, drills=drills, rpo_every=parsed.rpo.check_every,
                       schedules=schedules)


def _schedule(name: str, spec: ScheduleFile, *, environments: Mapping[str, Environment], where: str) -> Schedule:
    """A schedule's cron checked now and its drill read with the grammar of `/dr drill`, so a typo is refused
    when drbot starts, not at 3 a.m. on the first of the month."""
    from croniter import croniter

    from runbooks import grammar as g
    from runbooks.errors import GrammarError

    if not croniter.is_valid(spec.cron) or len(spec.cron.split()) != 5:
        raise ConfigError(f"{where}.cron: {spec.cron!r} is not a five-field cron expression (minute hour day month "
                          f"weekday, UTC), e.g. \"0 3 1 * *\" for 03:00 on the first of each month")
    try:
        command = g.parse(f"drill {spec.drill}", now=datetime.now(UTC), environments=list(environments))
    except GrammarError as exc:
        raise ConfigError(f"{where}.drill: {exc.message} (write `drill: <runbook> <env> [key=value …]`)") from None
    assert isinstance(command, g.DrillRunbook)
    return Schedule(name=name, cron=spec.cron, runbook=command.runbook, environment=command.environment,
                    params=dict(command.params))


def _policy(approvals: ApprovalsFile, *, where: str) -> ApprovalPolicy:
    policy = ApprovalPolicy(required=approvals.required, approvers=tuple(approvals.approvers),
                            expire_after=approvals.expire_after)
    if "*" in policy.approvers:
        raise ConfigError(f"{where}.approvers: `*` is not an approver; list Slack user or group IDs (plain names in "
                          f"the shell), or set required: 0")
    if policy.required > 0 and len(policy.approvers) < 1:
        raise ConfigError(f"{where}.approvers: required is {policy.required} but no approvers are listed")
    return policy


def process_environment() -> dict[str, str]:
    """The process environment, for providers whose credentials name an env variable in drbot.yml
    (`api_key_env: QDRANT_API_KEY`). Read here so that this stays the one module that reads the environment."""
    import os

    return dict(os.environ)


def resolve_config_path(settings: Settings, *, explicit: Path | None = None) -> Path | None:
    """`--config`, else `DRBOT_CONFIG`, else ./drbot.yml if present, else None (the sandbox config)."""
    if explicit is not None:
        return explicit
    if settings.drbot_config is not None:
        return settings.drbot_config
    local = Path("drbot.yml")
    return local if local.exists() else None
