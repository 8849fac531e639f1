"""The DR guide's "Recovery Time Estimates" table, measured instead of typed: for every recovery scenario
(runbook) in every environment where it can run, the RTO target of the environment's tier, the last drill and the
last real incident with their measured recovery times, p50/p90 of the last 10 successful runs, and whether the
scenario is tested at all.

A run's recovery time is `runbooks.outlook.recovery_time` (request → end of a successful run). A drill is a run
asked for with `/dr drill …` (its command says so); anything else is a real incident. A scenario with no drill
is "not tested"; one whose last drill is older than `STALE_AFTER` is "stale".

`/dr rto` shows the table in the chat; `drbot rto [--format md|json|csv]` prints it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbooks import readiness
from runbooks.catalog import Catalog
from runbooks.models import Run
from runbooks.outlook import HISTORY, human, percentile, recovery_time
from runbooks.ports import Clock
from runbooks.replies import Reply
from runbooks.settings import EngineSettings
from runbooks.store import Store
from runbooks.timeline import as_utc, iso

__all__ = ["FORMATS", "RecoveryTimes", "Row", "STALE_AFTER", "is_drill", "render", "rows"]

STALE_AFTER = timedelta(days=90)
FORMATS = ("md", "json", "csv")
SCHEMA = "drbot.rto/1"
LOOK_BACK = 200
"""Successful runs read per scenario to find its last drill and last incident."""


def is_drill(run: Run) -> bool:
    """A drill: marked so when `/dr drill` (or a schedule) asked for it; a run stored before drills existed is one
    when its command says so."""
    return run.drill or run.command.strip().lower().startswith("/dr drill")


@dataclass(frozen=True)
class Measured:
    at: datetime
    took: timedelta
    run_id: str


@dataclass(frozen=True)
class Row:
    runbook: str
    title: str
    environment: str
    tier: str
    target: timedelta
    last_drill: Measured | None
    last_incident: Measured | None
    p50: timedelta | None
    p90: timedelta | None
    samples: int
    state: str
    """`tested`, `stale` (no drill within STALE_AFTER) or `not tested` (never drilled)."""

    def as_dict(self) -> dict[str, Any]:
        def measured(m: Measured | None) -> dict[str, Any] | None:
            return None if m is None else {"at": iso(m.at), "seconds": round(m.took.total_seconds()), "run": m.run_id}

        return {"runbook": self.runbook, "title": self.title, "environment": self.environment, "tier": self.tier,
                "rto_target_seconds": round(self.target.total_seconds()), "last_drill": measured(self.last_drill),
                "last_incident": measured(self.last_incident),
                "p50_seconds": None if self.p50 is None else round(self.p50.total_seconds()),
                "p90_seconds": None if self.p90 is None else round(self.p90.total_seconds()),
                "samples": self.samples, "state": self.state,
                "within_target": None if self.p90 is None else self.p90 <= self.target}


def row(*, runbook: str, title: str, environment: str, tier: str, target: timedelta, runs: Sequence[Run],
        now: datetime) -> Row:
    """One scenario's row from its successful runs (any order)."""
    timed = sorted(((as_utc(r.finished_at or r.requested_at), r, t) for r in runs
                    if (t := recovery_time(r)) is not None), key=lambda item: item[0])
    drills = [Measured(at, took, r.id) for at, r, took in timed if is_drill(r)]
    real = [Measured(at, took, r.id) for at, r, took in timed if not is_drill(r)]
    recent = [took.total_seconds() for _, _, took in timed[-HISTORY:]]
    last_drill = drills[-1] if drills else None
    state = "not tested" if last_drill is None else "stale" if now - last_drill.at > STALE_AFTER else "tested"
    return Row(runbook=runbook, title=title, environment=environment, tier=tier, target=target,
               last_drill=last_drill, last_incident=real[-1] if real else None,
               p50=timedelta(seconds=percentile(recent, 50)) if recent else None,
               p90=timedelta(seconds=percentile(recent, 90)) if recent else None,
               samples=len(recent), state=state)


def render(found: Sequence[Row], *, fmt: str, now: datetime) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use md, json or csv")
    if fmt == "json":
        return json.dumps({"schema": SCHEMA, "generated_at": iso(now), "stale_after_days": STALE_AFTER.days,
                           "rows": [r.as_dict() for r in found]}, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["runbook", "environment", "tier", "rto_target_seconds", "last_drill_at",
                         "last_drill_seconds", "last_incident_at", "last_incident_seconds", "p50_seconds",
                         "p90_seconds", "samples", "state"])
        for r in found:
            d = r.as_dict()
            writer.writerow([r.runbook, r.environment, r.tier, d["rto_target_seconds"],
                             *(_csv_measured(r.last_drill)), *(_csv_measured(r.last_incident)),
                             _blank(d["p50_seconds"]), _blank(d["p90_seconds"]), r.samples, r.state])
        return out.getvalue()
    lines = [f"# Recovery times (measured by drbot, {iso(now)})", "",
             "| Scenario | Environment | RTO target | Last drill | Last incident | p50 / p90 (last 10) | State |",
             "|---|---|---|---|---|---|---|"]
    for r in found:
        spread = "—" if r.p50 is None or r.p90 is None else \
            f"{human(r.p50)} / {human(r.p90)} ({r.samples} run{'' if r.samples == 1 else 's'})"
        over = " ⚠ over target" if r.p90 is not None and r.p90 > r.target else ""
        lines.append(f"| {_cell(r.title)} (`{r.runbook}`) | {r.environment} | {human(r.target)} ({r.tier}) | "
                     f"{_md_measured(r.last_drill)} | {_md_measured(r.last_incident)} | {spread}{over} | "
                     f"{r.state} |")
    if not found:
        lines.append("| (no recovery runbook can run in any configured environment) | | | | | | |")
    lines += ["", f"A drill is a run asked for with `/dr drill`; \"stale\": no drill in {STALE_AFTER.days} days."]
    return "\n".join(lines) + "\n"


def plain(found: Sequence[Row]) -> str:
    """Aligned columns for a chat message: scenario, environment, target, last drill, last incident, p50/p90."""
    table = [("scenario", "env", "target", "last drill", "last incident", "p50/p90", "state")]
    for r in found:
        table.append((r.runbook, r.environment, human(r.target), _short(r.last_drill), _short(r.last_incident),
                      "—" if r.p50 is None or r.p90 is None else f"{human(r.p50)}/{human(r.p90)}", r.state))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
                   for line in table)


def _short(m: Measured | None) -> str:
    return "—" if m is None else f"{m.at:%b %d} {human(m.took)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_measured(m: Measured | None) -> str:
    return "—" if m is None else f"{m.at:%Y-%m-%d}: {human(m.took)} ({m.run_id})"


def _csv_measured(m: Measured | None) -> list[Any]:
    return ["", ""] if m is None else [iso(m.at), round(m.took.total_seconds())]


def _blank(value: Any) -> Any:
    return "" if value is None else value


class RecoveryTimes:
    """Builds the table from the catalog, the configured environments and the store's successful runs."""

    def __init__(self, *, store: Store, catalog: Catalog, settings: EngineSettings, clock: Clock) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.clock = clock

    def rows(self) -> list[Row]:
        return rows(store=self.store, catalog=self.catalog, settings=self.settings, now=self.clock.now())

    def text(self, fmt: str = "md") -> str:
        return render(self.rows(), fmt=fmt, now=self.clock.now())

    def reply(self) -> Reply:
        """For the chat: a fixed-width table (Slack shows no Markdown tables) to the person who asked."""
        found = self.rows()
        tested = sum(1 for r in found if r.state == "tested")
        head = (f"Recovery times: {len(found)} scenario{'' if len(found) == 1 else 's'}, {tested} drilled within "
                f"the last {STALE_AFTER.days} days (`drbot rto --format md|json|csv` prints the full table).")
        return Reply(text=head + "\n```\n" + plain(found) + "```", public=False)


def rows(*, store: Store, catalog: Catalog, settings: EngineSettings, now: datetime) -> list[Row]:
    """Every recovery runbook in every environment where it can run (or has run), in catalog order."""
    found = []
    for runbook in catalog.runbooks.values():
        if not runbook.recovery:
            continue
        for env_name, environment in settings.environments.items():
            runs = store.succeeded_runs(runbook=runbook.name, environment=env_name, limit=LOOK_BACK)
            if readiness.gaps(runbook, environment) and not runs:
                continue
            tier = settings.tier(environment.tier)
            found.append(row(runbook=runbook.name, title=runbook.title, environment=env_name, tier=tier.name,
                             target=tier.rto, runs=runs, now=now))
    return found
