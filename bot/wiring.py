"""Composition root: the one place that knows every room. Builds the store, the catalog, the providers and the
engine from the configuration, and hands the engine to a surface."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bot.config import DrbotConfig, Settings, load_config, resolve_config_path
from runbooks.alerts import AlertRoute
from runbooks.catalog import Catalog, load_catalog
from runbooks.engine import Engine, EngineSettings, PollPolicy
from runbooks.errors import ConfigError
from runbooks.ports import (
    Clock,
    Notifier,
    Provider,
    ProviderFactory,
    ProviderServices,
    ProviderSpec,
    StateStore,
    SystemClock,
)
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


@functools.cache
def declared_providers() -> dict[str, ProviderSpec]:
    """Every provider the integrations packages declare (`PROVIDES`), by `provider:` name: the sandbox first, then
    the packages by name. A new package is found here without editing this module."""
    import integrations

    packages = sorted((m.name for m in pkgutil.iter_modules(integrations.__path__) if m.ispkg),
                      key=lambda name: (name != "sandbox", name))
    found: dict[str, ProviderSpec] = {}
    for package in packages:
        for spec in getattr(importlib.import_module(f"integrations.{package}"), "PROVIDES", ()):
            if spec.name in found:  # a programming error in the packages, not a user mistake
                raise TypeError(f"provider {spec.name!r} is declared twice (integrations.{package})")
            found[spec.name] = spec
    return found


class ProviderRegistry:
    """Builds (and caches) the provider of each environment resource from its `provider:` name, through the
    factories the integrations packages declare (`declared_providers`)."""

    def __init__(self, *, state: StateStore, clock: Clock, speed: float, settings: Settings | None = None,
                 declared: Mapping[str, ProviderSpec] | None = None) -> None:
        self.state = state
        self.clock = clock
        self.speed = speed
        self.settings = settings
        self.declared = declared if declared is not None else declared_providers()
        self._cache: dict[tuple[str, str], Provider] = {}

    def __call__(self, *, environment: str, resource: str, config: Mapping[str, Any]) -> Provider:
        key = (environment, resource)
        if key not in self._cache:
            self._cache[key] = self._build(environment=environment, resource=resource, config=config)
        return self._cache[key]

    def _build(self, *, environment: str, resource: str, config: Mapping[str, Any]) -> Provider:
        settings = {k: v for k, v in config.items() if k != "provider"}
        spec = self.spec(environment=environment, resource=resource, name=str(config.get("provider", "")))
        return spec.build(environment=environment, resource=resource, settings=settings, services=self._services())

    def spec(self, *, environment: str, resource: str, name: str) -> ProviderSpec:
        """The declaration `name` selects for `resource`, or a ConfigError that says what to write instead."""
        where = f"environments.{environment}.{resource}.provider"
        serving = sorted(s.name for s in self.declared.values() if resource in s.actions)
        use = (f"for {resource} use: {', '.join(serving)}" if serving
               else f"no provider serves `{resource}`")
        spec = self.declared.get(name)
        if spec is None:
            raise ConfigError(f"{where}: {name!r} is not available in this build; available: "
                              f"{', '.join(self.declared)}; {use}")
        if resource not in spec.actions:
            raise ConfigError(f"{where}: {name!r} serves {', '.join(f'`{r}`' for r in spec.serves)}, not "
                              f"`{resource}`; {use}")
        missing = spec.missing_sdk()
        if missing:
            raise ConfigError(f"{where}: {name!r} needs {', '.join(missing)}, which is not installed; install "
                              f"drbot[{spec.extra}] (pip install 'drbot[{spec.extra}]')")
        return spec

    def _services(self) -> ProviderServices:
        from bot.config import process_environment

        env = self.settings if self.settings is not None else Settings()
        credentials = {name: value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                       for name, value in env if value is not None and value != ""}
        return ProviderServices(state=self.state, clock=self.clock, speed=self.speed,
                                environ=process_environment(), credentials=credentials)


def sandbox_poll(speed: float) -> PollPolicy:
    """Polling fast enough that a sped-up sandbox operation is followed closely."""
    maximum = min(2.0, max(0.02, 120.0 / speed))
    return PollPolicy(initial=min(0.2, maximum), factor=1.5, maximum=maximum)


def open_store(settings: Settings) -> Store:
    """drbot's database at DRBOT_DATABASE_URL, for the CLI's commands that need no engine (`drbot check`, `drbot
    audit verify`): surfaces never build the store themselves."""
    return Store(settings.drbot_database_url)


def build_engine(*, settings: Settings, config: DrbotConfig | None = None, catalog: Catalog | None = None,
                 notifiers: Sequence[Notifier] = (), clock: Clock | None = None,
                 poll: PollPolicy | None = None,
                 wrap_providers: Callable[[ProviderRegistry], ProviderFactory] | None = None) -> Engine:
    """The engine `drbot` runs. `wrap_providers`: a factory around wiring's registry (benchmarks and tests that
    hand one cloud to a double); the engine's services are built with it, so it cannot be swapped afterwards."""
    config = config or load_config(resolve_config_path(settings))
    store = open_store(settings)
    clock = clock or SystemClock()
    registry = ProviderRegistry(state=store, clock=clock, speed=settings.drbot_sandbox_speed, settings=settings)
    providers: ProviderFactory = wrap_providers(registry) if wrap_providers is not None else registry
    all_sandbox = all(r.provider == "sandbox" for e in config.environments.values() for r in e.resources.values())
    if poll is None:
        poll = sandbox_poll(settings.drbot_sandbox_speed) if all_sandbox else PollPolicy()
    return Engine(store=store, catalog=catalog or load_catalog(),
                  settings=EngineSettings(environments=config.environments, tiers=config.tiers, poll=poll,
                                          alert_routes=alert_routes(config), drills=config.drills,
                                          rpo_every=config.rpo_every, schedules=config.schedules),
                  providers=providers, clock=clock, notifiers=notifiers)


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
