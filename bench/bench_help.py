"""Is `drbot --help` instant? (`python bench/bench_help.py`)

The first thing anyone types is `drbot --help`, and shell completion and wrappers run it too. It must answer in
well under a second, which it can only do if the CLI imports no engine, database or cloud SDK before a command
actually needs one (DESIGN §1). This script times whole processes, then shows what the `--help` path imports
and whether anything heavy slipped in. It exits non-zero only if something crashes: a missed goal is
information for a person, not a CI gate.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 10
GOAL_S = 1.0
HEAVY = ("dbos", "sqlalchemy", "boto3", "botocore", "slack_bolt", "slack_sdk", "googleapiclient", "azure",
         "kubernetes", "qdrant_client")


def environment() -> dict[str, str]:
    """The repo on the path and no drbot settings, so a developer's own drbot.yml or database is not read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def wall_times(command: list[str], *, runs: int = RUNS) -> list[float]:
    """Wall seconds of each run, after one untimed warm-up so the file cache is not what is measured."""
    times = []
    for n in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=environment(), check=True, stdout=subprocess.DEVNULL)
        if n:
            times.append(time.perf_counter() - started)
    return times


def report_times(label: str, command: list[str]) -> None:
    times = wall_times(command)
    print(f"{label}: min {min(times):.3f} s, max {max(times):.3f} s over {len(times)} runs")
    print(f"{label} median: {statistics.median(times):.3f} s (goal < {GOAL_S:.0f} s)")


def import_times(command: list[str]) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, module) for every import `python -X importtime` reports on the command."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=ROOT, env=environment(), check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        rows.append((int(own), int(cumulative), name.strip()))
    return rows


def report_imports() -> None:
    """Interpreter start-up (`site` and whatever .pth files pull in) is no part of drbot and no CLI code can
    avoid it, so it is shown apart from what the command itself imports."""
    rows = import_times(["-m", "bot.cli", "--help"])
    after_site = next((i + 1 for i, row in enumerate(rows) if row[2] == "site"), 0)
    startup, own = rows[:after_site], rows[after_site:]
    print(f"`python -m bot.cli --help` imports {len(own)} modules after interpreter start-up "
          f"({sum(r[0] for r in startup) / 1000:.0f} ms of start-up imports); the 5 slowest, cumulative:")
    for _, cumulative, name in sorted(own, reverse=True, key=lambda r: r[1])[:5]:
        print(f"  {cumulative / 1000:7.1f} ms  {name}")
    heavy = sorted({name.split(".")[0] for _, _, name in rows}.intersection(HEAVY))
    print(f"heavy packages imported by --help: {len(heavy)} (goal < 1) — "
          + (", ".join(heavy) if heavy else "none of " + ", ".join(HEAVY)))


def main() -> int:
    report_times("python -m bot.cli --help", [sys.executable, "-m", "bot.cli", "--help"])
    installed = shutil.which("drbot")
    if installed:
        report_times("drbot --help (console script)", [installed, "--help"])
    else:
        print("drbot --help (console script): not installed here (`pip install -e .` puts it on PATH); skipped")
    report_imports()
    return 0


if __name__ == "__main__":
    sys.exit(main())
