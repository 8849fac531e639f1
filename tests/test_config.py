"""drbot.yml and environment variables: typed, refused with the file and key, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import SANDBOX_CONFIG, Settings, build_config, load_config
from runbooks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads_and_matches_the_sandbox_shape() -> None:
    config = load_config(ROOT / "drbot.example.yml")
    prod = config.environments["prod"]
    assert prod.tier == "critical" and prod.approvals.required == 1
    assert prod.approvals.approvers == ("U0BOB", "S0SRE")
    assert prod.resources["database"].settings()["instance"] == "rag-engine-prod"
    assert config.pagerduty_services["PSVC1"].environment == "prod"
    assert config.tiers["critical"].rto.total_seconds() == 3600


def test_builtin_sandbox_config() -> None:
    config = load_config(None)
    assert set(config.environments) == {"prod", "staging"}
    assert config.environments["prod"].approvals.approvers == ("alice", "bob", "carol")
    assert config.environments["staging"].approvals.required == 0
    assert all(r.provider == "sandbox" for e in config.environments.values() for r in e.resources.values())
    assert SANDBOX_CONFIG["environments"]["prod"]["tier"] == "critical"


@pytest.mark.parametrize(("data", "message"), [
    ({"environments": {"prod": {"databse": {"provider": "sandbox"}}}}, "t.yml: environments.prod.databse: unknown key"),
    ({"environments": {"prod": {"approvals": {"required": 9, "approvers": ["a"]}}}},
     "t.yml: environments.prod.approvals.required"),
    ({"environments": {"prod": {"approvals": {"required": 1, "approvers": ["a"], "expire_after": "soon"}}}},
     "not a duration: 'soon'"),
    ({"envs": {}}, "t.yml: envs"),
    ({"environments": {"prod": {"tier": "gold"}}}, "unknown tier 'gold'"),
])
def test_bad_config_names_file_and_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, source="t.yml")
    assert message in info.value.message


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("environments: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("PAGERDUTY_API_TOKEN", "pd-very-secret")
    settings = Settings()
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "xoxb-very-secret"
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "very-secret" not in shown


def test_a_database_named_as_server_or_cluster_is_also_its_instance() -> None:
    """The catalog's runbooks read `env.database.instance`; Azure names a server, Aurora a cluster."""
    data = {"environments": {
        "az": {"database": {"provider": "azure-postgres", "subscription": "s", "resource_group": "rg",
                            "server": "pg-prod"}},
        "aurora": {"database": {"provider": "aws-aurora", "cluster": "rag-prod", "region": "us-west-2"}},
        "both": {"database": {"provider": "aws-aurora", "cluster": "c1", "instance": "i1"}}}}
    config = build_config(data, source="test")
    assert config.environments["az"].resources["database"].settings()["instance"] == "pg-prod"
    assert config.environments["aurora"].resources["database"].settings()["instance"] == "rag-prod"
    assert config.environments["both"].resources["database"].settings()["instance"] == "i1"


def test_pagerduty_services_must_route_to_known_environments_and_tiers() -> None:
    base = {"environments": {"prod": {"tier": "critical"}}}
    with pytest.raises(ConfigError, match=r"pagerduty\.services\.PSVC1\.environment: unknown environment 'prd'"):
        build_config({**base, "pagerduty": {"services": {"PSVC1": {"environment": "prd"}}}}, source="f.yml")
    with pytest.raises(ConfigError, match=r"pagerduty\.services\.PSVC1\.tier: unknown tier 'gold'"):
        build_config({**base, "pagerduty": {"services": {"PSVC1": {"environment": "prod", "tier": "gold"}}}},
                     source="f.yml")
