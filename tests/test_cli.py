"""`drbot export | check | serve | --help` as users run them: subprocesses with a cleared environment."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doubles.fake_qdrant import FakeQdrant
from tests.shellrun import run_shell, shell_env

pytestmark = pytest.mark.slow


def drbot(workdir: Path, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, cwd=workdir,
                          env=shell_env(workdir, extra=extra), timeout=120)


@pytest.fixture(scope="module")
def incident_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("exported")
    session = run_shell(workdir, "/dr restore database staging -30m\n:wait 60\n/dr incident resolve done\n")
    assert "INC-1 resolved." in session.output, session.output + session.stderr
    return workdir


def test_export_formats_to_file_and_stdout(incident_dir: Path) -> None:
    md = drbot(incident_dir, "export", "INC-1", "--format", "md")
    assert md.returncode == 0 and md.stdout.startswith("# INC-1")
    assert "| RTO" in md.stdout and "| RPO" in md.stdout
    out = incident_dir / "inc.json"
    js = drbot(incident_dir, "export", "latest", "--format", "json", "-o", str(out))
    assert js.returncode == 0 and "wrote" in js.stderr
    doc = json.loads(out.read_text())
    assert doc["incident"]["id"] == "INC-1" and doc["rpo"]["seconds"] is not None
    rows = list(csv.reader(io.StringIO(drbot(incident_dir, "export", "INC-1", "--format", "csv").stdout)))
    assert len(rows) == len(doc["events"]) + 1


def test_export_unknown_incident_is_refused(incident_dir: Path) -> None:
    result = drbot(incident_dir, "export", "INC-42", "--format", "md")
    assert result.returncode == 2
    assert "no incident 'INC-42'" in result.stderr and "INC-1" in result.stderr
    bad = drbot(incident_dir, "export", "INC-1", "--format", "pdf")
    assert bad.returncode == 2 and "invalid choice: 'pdf'" in bad.stderr


def test_check_reports_each_resource(tmp_path: Path) -> None:
    result = drbot(tmp_path, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK   config: built-in sandbox config" in result.stdout
    assert "OK   prod.database: sandbox" in result.stdout
    assert "OK   staging.dns: sandbox" in result.stdout


def test_check_names_a_pagerduty_route_to_an_unknown_runbook(tmp_path: Path) -> None:
    (tmp_path / "drbot.yml").write_text(
        "pagerduty:\n  services:\n    PSVC1: {channel: C0INC, environment: prod, runbooks: [database-pitr]}\n"
        "    PSVC2: {environment: prod, runbooks: [databse-pitr]}\n"
        "environments:\n  prod:\n    database: {provider: sandbox, instance: db, region: us-west-2}\n")
    result = drbot(tmp_path, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "OK   pagerduty.services.PSVC1: alerts open incidents in prod, thread in C0INC" in result.stdout
    assert ("FAIL pagerduty.services.PSVC2.runbooks: no runbook 'databse-pitr' (did you mean 'database-pitr'?)"
            in result.stdout)
    assert "NOTE PAGERDUTY_WEBHOOK_SECRETS is not set" in result.stdout


def test_check_fails_on_a_bad_config_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "drbot.yml"
    bad.write_text("environments:\n  prod:\n    tier: critical\n    approvals: {required: 1, approvers: [bob]}\n"
                   "    database: {instance: db1}\n")
    result = drbot(tmp_path, "check")
    assert result.returncode == 2
    assert "drbot.yml: environments.prod.database.provider: missing" in result.stderr
    bad.write_text("environments:\n  prod:\n    tier: gold\n")
    result = drbot(tmp_path, "check", "--config", str(bad))
    assert "environments.prod.tier: unknown tier 'gold'" in result.stderr
    bad.write_text("environments:\n  prod:\n    approvals: {required: 1}\n")
    result = drbot(tmp_path, "check")
    assert "environments.prod.approvals.approvers: required is 1 but no approvers are listed" in result.stderr


def test_check_fails_on_a_provider_that_cannot_be_built(tmp_path: Path) -> None:
    (tmp_path / "drbot.yml").write_text("environments:\n  prod:\n    database: {provider: sandbox}\n")
    result = drbot(tmp_path, "check")
    assert result.returncode == 1
    assert "FAIL prod.database:" in result.stdout and "instance" in result.stdout


def test_check_probes_each_resource_and_names_a_missing_collection(tmp_path: Path) -> None:
    with FakeQdrant() as qdrant:
        qdrant.add_collection("chunks", points_count=3)
        (tmp_path / "drbot.yml").write_text(
            "environments:\n  prod:\n    database: {provider: sandbox, instance: rag-engine-prod, region: us-west-2}\n"
            f"    vectors: {{provider: qdrant, url: '{qdrant.url}', collection: documents}}\n"
            f"  staging:\n    vectors: {{provider: qdrant, url: '{qdrant.url}', collection: chunks}}\n")
        result = drbot(tmp_path, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "OK   prod.database: sandbox reachable" in result.stdout
    assert "OK   staging.vectors: qdrant reachable" in result.stdout
    assert ("FAIL prod.vectors: Collection `documents` doesn't exist on Qdrant at "
            f"{qdrant.url} (collections: chunks); check environments.prod.vectors.collection") in result.stdout


def test_serve_without_slack_credentials_points_at_the_shell(tmp_path: Path) -> None:
    result = drbot(tmp_path, "serve")
    assert result.returncode != 0
    assert "drbot shell" in result.stderr and "SLACK_BOT_TOKEN" in result.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = drbot(tmp_path, "--help")
    assert result.returncode == 0
    for word in ("shell", "serve", "export", "check", "audit"):
        assert word in result.stdout
