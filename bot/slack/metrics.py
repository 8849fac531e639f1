"""Prometheus text for `/metrics`: runs by state, approvals pending, ack latency, RTO elapsed per open incident."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runbooks.engine import Engine
from runbooks.models import RunStatus
from runbooks.rpo import targets
from runbooks.timeline import budget

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0)


class Metrics:
    webhooks: dict[str, int] | None = None
    """PagerDuty webhook outcomes (the webhook handler's own counter), when webhooks are served."""

    standing: Any = None
    """`bot.leader.Standing` on `drbot serve`'s front: `drbot_leader`, `drbot_takeovers_total`,
    `drbot_jobs_pending`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    @contextmanager
    def timed_ack(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(kind, time.perf_counter() - started)

    def observe(self, kind: str, seconds: float) -> None:
        with self._lock:
            counts = self._counts.setdefault(kind, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[kind] = self._sums.get(kind, 0.0) + seconds

    def render(self) -> str:
        store = self.engine.queries
        lines = ["# HELP drbot_runs Runbook runs by state.", "# TYPE drbot_runs gauge"]
        by_state = {s.value: 0 for s in RunStatus}
        for incident in store.list_incidents():
            for run in store.runs_for(incident_id=incident.id):
                by_state[run.status.value] += 1
        lines += [f'drbot_runs{{state="{state}"}} {n}' for state, n in by_state.items()]
        lines += ["# HELP drbot_approvals_pending Approval requests waiting for a person.",
                  "# TYPE drbot_approvals_pending gauge", f"drbot_approvals_pending {len(store.pending_requests())}"]
        lines += ["# HELP drbot_rto_elapsed_seconds RTO clock per open incident.",
                  "# TYPE drbot_rto_elapsed_seconds gauge"]
        now = self.engine.clock.now()
        for incident in store.list_incidents(open_only=True):
            b = budget(incident=incident, tier=self.engine.tier(incident.tier), now=now)
            lines.append(f'drbot_rto_elapsed_seconds{{incident="{incident.id}",environment="{incident.environment}"}} '
                         f"{b.elapsed.total_seconds():.0f}")
            lines.append(f'drbot_rto_budget_percent{{incident="{incident.id}"}} {b.percent:.1f}')
        lines += ["# HELP drbot_ack_seconds Time to acknowledge a Slack request.", "# TYPE drbot_ack_seconds histogram"]
        with self._lock:
            for kind, counts in sorted(self._counts.items()):
                for bound, n in zip(BUCKETS, counts, strict=False):
                    lines.append(f'drbot_ack_seconds_bucket{{kind="{kind}",le="{bound}"}} {n}')
                lines.append(f'drbot_ack_seconds_bucket{{kind="{kind}",le="+Inf"}} {counts[-1]}')
                lines.append(f'drbot_ack_seconds_sum{{kind="{kind}"}} {self._sums[kind]:.6f}')
                lines.append(f'drbot_ack_seconds_count{{kind="{kind}"}} {counts[-1]}')
        if self.webhooks is not None:
            lines += ["# HELP drbot_pagerduty_webhooks_total PagerDuty webhooks by outcome (created, updated, "
                      "duplicate, parked, ignored, forged, malformed).",
                      "# TYPE drbot_pagerduty_webhooks_total counter"]
            lines += [f'drbot_pagerduty_webhooks_total{{outcome="{k}"}} {n}' for k, n in sorted(self.webhooks.items())]
        lines += ["# HELP drbot_rpo_target_seconds RPO target of each configured store (its tier's, or its own rpo:).",
                  "# TYPE drbot_rpo_target_seconds gauge"]
        lines += [f'drbot_rpo_target_seconds{{environment="{t.environment}",store="{t.resource}"}} '
                  f"{t.rpo.total_seconds():.0f}" for t in targets(self.engine.settings)]
        kept = self.engine.rpo.kept()
        lines += ["# HELP drbot_recovery_point_age_seconds Age of each store's newest recovery point at the last RPO "
                  "scan (absent: never read, or it has none).", "# TYPE drbot_recovery_point_age_seconds gauge"]
        lines += [f'drbot_recovery_point_age_seconds{{environment="{r.target.environment}",'
                  f'store="{r.target.resource}"}} {r.age.total_seconds():.0f}' for r in kept if r.age is not None]
        failures = self.engine.rpo.failures()
        lines += ["# HELP drbot_backup_failures_total Failed backups seen by the RPO monitor (each counted once).",
                  "# TYPE drbot_backup_failures_total counter"]
        lines += [f'drbot_backup_failures_total{{environment="{t.environment}",store="{t.resource}"}} '
                  f"{failures.get(t.key, 0)}" for t in targets(self.engine.settings)]
        drilled = [r for r in self.engine.recovery_times.rows() if r.last_drill is not None]
        lines += ["# HELP drbot_last_drill_rto_seconds Measured recovery time of the last drill of each scenario.",
                  "# TYPE drbot_last_drill_rto_seconds gauge"]
        lines += [f'drbot_last_drill_rto_seconds{{environment="{r.environment}",runbook="{r.runbook}"}} '
                  f"{r.last_drill.took.total_seconds():.0f}" for r in drilled if r.last_drill is not None]
        if self.standing is not None:
            gauges = self.standing.gauges()
            lines += ["# HELP drbot_leader 1 on the replica that leads (runs the workflows), 0 on a standby.",
                      "# TYPE drbot_leader gauge", f"drbot_leader {gauges['drbot_leader']:.0f}",
                      "# HELP drbot_takeovers_total Times the leadership of this database changed hands.",
                      "# TYPE drbot_takeovers_total counter",
                      f"drbot_takeovers_total {gauges['drbot_takeovers_total']:.0f}",
                      "# HELP drbot_jobs_pending Acknowledged jobs waiting for (or being run by) the leader.",
                      "# TYPE drbot_jobs_pending gauge", f"drbot_jobs_pending {gauges['drbot_jobs_pending']:.0f}"]
        return "\n".join(lines) + "\n"
