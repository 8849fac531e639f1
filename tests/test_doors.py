"""The one-way doors: the domain imports no surface, no cloud SDK and no web framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("slack_bolt", "slack_sdk", "boto3", "botocore", "googleapiclient", "google.cloud", "azure",
             "kubernetes", "qdrant_client", "pagerduty", "starlette", "fastapi", "uvicorn", "bot", "integrations")

PROBE = """
import json, pkgutil, importlib, sys
import runbooks
for mod in pkgutil.walk_packages(runbooks.__path__, "runbooks."):
    importlib.import_module(mod.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_every_runbooks_module_loads_no_surface_or_sdk() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(out.stdout)
    assert "runbooks.engine" in loaded and "runbooks.workflows" in loaded, "the probe imported the whole domain"
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []


def test_help_path_imports_no_sdk_and_no_engine() -> None:
    probe = "import json, sys\nfrom bot import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n" \
            "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(out.stdout.splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in {"dbos", "sqlalchemy", "boto3", "pydantic", "slack_bolt"}]
    assert heavy == []
