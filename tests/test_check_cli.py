"""`drbot check` on the configurations people actually write: the DESIGN.md sketch, the shipped example, and the
example with each optional block taken out. Run as users run it: a subprocess with a cleared environment."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.shapes import DESIGN_SKETCH
from tests.shellrun import ROOT, shell_env

pytestmark = pytest.mark.slow

# DESIGN.md §6, verbatim; the test switches every provider to the sandbox so that no cloud is needed.

EXAMPLE = ROOT / "drbot.example.yml"

PITR_WARN = ("WARN prod · database-pitr: environments.prod.settings.integrity_query is not set, so step `integrity` "
             "(Check the restored data) will be skipped; set it to enable it (the SELECT the integrity step runs on "
             "the restored database, e.g. SELECT count(*) FROM documents)")
VERIFY_FAIL = ("FAIL {env} · backup-verification: needs environments.{env}.settings.integrity_query (the SELECT the "
               "integrity step runs on the restored backup (the point of the verification), "
               "e.g. SELECT count(*) FROM documents)")
REPLICAS_FAIL = ("FAIL prod · region-failover: needs environments.prod.settings.dr_replicas (how many API replicas to "
                 "run in the DR region after the failover, e.g. 3)")
STAGING_SKIP = ("SKIP staging: accidental-deletion needs objects; database-pitr, k8s-restore and region-failover need "
                "kubernetes; vectors-restore needs vectors")
PITR_ROUTED = "; pagerduty.services.PSVC1 suggests it for prod"


def check(workdir: Path, config: str) -> subprocess.CompletedProcess[str]:
    (workdir / "drbot.yml").write_text(config, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "check"], capture_output=True, text=True, cwd=workdir,
                            env=shell_env(workdir), timeout=120)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def verdicts(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The lines that ask for something (FAIL, WARN) or say what cannot run (SKIP)."""
    return {line for line in result.stdout.splitlines() if line.startswith(("FAIL", "WARN", "SKIP"))}


def test_the_design_sketch_names_every_setting_it_lacks(tmp_path: Path) -> None:
    result = check(tmp_path, re.sub(r"provider: [\w-]+", "provider: sandbox", DESIGN_SKETCH))
    assert result.returncode == 1, result.stdout + result.stderr
    assert verdicts(result) == {PITR_WARN, VERIFY_FAIL.format(env="prod"), REPLICAS_FAIL}
    out = result.stdout
    for line in ("OK   prod.database: sandbox reachable: instance rag-engine-prod in us-west-2, "
                 "replica rag-engine-prod-replica in us-east-1",
                 "OK   prod.dns: sandbox reachable: zone Z123, record api.rag-engine.com",
                 "OK   prod.kubernetes: sandbox reachable: context prod, namespace rag-engine, "
                 "deployment rag-engine-api",
                 "OK   prod.vectors: sandbox reachable: collection documents at http://qdrant:6333",
                 "OK   prod.objects: sandbox reachable: bucket rag-engine-documents",
                 "OK   prod · dns-failover: every step can run",
                 "OK   prod · replica-promotion: every step can run",
                 "OK   pagerduty.services.PSVC1: alerts open incidents in prod, thread in C0INCIDENT"):
        assert line in out.splitlines(), out
    assert "prod · database-pitr: every step can run" not in out  # a skipped step is not "every step"


def test_the_shipped_example_is_ready(tmp_path: Path) -> None:
    result = check(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result) == {STAGING_SKIP}
    lines = result.stdout.splitlines()
    for name in ("accidental-deletion", "backup-verification", "database-pitr", "dns-failover", "k8s-restore",
                 "region-failover", "replica-promotion", "vectors-restore"):
        assert f"OK   prod · {name}: every step can run" in lines
    assert "OK   prod.pagerduty: sandbox reachable: PagerDuty incidents" in lines
    assert "OK   staging · backup-verification: every step can run" in lines


def _drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path
        node = data
        for key in parents:
            node = node[key]
        del node[last]

    return edit


# (what is removed, exit code, the FAIL/WARN/SKIP lines besides staging's SKIP)
REMOVALS: list[tuple[str, Callable[[dict[str, Any]], None], int, set[str]]] = [
    # the example's monthly schedule drills backup-verification in prod: it cannot run either, said under its name
    ("prod settings", _drop("environments", "prod", "settings"), 1,
     {PITR_WARN, VERIFY_FAIL.format(env="prod"), REPLICAS_FAIL,
      "FAIL schedules.monthly-backup-verification: " + VERIFY_FAIL.format(env="prod").removeprefix("FAIL ")}),
    # staging has no Kubernetes, so region-failover (dr_replicas) is not asked for there
    ("staging settings", _drop("environments", "staging", "settings"), 1, {VERIFY_FAIL.format(env="staging")}),
    ("pagerduty", _drop("pagerduty"), 0, set()),
    ("slack", _drop("slack"), 0, set()),
    ("tiers", _drop("tiers"), 0, set()),
    # PagerDuty suggests database-pitr for prod, so prod without the database it restores is a FAIL, not a SKIP
    ("prod database", _drop("environments", "prod", "database"), 1,
     {"FAIL prod · database-pitr: needs environments.prod.database (the database, with its provider and primary "
      "instance, e.g. {provider: aws-rds, instance: rag-engine-prod, region: us-west-2})" + PITR_ROUTED,
      "SKIP prod: backup-verification, region-failover and replica-promotion need database",
      "FAIL schedules.monthly-backup-verification: prod · backup-verification: needs environments.prod.database (the "
      "database, with its provider and primary instance, e.g. {provider: aws-rds, instance: rag-engine-prod, region: "
      "us-west-2})"}),
    ("prod database replica", _drop("environments", "prod", "database", "replica"), 1,
     {f"FAIL prod · {name}: needs environments.prod.database.replica.instance (the cross-region read replica that "
      f"is checked and promoted, e.g. rag-engine-prod-replica)" for name in ("region-failover", "replica-promotion")}),
    ("prod dns", _drop("environments", "prod", "dns"), 0, {"SKIP prod: dns-failover and region-failover need dns"}),
    ("prod kubernetes", _drop("environments", "prod", "kubernetes"), 1,
     {"FAIL prod · database-pitr: needs environments.prod.kubernetes (the cluster and Deployment that run the "
      "application, e.g. {provider: kubernetes, context: prod, namespace: rag-engine, deployment: rag-engine-api})"
      + PITR_ROUTED,
      "SKIP prod: k8s-restore and region-failover need kubernetes"}),
    ("prod vectors", _drop("environments", "prod", "vectors"), 0, {"SKIP prod: vectors-restore needs vectors"}),
    ("prod objects", _drop("environments", "prod", "objects"), 0, {"SKIP prod: accidental-deletion needs objects"}),
    ("prod pagerduty", _drop("environments", "prod", "pagerduty"), 0, set()),
    ("schedules", _drop("schedules"), 0, set()),
    ("rpo", _drop("rpo"), 0, set()),
    ("drills", _drop("drills"), 0, set()),
]


@pytest.mark.parametrize(("edit", "code", "expected"), [r[1:] for r in REMOVALS], ids=[r[0] for r in REMOVALS])
def test_the_example_without_one_optional_block(tmp_path: Path, edit: Callable[[dict[str, Any]], None], code: int,
                                                expected: set[str]) -> None:
    data = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    edit(data)
    result = check(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert result.returncode == code, result.stdout + result.stderr
    assert verdicts(result) == expected | {STAGING_SKIP}, result.stdout


def test_without_pagerduty_routes_there_is_no_webhook_note(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    del data["pagerduty"]
    result = check(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert "pagerduty.services" not in result.stdout and "NOTE PAGERDUTY_WEBHOOK_SECRETS" not in result.stdout
