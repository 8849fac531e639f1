"""Every drbot benchmark, one command: `python bench/run.py` (from any directory).

Each benchmark is a script that also runs alone and prints human-readable lines; a line of the form
`<figure>: <value> <unit> (goal < <goal> <unit>)` (`goal >` for a throughput) is a figure with its goal. This
runner runs the scripts one after another (never in parallel: they would time each other), passes their output
through, and ends with one table of every figure against its goal. Missed goals are reported, not failed: the
exit status is non-zero only when a benchmark crashed or printed no figure at all, which means the benchmark
itself is broken.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("bench_export.py", "bench_steps.py", "bench_help.py", "bench_ack.py", "bench_alerts.py",
              "bench_scale.py", "bench_takeover.py", "bench_rpo.py",
              "bench_overhead.py --quick --report-only")  # script, arguments
FIGURE = re.compile(r"^(?P<label>.+): (?P<value>-?\d+(?:\.\d+)?) ?(?P<unit>[^\s(]*) "
                    r"\(goal (?P<op>[<>]) (?P<goal>\d+(?:\.\d+)?) ?(?P<goal_unit>[^\s)]*)\)")


@dataclass(frozen=True)
class Figure:
    script: str
    label: str
    value: float
    unit: str
    goal: float
    goal_unit: str
    op: str = "<"  # `<`: lower is better (latency); `>`: higher is better (throughput)

    @property
    def verdict(self) -> str:
        if self.unit != self.goal_unit:
            return "? (units differ)"
        met = self.value < self.goal if self.op == "<" else self.value > self.goal
        return "met" if met else "MISSED"


def figures(script: str, output: str) -> list[Figure]:
    found = []
    for line in output.splitlines():
        match = FIGURE.match(line.strip())
        if match:
            found.append(Figure(script=script, label=match["label"], value=float(match["value"]),
                                unit=match["unit"], goal=float(match["goal"]), goal_unit=match["goal_unit"],
                                op=match["op"]))
    return found


def run_script(script: str) -> tuple[int, str, float]:
    """Run one benchmark with the repo on PYTHONPATH, echoing its output live; (exit code, stdout, seconds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    started = time.perf_counter()
    name, *args = script.split()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / name), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        print("  " + line, end="", flush=True)
        lines.append(line)
    code = proc.wait()
    return code, "".join(lines), time.perf_counter() - started


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def number(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def main() -> int:
    collected: list[Figure] = []
    broken: list[str] = []
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        code, output, seconds = run_script(script)
        found = figures(script.split()[0], output)
        collected.extend(found)
        print(f"   ({seconds:.1f} s, exit {code})", flush=True)
        if code != 0:
            broken.append(f"{script} crashed (exit {code}); its error is above")
        elif not found:
            broken.append(f"{script} printed no `<figure>: <value> <unit> (goal < <goal> <unit>)` line")
    print()
    rows = [["benchmark", "figure", "value", "goal", "verdict"]]
    rows += [[f.script.removesuffix(".py"), f.label, f"{number(f.value)} {f.unit}".strip(),
              f"{f.op} {number(f.goal)} {f.goal_unit}".strip(), f.verdict] for f in collected]
    print(table(rows))
    missed = sum(f.verdict != "met" for f in collected)
    print(f"\n{len(collected)} figures, {len(collected) - missed} met their goal, {missed} did not "
          "(missed goals are reported, not failed)")
    for problem in broken:
        print(f"BENCHMARK BROKEN: {problem}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
