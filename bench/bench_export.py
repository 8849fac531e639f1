"""How fast and how lean is exporting a big incident? (`python bench/bench_export.py`)

A long outage with chatty automation can log ten thousand events; the post-mortem export must still come back
in well under a second and without a memory spike on a small bot host. This script prints the figures against
the goals. It exits non-zero only if something crashes: a missed goal is information for a person, not a CI gate.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rss import peak_rss_mb  # noqa: E402

from runbooks.export import export_csv, export_json, export_markdown  # noqa: E402
from runbooks.models import (  # noqa: E402
    SEED_TIERS,
    Approval,
    ApprovalRequest,
    ChecklistItem,
    Decision,
    Event,
    Incident,
    IncidentRecord,
    IncidentStatus,
    Run,
    RunStatus,
    StepRun,
    StepStatus,
)

EVENTS = 10_000
TIME_GOAL_S = 1.0
RSS_GOAL_MB = 200.0
DETECTED = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
NOW = DETECTED + timedelta(hours=3)


def build_record(events: int = EVENTS) -> IncidentRecord:
    """An incident shaped like a real one: a few runs and approvals, a checklist, and a flood of events whose
    text has the characters exports must escape (pipes, commas, quotes, newlines)."""
    incident = Incident(
        id="INC-42", number=42, title="Database corruption | prod", severity="sev1", environment="prod",
        tier="critical", status=IncidentStatus.RESTORED, opened_by="alice", opened_at=DETECTED,
        detected_at=DETECTED, impact_start_at=DETECTED - timedelta(minutes=4),
        restored_at=DETECTED + timedelta(minutes=47),
    )
    runs = [
        Run(id=f"R-{n}", incident_id="INC-42", runbook="database-pitr", environment="prod",
            command="/dr restore database prod 09:55Z", requested_by="alice",
            requested_at=DETECTED + timedelta(minutes=5 * n), status=RunStatus.SUCCEEDED,
            plan_hash=f"{n:064x}", finished_at=DETECTED + timedelta(minutes=5 * n + 30))
        for n in range(1, 4)
    ]
    steps = [
        StepRun(run_id=run.id, step_id=f"step-{k}", title=f"Step {k}", status=StepStatus.SUCCEEDED,
                started_at=run.requested_at + timedelta(minutes=k),
                finished_at=run.requested_at + timedelta(minutes=k + 1))
        for run in runs for k in range(6)
    ]
    requests = [
        ApprovalRequest(id=f"AR-{n}", run_id=run.id, gate="plan", plan_hash=run.plan_hash, requested_by="alice",
                        requested_at=run.requested_at, expires_at=run.requested_at + timedelta(minutes=30),
                        required=1, approvers=("bob", "carol"), status="granted")
        for n, run in enumerate(runs, start=1)
    ]
    approvals = [
        Approval(request_id=request.id, actor="bob", decision=Decision.APPROVE, plan_hash=request.plan_hash,
                 at=request.requested_at + timedelta(minutes=1))
        for request in requests
    ]
    checklist = [
        ChecklistItem(incident_id="INC-42", item_id=f"item-{k}", phase=f"phase-{k // 4}", text=f"Check {k}",
                      due_at=DETECTED + timedelta(minutes=15 * k),
                      done_at=DETECTED + timedelta(minutes=10 * k) if k % 3 else None, done_by="carol")
        for k in range(12)
    ]
    timeline = [
        Event(seq=n, incident_id="INC-42", run_id=f"R-{1 + n % 3}", at=DETECTED + timedelta(seconds=n),
              actor=("alice", "bob", "drbot")[n % 3], kind="step.progress",
              text=f'poll {n}: status "creating", 42% | eta 3m\nnext poll in 10s, backoff x2',
              data={"n": n, "status": "creating", "at": DETECTED + timedelta(seconds=n)})
        for n in range(1, events + 1)
    ]
    return IncidentRecord(incident=incident, tier=SEED_TIERS["critical"], events=timeline, runs=runs, steps=steps,
                          requests=requests, approvals=approvals, checklist=checklist,
                          restore_point=DETECTED - timedelta(minutes=5))


def export_all(record: IncidentRecord) -> int:
    """All three formats, as `drbot export` would produce them one after another; returns total characters."""
    return len(export_markdown(record, now=NOW)) + len(export_json(record, now=NOW)) + len(export_csv(record))


def child() -> None:
    """Run in a fresh interpreter so that peak RSS counts this export, not the parent's earlier work; prints it."""
    export_all(build_record())
    print(f"{peak_rss_mb():.1f}")


def main() -> int:
    if sys.argv[1:] == ["--child"]:
        child()
        return 0
    record = build_record()
    timings = []
    size = 0
    for _ in range(5):
        started = time.perf_counter()
        size = export_all(record)
        timings.append(time.perf_counter() - started)
    best = min(timings)
    print(f"export 10k events md+json+csv: {best:.2f} s (goal < {TIME_GOAL_S:.0f} s), {size / 1e6:.1f} MB of text")

    # The child reports its own peak: RUSAGE_CHILDREN would carry this process's peak over the child's exec.
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"], check=True,
                          capture_output=True, text=True)
    peak_mb = float(done.stdout.strip().splitlines()[-1])
    print(f"peak RSS: {peak_mb:.0f} MB (goal < {RSS_GOAL_MB:.0f} MB), fresh process building and exporting")
    if best >= TIME_GOAL_S or peak_mb >= RSS_GOAL_MB:
        print("goal missed (reported, not failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
