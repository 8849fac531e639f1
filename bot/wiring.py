"""Composition root: the one place that knows every room. Builds the store, the catalog, the providers and the
engine from the configuration, and hands the engine to a surface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import DrbotConfig, Settings, load_config, resolve_config_path
from runbooks.alerts import AlertRoute
from runbooks.catalog import Catalog, load_catalog
from runbooks.engine import Engine, EngineSettings, PollPolicy
from runbooks.errors import ConfigError
from runbooks.ports import Clock, Notifier, Provider, StateStore, SystemClock
from runbooks.store import Store

if TYPE_CHECKING:
    from bot.pagerduty import PagerDutyWebhook


def dbos_url(database_url: str) -> str:
    """Where DBOS keeps its checkpoints: PostgreSQL shares drbot's database (DBOS uses its own schema); a SQLite
    file gets a sibling (`drbot.db` → `drbot.dbos.db`) because SQLite allows one writer at a time."""
    if not database_url.startswith("sqlite"):
        return database_url
    prefix, _, path = database_url.partition(":///")
    if not path or path == ":memory:":
        raise ConfigError("DRBOT_DATABASE_URL must name a file for SQLite (durable runs need one), "
                          "e.g. sqlite:///drbot.db")
    p = Path(path)
    return f"{prefix}:///{p.with_name(p.stem + '.dbos' + (p.suffix or '.db'))}"


class ProviderRegistry:
    """Builds (and caches) the provider of each environment resource from its `provider:` name."""

    def __init__(self, *, state: StateStore, clock: Clock, speed: float, settings: Settings | None = None) -> None:
        self.state = state
        self.clock = clock
        self.speed = speed
        self.settings = settings
        self._cache: dict[tuple[str, str], Provider] = {}

    def __call__(self, *, environment: str, resource: str, config: Mapping[str, Any]) -> Provider:
        key = (environment, resource)
        if key not in self._cache:
            self._cache[key] = self._build(environment=environment, resource=resource, config=config)
        return self._cache[key]

    def _build(self, *, environment: str, resource: str, config: Mapping[str, Any]) -> Provider:
        settings = {k: v for k, v in config.items() if k != "provider"}
        name = str(config.get("provider", ""))
        if name == "sandbox":
            from integrations.sandbox import build_sandbox_provider

            return build_sandbox_provider(environment=environment, resource=resource, settings=settings,
                                          state=self.state, clock=self.clock, speed=self.speed)
        if name in ("aws-rds", "route53", "s3"):
            from bot.config import process_environment
            from integrations.aws import PROVIDER_NAMES, build_aws_provider

            if PROVIDER_NAMES[name] != resource:
                raise ConfigError(f"environments.{environment}.{resource}.provider: {name!r} serves "
                                  f"`{PROVIDER_NAMES[name]}`, not `{resource}`")
            return build_aws_provider(environment=environment, resource=resource, settings=settings,
                                      state=self.state, clock=self.clock, environ=process_environment())
        if name == "aws-aurora":
            from bot.config import process_environment
            from integrations.aws.aurora import AuroraProvider

            if resource != "database":
                raise ConfigError(f"environments.{environment}.{resource}.provider: 'aws-aurora' serves "
                                  f"`database`, not `{resource}`")

            return AuroraProvider(environment=environment, resource=resource, settings=settings,
                                  state=self.state, clock=self.clock, environ=process_environment())
        if name == "azure-postgres" and resource == "database":
            from bot.config import process_environment
            from integrations.azure import build_azure_provider

            return build_azure_provider(environment=environment, resource=resource, settings=settings,
                                        state=self.state, clock=self.clock, environ=process_environment())
        if name == "cloudsql" and resource == "database":
            from bot.config import process_environment
            from integrations.gcp import build_gcp_provider

            return build_gcp_provider(environment=environment, resource=resource, settings=settings,
                                      state=self.state, clock=self.clock, environ=process_environment())
        if name == "kubernetes" and resource == "kubernetes":
            from bot.config import process_environment
            from integrations.kubernetes import build_kubernetes_provider

            return build_kubernetes_provider(environment=environment, resource=resource, settings=settings,
                                             state=self.state, clock=self.clock, environ=process_environment())
        if name == "qdrant" and resource == "vectors":
            from bot.config import process_environment
            from integrations.qdrant import build_qdrant_provider

            return build_qdrant_provider(environment=environment, resource=resource, settings=settings,
                                         state=self.state, clock=self.clock, environ=process_environment())
        if name == "pagerduty" and resource == "pagerduty":
            from integrations.pagerduty import build_pagerduty_provider

            env = self.settings if self.settings is not None else Settings()
            token = env.pagerduty_api_token.get_secret_value() if env.pagerduty_api_token else None
            return build_pagerduty_provider(environment=environment, resource=resource, settings=settings,
                                            state=self.state, clock=self.clock, api_token=token,
                                            from_email=env.pagerduty_from_email, api_url=env.pagerduty_api_url)
        raise ConfigError(f"environments.{environment}.{resource}.provider: {name!r} is not available in this "
                          f"build; available: sandbox, aws-rds, aws-aurora, route53, s3, cloudsql, azure-postgres, "
                          f"kubernetes, qdrant, pagerduty")


def sandbox_poll(speed: float) -> PollPolicy:
    """Polling fast enough that a sped-up sandbox operation is followed closely."""
    maximum = min(2.0, max(0.02, 120.0 / speed))
    return PollPolicy(initial=min(0.2, maximum), factor=1.5, maximum=maximum)


def build_engine(*, settings: Settings, config: DrbotConfig | None = None, catalog: Catalog | None = None,
                 notifiers: Sequence[Notifier] = (), clock: Clock | None = None,
                 poll: PollPolicy | None = None) -> Engine:
    config = config or load_config(resolve_config_path(settings))
    store = Store(settings.drbot_database_url)
    clock = clock or SystemClock()
    registry = ProviderRegistry(state=store, clock=clock, speed=settings.drbot_sandbox_speed, settings=settings)
    all_sandbox = all(r.provider == "sandbox" for e in config.environments.values() for r in e.resources.values())
    if poll is None:
        poll = sandbox_poll(settings.drbot_sandbox_speed) if all_sandbox else PollPolicy()
    return Engine(store=store, catalog=catalog or load_catalog(),
                  settings=EngineSettings(environments=config.environments, tiers=config.tiers, poll=poll,
                                          alert_routes=alert_routes(config)),
                  providers=registry, clock=clock, notifiers=notifiers)


def alert_routes(config: DrbotConfig) -> dict[str, AlertRoute]:
    return {sid: AlertRoute(service=sid, environment=svc.environment,
                            channel=svc.channel or str(config.slack.get("incident_channel") or ""), tier=svc.tier,
                            runbooks=tuple(svc.runbooks))
            for sid, svc in config.pagerduty_services.items()}


def pagerduty_webhook(engine: Engine, settings: Settings) -> PagerDutyWebhook | None:
    """The webhook route's handler, or None when PAGERDUTY_WEBHOOK_SECRETS is not set (the route says so)."""
    from bot.pagerduty import PagerDutyWebhook, secrets_from

    raw = settings.pagerduty_webhook_secrets.get_secret_value() if settings.pagerduty_webhook_secrets else ""
    secrets = secrets_from(raw)
    return PagerDutyWebhook(engine=engine, secrets=secrets) if secrets else None


def start_engine(engine: Engine, *, settings: Settings, budget_ticker: bool = True) -> None:
    engine.start(system_database_url=dbos_url(settings.drbot_database_url), budget_ticker=budget_ticker)
    from bot.logs import mask_library_handlers

    mask_library_handlers()
