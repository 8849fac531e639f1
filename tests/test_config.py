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
