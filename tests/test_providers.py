"""Providers plug in by declaration: each integrations package states its `provider:` names (`PROVIDES`), and wiring
builds, refuses and lists providers from those declarations alone."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

import integrations
from bot.config import Settings
from bot.wiring import ProviderRegistry, declared_providers
from runbooks.errors import ConfigError
from runbooks.ports import ProviderSpec
from tests.doubles.clock import FakeClock
from tests.test_sandbox import MemoryState

PACKAGES = sorted(m.name for m in pkgutil.iter_modules(integrations.__path__) if m.ispkg)
EXTRAS = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
# Enough drbot.yml for any provider's constructor; nothing here is contacted.
SETTINGS = {"instance": "rag-engine-prod", "region": "us-west-2", "project": "p", "subscription": "s",
            "resource_group": "rg", "server": "rag-engine-prod", "cluster": "rag-engine-prod", "zone_id": "Z1",
            "record": "api.example.com", "bucket": "docs", "context": "prod", "namespace": "rag",
            "deployment": "api", "url": "http://qdrant:6333", "collection": "documents"}


def registry(**kwargs: object) -> ProviderRegistry:
    return ProviderRegistry(state=MemoryState(), clock=FakeClock(), speed=1e4, settings=Settings(), **kwargs)


def test_every_integrations_package_declares_its_providers() -> None:
    assert PACKAGES == ["aws", "azure", "gcp", "kubernetes", "pagerduty", "qdrant", "sandbox"]
    for package in PACKAGES:
        declared = importlib.import_module(f"integrations.{package}").PROVIDES
        assert declared, f"integrations.{package} declares no provider"
        assert all(isinstance(spec, ProviderSpec) and spec.actions for spec in declared)


def test_wiring_lists_exactly_the_declared_names_sandbox_first() -> None:
    names = [spec.name for package in PACKAGES for spec in importlib.import_module(f"integrations.{package}").PROVIDES]
    assert sorted(declared_providers()) == sorted(names)
    assert list(declared_providers()) == ["sandbox", "aws-rds", "aws-aurora", "route53", "s3", "azure-postgres",
                                          "cloudsql", "kubernetes", "pagerduty", "qdrant"]
    with pytest.raises(ConfigError) as refused:
        registry()(environment="prod", resource="database", config={"provider": "aurora"})
    assert refused.value.message == (
        "environments.prod.database.provider: 'aurora' is not available in this build; available: "
        f"{', '.join(declared_providers())}; for database use: aws-aurora, aws-rds, azure-postgres, cloudsql, sandbox")


def test_a_provider_named_for_the_wrong_resource_says_what_it_serves_and_what_serves_the_resource() -> None:
    with pytest.raises(ConfigError) as refused:
        registry()(environment="prod", resource="dns", config={"provider": "cloudsql"})
    assert refused.value.message == ("environments.prod.dns.provider: 'cloudsql' serves `database`, not `dns`; "
                                     "for dns use: route53, sandbox")
    with pytest.raises(ConfigError, match="'qdrant' serves `vectors`, not `objects`; for objects use: s3, sandbox"):
        registry()(environment="staging", resource="objects", config={"provider": "qdrant"})


def test_a_provider_whose_sdk_is_not_installed_is_listed_and_says_which_extra_to_install() -> None:
    declared = dict(declared_providers())
    declared["aws-rds"] = dataclasses.replace(declared["aws-rds"], sdk=("drbot_absent_sdk", "drbot_absent.sub"))
    chosen = registry(declared=declared)
    with pytest.raises(ConfigError) as refused:
        chosen(environment="prod", resource="database", config={"provider": "aws-rds", **SETTINGS})
    assert refused.value.message == (
        "environments.prod.database.provider: 'aws-rds' needs drbot_absent_sdk, drbot_absent.sub, which is not "
        "installed; install drbot[aws] (pip install 'drbot[aws]')")
    with pytest.raises(ConfigError, match="available: sandbox, aws-rds, aws-aurora"):
        chosen(environment="prod", resource="database", config={"provider": "rds"})
    assert chosen(environment="prod", resource="dns", config={"provider": "route53", **SETTINGS}).kind == "route53"


def test_each_declaration_names_a_real_extra_and_an_installed_sdk() -> None:
    for spec in declared_providers().values():
        if spec.name == "sandbox":
            assert (spec.extra, spec.sdk) == ("", ())
            continue
        assert spec.extra in EXTRAS and spec.sdk, spec.name
        assert spec.missing_sdk() == (), spec.name  # the dev install has every extra


def test_declared_actions_are_what_the_built_provider_implements() -> None:
    build = registry()
    for spec in declared_providers().values():
        for resource, actions in spec.actions.items():
            provider = build(environment=spec.name, resource=resource, config={"provider": spec.name, **SETTINGS})
            assert provider.kind == spec.name or spec.name == "sandbox"
            assert provider.actions() == actions, (spec.name, resource)


def test_a_wrapped_provider_factory_is_what_every_service_of_the_engine_uses(tmp_path: Path) -> None:
    """Benchmarks and tests hand one cloud to a double by wrapping wiring's registry before the engine exists (the
    services are built with the factory, so assigning one afterwards would reach none of them)."""
    from bot.config import SANDBOX_CONFIG, Settings, build_config
    from bot.wiring import build_engine

    asked: list[str] = []

    def wrap(registry: ProviderRegistry) -> Any:
        def factory(*, environment: str, resource: str, config: Any) -> Any:
            asked.append(f"{environment}/{resource}")
            return registry(environment=environment, resource=resource, config=config)
        return factory

    engine = build_engine(settings=Settings(drbot_database_url=f"sqlite:///{tmp_path / 'drbot.db'}"),
                          config=build_config(copy.deepcopy(SANDBOX_CONFIG), source="test"), wrap_providers=wrap)
    try:
        env = engine.settings.environment("prod")
        run = engine.store.create_run(incident_id="INC-1", runbook="database-pitr", environment="prod",
                                      command="/dr restore database prod latest", requested_by="alice",
                                      requested_at=engine.clock.now(), params={})
        provider = engine.execution.ctx.provider_for(run, engine.catalog.get("database-pitr").steps[0])
        assert provider.kind == "sandbox" and asked and asked[0].startswith("prod/")
        assert engine.pagerduty.providers is engine.execution.ctx.providers
        assert "database" in env.resources
    finally:
        engine.close()
