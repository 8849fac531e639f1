"""Readiness: whether a runbook can run in an environment, and exactly what to add to drbot.yml when it cannot.

Environments are built the way drbot.yml builds them (`bot.config.build_config`), runbooks from the shipped
catalog or from small dicts checked by the same rules the loader applies.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import SANDBOX_CONFIG, build_config
from runbooks.catalog import load_catalog, load_runbook
from runbooks.catalog_checks import check_runbook
from runbooks.errors import ConfigError
from runbooks.models import Environment, ResourceConfig, Runbook
from runbooks.readiness import Gap, action_gaps, gaps, runbook_resources, skipped_steps
from runbooks.templating import missing, render

CATALOG = load_catalog()
PROD: dict[str, Any] = copy.deepcopy(SANDBOX_CONFIG["environments"]["prod"])


def env(**changes: Any) -> Environment:
    """The sandbox config's prod environment with `changes` applied (a value of None removes the key)."""
    data = copy.deepcopy(PROD)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return build_config({"environments": {"prod": data}}, source="test").environments["prod"]


def runbook(data: dict[str, Any]) -> Runbook:
    built = Runbook.model_validate(data)
    assert check_runbook(built) == []
    return built


def variant(name: str, **changes: Any) -> dict[str, Any]:
    data = CATALOG.get(name).model_dump(mode="json")
    data.update(changes)
    return data


# --------------------------------------------------------------------------------------------- templating.missing


def test_missing_lists_each_unresolvable_path_once_in_the_order_it_appears() -> None:
    context = {"env": {"database": {"instance": "db1", "region": None}, "settings": {"q": "SELECT 1"}}}
    value = {"a": "{{ env.database.instance }}", "b": ["{{ env.dns.record }}-{{ env.database.region }}"],
             "c": ("{{ env.dns.record }}", 3, None), "d": "{{ env.settings.q }} and {{ env.settings.n }}"}
    assert missing(value, context) == ["env.dns.record", "env.database.region", "env.settings.n"]
    assert missing("no templates here", context) == []


def test_missing_counts_a_satisfied_default_as_set() -> None:
    context = {"env": {"kubernetes": {"namespace": "app", "velero_namespace": None}}}
    assert missing("{{ env.kubernetes.velero_namespace | default('velero') }}", context) == []
    assert missing("{{ env.kubernetes.velero_namespace | default(env.kubernetes.namespace) }}", context) == []
    assert missing("{{ env.kubernetes.velero_namespace | default(env.kubernetes.vns) }}", context) == [
        "env.kubernetes.velero_namespace"]
    assert missing("{{ env.kubernetes.velero_namespace | default(None) }}", context) == [
        "env.kubernetes.velero_namespace"]
    # render is unchanged: it still returns the None it finds
    assert render("{{ env.kubernetes.velero_namespace }}", context) is None


# --------------------------------------------------------------------------------------------- gaps


def test_the_sandbox_config_can_run_every_runbook_everywhere() -> None:
    config = build_config(SANDBOX_CONFIG, source="sandbox")
    for environment in config.environments.values():
        for book in CATALOG.runbooks.values():
            assert gaps(book, environment) == [], (environment.name, book.name)
            assert skipped_steps(book, environment) == {}


def test_runbook_resources_are_the_resources_its_steps_call() -> None:
    assert runbook_resources(CATALOG.get("database-pitr")) == {"database", "kubernetes"}
    assert runbook_resources(CATALOG.get("region-failover")) == {"database", "kubernetes", "dns"}
    assert runbook_resources(CATALOG.get("backup-verification")) == {"database"}


def test_a_required_setting_names_its_path_purpose_and_example() -> None:
    [gap] = gaps(CATALOG.get("region-failover"), env(settings={"integrity_query": "SELECT 1"}))
    assert gap == Gap(environment="prod", runbook="region-failover", path="environments.prod.settings.dr_replicas",
                      purpose="how many API replicas to run in the DR region after the failover", example="3",
                      optional=False, steps=("scale",), titles=("Scale the application up in the DR region",))
    assert gap.sentence() == ("prod · region-failover: needs environments.prod.settings.dr_replicas (how many API "
                              "replicas to run in the DR region after the failover, e.g. 3)")


def test_an_absent_optional_setting_skips_the_steps_that_read_it() -> None:
    pitr = CATALOG.get("database-pitr")
    [gap] = gaps(pitr, env(settings=None))
    assert gap.optional and gap.steps == ("integrity",)
    sentence = ("prod · database-pitr: environments.prod.settings.integrity_query is not set, so step `integrity` "
                "(Check the restored data) will be skipped; set it to enable it (the SELECT the integrity step runs "
                "on the restored database, e.g. SELECT count(*) FROM documents)")
    assert gap.sentence() == sentence
    assert skipped_steps(pitr, env(settings=None)) == {"integrity": sentence}


def test_a_null_value_is_not_set() -> None:
    [gap] = gaps(CATALOG.get("backup-verification"), env(settings={"integrity_query": None}))
    assert gap.path == "environments.prod.settings.integrity_query" and not gap.optional


def test_an_optional_setting_becomes_required_when_a_step_that_runs_reads_the_skipped_steps_output() -> None:
    # backup-verification's `record` reports steps.integrity.outputs.count: skipping `integrity` would only move
    # the failure to `record`, so even declared optional the query is required.
    data = variant("backup-verification")
    data["settings"]["integrity_query"]["optional"] = True
    verification = runbook(data)
    [gap] = gaps(verification, env(settings=None))
    assert not gap.optional
    assert gap.sentence().startswith("prod · backup-verification: needs environments.prod.settings.integrity_query (")
    assert skipped_steps(verification, env(settings=None)) == {}
    # with a fallback for the count, the reader no longer needs the skipped step, so the setting stays optional
    record = data["steps"][2]
    record["params"]["text"] = "Verified ({{ steps.integrity.outputs.count | default('integrity not checked') }})"
    assert [g.optional for g in gaps(runbook(data), env(settings=None))] == [True]


def test_a_setting_read_by_two_steps_names_both() -> None:
    data = variant("database-pitr")
    data["steps"][3]["params"]["text"] = "Checked with {{ env.settings.integrity_query }}"
    [gap] = gaps(runbook(data), env(settings=None))
    assert gap.steps == ("integrity", "report")
    assert ("so steps `integrity` (Check the restored data) and `report` (Summarise the restore) will be skipped; "
            "set it to enable them") in gap.sentence()


def test_a_satisfied_default_is_not_a_gap() -> None:
    kubernetes = {k: v for k, v in PROD["kubernetes"].items() if k != "velero_namespace"}
    assert gaps(CATALOG.get("k8s-restore"), env(kubernetes=kubernetes)) == []


def test_a_missing_resource_block_is_one_gap_not_one_per_key() -> None:
    [gap] = gaps(CATALOG.get("database-pitr"), env(kubernetes=None))
    assert gap.path == "environments.prod.kubernetes" and not gap.optional and gap.steps == ("cutover",)
    assert gap.sentence() == (
        "prod · database-pitr: needs environments.prod.kubernetes (the cluster and Deployment that run the "
        "application, e.g. {provider: kubernetes, context: prod, namespace: rag-engine, deployment: rag-engine-api})")


def test_a_missing_key_names_the_nested_path() -> None:
    database = {k: v for k, v in PROD["database"].items() if k != "replica"}
    [gap] = gaps(CATALOG.get("replica-promotion"), env(database=database))
    assert gap.path == "environments.prod.database.replica.instance"
    assert gap.steps == ("check_replica", "promote")
    assert gap.example == "rag-engine-prod-replica"


def test_every_key_the_shipped_catalog_reads_has_a_purpose_and_an_example() -> None:
    blocks = set(PROD) - {"tier", "approvals", "settings"}
    bare = Environment(name="prod", resources={r: ResourceConfig(provider="sandbox") for r in blocks})
    seen = set()
    for book in CATALOG.runbooks.values():
        for gap in gaps(book, bare):
            assert gap.purpose and gap.example, gap
            seen.add(gap.path)
    assert {"environments.prod.database.instance", "environments.prod.database.replica.instance",
            "environments.prod.kubernetes.deployment", "environments.prod.kubernetes.namespace",
            "environments.prod.dns.zone_id", "environments.prod.dns.record", "environments.prod.dns.type",
            "environments.prod.dns.dr_target", "environments.prod.vectors.collection",
            "environments.prod.objects.bucket", "environments.prod.settings.integrity_query",
            "environments.prod.settings.dr_replicas"} <= seen


def test_a_key_nobody_described_gets_a_generic_purpose() -> None:
    data = variant("dns-failover")
    data["steps"][0]["params"]["ttl"] = "{{ env.dns.ttl }}"
    [gap] = gaps(runbook(data), env())
    assert gap.path == "environments.prod.dns.ttl" and gap.example == ""
    assert gap.sentence() == ("prod · dns-failover: needs environments.prod.dns.ttl (the ttl of the environment's "
                              "dns, read by the runbook as {{ env.dns.ttl }})")


# --------------------------------------------------------------------------------------------- action_gaps


def test_an_action_the_configured_provider_lacks_is_named_once_with_its_steps() -> None:
    verification = CATALOG.get("backup-verification")
    actions = {"database": frozenset({"restore_latest_backup", "delete_instance"})}
    assert action_gaps(verification, env(), actions) == [
        "prod · backup-verification: step `integrity` (Check the restored data) needs database.integrity_check, "
        "which the sandbox provider of environments.prod.database does not implement "
        "(it implements: delete_instance, restore_latest_backup)"]
    failover = CATALOG.get("region-failover")
    sentences = action_gaps(failover, env(), {"dns": frozenset({"switch"}), "database": frozenset()})
    assert sentences[0].startswith("prod · region-failover: step `check_replica` (Check the DR replica is healthy "
                                   "and read its lag) needs database.check_replica")
    assert len(sentences) == 3  # check_replica, promote_replica, health_check; kubernetes is not judged


def test_a_step_that_will_be_skipped_needs_no_action() -> None:
    actions = {"database": frozenset({"restore_pitr"}), "kubernetes": frozenset({"set_env"})}
    assert action_gaps(CATALOG.get("database-pitr"), env(settings=None), actions) == []
    assert len(action_gaps(CATALOG.get("database-pitr"), env(), actions)) == 1


# --------------------------------------------------------------------------------------------- the catalog rules


SMALL: dict[str, Any] = {
    "name": "small",
    "title": "Check",
    "settings": {"q": {"help": "the SELECT to run", "example": "SELECT 1"}},
    "steps": [{"id": "check", "title": "Check", "action": "database.integrity_check",
               "params": {"instance": "{{ env.database.instance }}", "query": "{{ env.settings.q }}"}}],
}


def load(tmp_path: Path, data: dict[str, Any]) -> Runbook:
    path = tmp_path / "small.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_runbook(path)


def test_a_declared_setting_loads(tmp_path: Path) -> None:
    assert load(tmp_path, SMALL).settings["q"].example == "SELECT 1"


def test_a_setting_read_without_being_declared_is_refused_with_how_to_declare_it(tmp_path: Path) -> None:
    data = copy.deepcopy(SMALL)
    data["steps"][0]["params"]["query"] = "{{ env.settings.query }}"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data)
    message = str(info.value)
    assert ("small.yml: steps[0].params.query: {{ env.settings.query }}: env.settings.query is not declared under "
            "settings: of small (declared: q); declare what it is for and an example, settings: {query: {help: …, "
            "example: …}}, plus optional: true if the steps reading it may be skipped when it is not set") in message
    assert "small.yml: settings.q: no step reads {{ env.settings.q }}; remove the declaration or use the value" \
        in message


def test_a_fallback_path_into_settings_must_be_declared_too(tmp_path: Path) -> None:
    data = copy.deepcopy(SMALL)
    data["steps"][0]["params"]["query"] = "{{ env.settings.q | default(env.settings.fallback) }}"
    with pytest.raises(ConfigError, match=r"env\.settings\.fallback is not declared under settings: of small"):
        load(tmp_path, data)


def test_a_setting_needs_a_purpose_and_an_example(tmp_path: Path) -> None:
    data = copy.deepcopy(SMALL)
    data["settings"]["q"] = {"help": " ", "example": ""}
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data)
    assert "small.yml: settings.q.help: say what the value is for" in str(info.value)
    assert "small.yml: settings.q.example: give an example value" in str(info.value)


def test_the_shipped_catalog_declares_every_setting_it_reads() -> None:
    declared = {name: set(book.settings) for name, book in CATALOG.runbooks.items() if book.settings}
    assert declared == {"database-pitr": {"integrity_query"}, "backup-verification": {"integrity_query"},
                        "region-failover": {"dr_replicas"}}
    assert CATALOG.get("database-pitr").settings["integrity_query"].optional is True
    assert CATALOG.get("backup-verification").settings["integrity_query"].optional is False
