"""The packaging a user copies as-is: manifest.yml must be a manifest Slack accepts, asking only for what drbot
uses; the Dockerfile must run `drbot serve` as a non-root user with a health check. Both are checked offline,
against Slack's published manifest schema vendored in tests/data (CI runs on a fresh clone)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped,unused-ignore]
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "data" / "slack-manifest-schema"
# Where manifest.schema.json's `$ref`s point; served from the vendored copies, never fetched.
REMOTE = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/schemas/"
VERSIONS = {1: "manifest.schema.1.0.0.json", 2: "manifest.schema.2.0.0.json"}
EVENTS_URL = "https://drbot.example.com/slack/events"
# The scopes drbot's code needs; adding one is a decision, so it changes this test too.
SCOPES = {"commands", "chat:write", "app_mentions:read", "files:write", "usergroups:read", "channels:history",
          "groups:history"}
# The scope each subscribed bot event requires (Slack refuses the manifest otherwise).
EVENT_SCOPES = {"app_mention": "app_mentions:read"}


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


def _registry() -> Registry[Any]:
    return Registry().with_resources(
        (REMOTE + name, DRAFT7.create_resource(_schema(name))) for name in VERSIONS.values())


def _manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "manifest.yml").read_text())
    return loaded


def _errors(manifest: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(schema, registry=_registry())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(manifest)]


def test_manifest_is_valid_for_the_schema_version_it_declares() -> None:
    manifest = _manifest()
    major = manifest["_metadata"]["major_version"]
    assert major in VERSIONS, f"_metadata.major_version must be one of {sorted(VERSIONS)}, got {major!r}"
    assert _errors(manifest, _schema(VERSIONS[major])) == []
    assert _errors(manifest, _schema("manifest.schema.json")) == []  # Slack's dispatcher agrees on the version


def test_schema_check_catches_a_broken_manifest() -> None:
    """Proof that the validation above can fail: the refs resolved and the rules applied."""
    manifest = _manifest()
    del manifest["settings"]["interactivity"]["is_enabled"]
    manifest["features"]["slash_commands"][0]["command"] = "dr"
    schema = _schema(VERSIONS[manifest["_metadata"]["major_version"]])
    errors = _errors(manifest, schema)
    assert any("'is_enabled' is a required property" in e for e in errors)
    assert any(e.startswith("features/slash_commands/0/command") for e in errors)
    error = best_match(Draft7Validator(_schema("manifest.schema.json"), registry=_registry()).iter_errors(manifest))
    assert error is not None


def test_schema_refs_never_reach_the_network() -> None:
    with pytest.raises(Unresolvable):
        _registry().resolver().lookup("https://example.invalid/other.schema.json")


def test_slash_command_is_dr_and_every_request_url_is_the_events_endpoint() -> None:
    manifest = _manifest()
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/dr" and command["should_escape"] is False
    assert command["description"] and "restore database" in command["usage_hint"]
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert {command["url"], settings["interactivity"]["request_url"],
            settings["event_subscriptions"]["request_url"]} == {EVENTS_URL}
    assert (settings["socket_mode_enabled"], settings["org_deploy_enabled"], settings["token_rotation_enabled"]) \
        == (True, False, False)


def test_scopes_are_exactly_what_drbot_uses_and_each_says_why() -> None:
    manifest = _manifest()
    bot_scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert set(bot_scopes) == SCOPES and len(bot_scopes) == len(SCOPES)
    assert "user" not in manifest["oauth_config"]["scopes"], "drbot acts as its bot user only"
    raw = (ROOT / "manifest.yml").read_text()
    reason = r"^[ \t]*-[ \t]*{scope}[ \t]+#[ \t]*\S"
    missing = [s for s in bot_scopes if not re.search(reason.format(scope=re.escape(s)), raw, re.MULTILINE)]
    assert missing == [], f"give each scope its reason as a comment on its line (`- scope  # why`): {missing}"
    for event in manifest["settings"]["event_subscriptions"]["bot_events"]:
        assert EVENT_SCOPES.get(event) in bot_scopes, f"bot event {event} needs its scope in oauth_config"


# ============================================================================================ Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_dockerfile_runs_drbot_serve_as_non_root_with_a_healthcheck() -> None:
    steps = _instructions()
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]  # the stage that ships
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "http://127.0.0.1:3000/healthz" in health and " CMD " in f" {health}"
    (cmd,) = [rest for word, rest in final if word == "CMD"]
    assert json.loads(cmd) == ["drbot", "serve", "--host", "0.0.0.0", "--port", "3000"]
    assert ("EXPOSE", "3000") in final
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "DRBOT_DATABASE_URL=sqlite:////data/drbot.db" in shlex.split(env)


def test_dockerfile_installs_every_runtime_extra_and_never_dev() -> None:
    installs = [rest for word, rest in _instructions() if word == "RUN" and "pip install" in rest]
    extras = re.findall(r"\.\[([a-z0-9,]+)\]", " ".join(installs))
    assert extras and set(extras[0].split(",")) == {"slack", "aws", "gcp", "azure", "k8s", "qdrant", "pagerduty",
                                                    "postgres"}
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "*.db", ".env"} <= set(ignored), "keep the repo, tests, databases and secrets out"
