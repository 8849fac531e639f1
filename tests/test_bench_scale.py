"""`bench/bench_scale.py --quick` runs as `bench/run.py` runs it (a process of its own) and prints every figure
with its goal: a benchmark that crashes or loses a figure is broken, whatever the numbers say."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("emit cost per event, event 200 vs 20", "emit cost per event, event 1,000 vs 20",
           "checklist tick cost, event 1,000 vs 20", "incident detected cost, event 1,000 vs 20",
           *(f"export 2,000 events {fmt}{what}" for fmt in ("md", "json", "csv") for what in ("", " peak RSS")),
           *(f"{what} with 20 open incidents {stat}" for what in ("/dr status", "Slack notifier per event")
             for stat in ("p50", "max")))


def test_quick_run_prints_every_figure_with_its_goal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_runner", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, runner)  # its dataclass looks itself up there
    spec.loader.exec_module(runner)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scale.py"), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = runner.figures("bench_scale.py", done.stdout)
    assert [f.label for f in found] == list(FIGURES), done.stdout
    assert all(f.unit == f.goal_unit for f in found), done.stdout
