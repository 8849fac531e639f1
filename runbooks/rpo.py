"""RPO compliance: which configured stores hold data with a recovery point, the RPO each must meet, and the monitor
that reads each store's newest recovery point and compares its age with that target.

A scan (`RpoMonitor.scan`) reads every store concurrently through its provider's `recovery_point()` (at most two
API calls each), keeps the readings (`rpo.reading`, which `/metrics` and `/dr rpo` show), counts each failed backup
once (`rpo.failures`), and announces a breach once when a store crosses its target and once when it is back within
it (`rpo.breach` holds the breaches in force, so a restart or another replica never announces one again). The scan
runs from the leader's minute tick (`runbooks.ticks`) every `rpo.check_every`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbooks.errors import ConfigError, ProviderError
from runbooks.ports import Clock, ProviderFactory, RecoveryPoint, RecoveryPointReader
from runbooks.settings import EngineSettings
from runbooks.store import Store
from runbooks.timeline import format_duration, iso, parse_duration, parse_iso

__all__ = ["READINGS", "STORES", "Reading", "RpoMonitor", "Target", "rpo_table", "targets"]

log = logging.getLogger("drbot.rpo")

STORES = ("database", "kubernetes", "vectors", "objects")
"""Resources whose data is restored from a recovery point (a backup, a snapshot, versions); DNS is not."""
READINGS = "rpo.reading"
BREACHES = "rpo.breach"
FAILURES = "rpo.failures"
SCANNED = "rpo.scanned"
WORKERS = 16
"""Stores read at once: a scan of 200 stores with 300 ms reads takes about 4 s (bench/bench_rpo.py)."""


@dataclass(frozen=True)
class Target:
    environment: str
    resource: str
    """The configured resource (`database`, `vectors`, …): the metric calls it `store`."""
    tier: str
    rpo: timedelta

    @property
    def key(self) -> str:
        return f"{self.environment}/{self.resource}"


def targets(settings: EngineSettings) -> list[Target]:
    """Every configured store with its RPO target: its tier's, or its own `rpo:` in drbot.yml (a Velero store
    backed up daily has a looser target than the database beside it). Configuration order."""
    found = []
    for name, environment in settings.environments.items():
        tier = settings.tier(environment.tier)
        for store, resource in environment.resources.items():
            if store not in STORES:
                continue
            own = resource.settings().get("rpo")
            try:
                rpo = parse_duration(str(own)) if own else tier.rpo
            except ValueError as exc:
                raise ConfigError(f"environments.{name}.{store}.rpo: {exc}") from None
            found.append(Target(environment=name, resource=store, tier=tier.name, rpo=rpo))
    return found


@dataclass(frozen=True)
class Reading:
    """One store's recovery point at one moment, against its target."""

    target: Target
    checked_at: datetime
    point: RecoveryPoint | None
    error: str = ""

    @property
    def age(self) -> timedelta | None:
        if self.point is None or self.point.newest is None:
            return None
        return max(self.checked_at - self.point.newest, timedelta(0))

    @property
    def state(self) -> str:
        """"ok", "breach" (too old, or no recovery point at all) or "unknown" (it could not be read)."""
        if self.point is None:
            return "unknown"
        age = self.age
        return "breach" if age is None or age > self.target.rpo else "ok"

    def sentence(self) -> str:
        where = f"{self.target.resource} of {self.target.environment}"
        if self.point is None:
            return f"{where}: could not be read — {self.error}"
        age = self.age
        point = (f"newest recovery point {format_duration(age)} old ({self.point.what}, {iso(self.point.newest)})"
                 if age is not None and self.point.newest is not None else f"no recovery point ({self.point.what})")
        verdict = ("over" if self.state == "breach" else "within") + f" its {format_duration(self.target.rpo)} RPO"
        cause = f"; likely cause: {self.point.cause}" if self.point.cause and self.state == "breach" else ""
        return f"{where}: {point}, {verdict}{cause}"

    def stored(self) -> dict[str, Any]:
        point = self.point
        return {"environment": self.target.environment, "store": self.target.resource, "tier": self.target.tier,
                "rpo_seconds": int(self.target.rpo.total_seconds()), "checked_at": iso(self.checked_at),
                "newest": iso(point.newest) if point is not None and point.newest is not None else None,
                "what": point.what if point is not None else "", "cause": point.cause if point is not None else "",
                "calls": point.calls if point is not None else 0, "error": self.error, "state": self.state,
                "age_seconds": int(self.age.total_seconds()) if self.age is not None else None}

    @classmethod
    def from_stored(cls, value: Mapping[str, Any]) -> Reading:
        target = Target(environment=str(value["environment"]), resource=str(value["store"]),
                        tier=str(value["tier"]), rpo=timedelta(seconds=int(value["rpo_seconds"])))
        point = None if value.get("error") else RecoveryPoint(
            newest=parse_iso(str(value["newest"])) if value.get("newest") else None, what=str(value.get("what", "")),
            cause=str(value.get("cause", "")), calls=int(value.get("calls") or 0))
        return cls(target=target, checked_at=parse_iso(str(value["checked_at"])), point=point,
                   error=str(value.get("error") or ""))


class RpoMonitor:
    """Reads the stores and keeps what it read; `announce(key, text)` posts a notice once per key."""

    def __init__(self, *, settings: EngineSettings, providers: ProviderFactory, state: Store, clock: Clock,
                 announce: Callable[[str, str], object]) -> None:
        self.settings = settings
        self.providers = providers
        self.state = state
        self.clock = clock
        self.announce = announce

    # ------------------------------------------------------------------------------------------- reading

    def read(self) -> list[Reading]:
        """Every store's recovery point now (concurrently; a store that cannot be read says why)."""
        wanted = targets(self.settings)
        if not wanted:
            return []
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(wanted)), thread_name_prefix="drbot-rpo") as pool:
            return list(pool.map(self._read_one, wanted))

    def _read_one(self, target: Target) -> Reading:
        resource = self.settings.environment(target.environment).resources[target.resource]
        try:
            provider = self.providers(environment=target.environment, resource=target.resource,
                                      config={**resource.settings(), "provider": resource.provider})
            if not isinstance(provider, RecoveryPointReader):
                return Reading(target=target, checked_at=self.clock.now(), point=None,
                               error=f"the {resource.provider} provider cannot read recovery points")
            point = provider.recovery_point()
        except ProviderError as exc:
            return Reading(target=target, checked_at=self.clock.now(), point=None, error=exc.message)
        except Exception as exc:  # a bug or an SDK surprise: reported on this store, the scan goes on
            log.exception("reading the recovery point of %s failed", target.key)
            return Reading(target=target, checked_at=self.clock.now(), point=None,
                           error=f"unexpected {type(exc).__name__} (see the log)")
        return Reading(target=target, checked_at=self.clock.now(), point=point)

    # ------------------------------------------------------------------------------------------- scanning

    def due(self, *, every: timedelta) -> bool:
        """Whether the last scan is older than `every` (the minute tick asks)."""
        last = self.state.load_state(kind=SCANNED, key="last")
        return last is None or self.clock.now() - parse_iso(str(last["at"])) >= every

    def scan(self) -> list[Reading]:
        """Read every store, keep the readings, count failed backups once, announce breaches and recoveries once."""
        self.state.save_state(kind=SCANNED, key="last", value={"at": iso(self.clock.now())})  # a tick during it waits
        readings = self.read()
        for reading in readings:
            self._keep(reading)
        return readings

    def _keep(self, reading: Reading) -> None:
        key = reading.target.key
        self.state.save_state(kind=READINGS, key=key, value=reading.stored())
        if reading.point is not None and reading.point.failed:
            seen = self.state.load_state(kind=FAILURES, key=key) or {"ids": [], "total": 0}
            new = [i for i in reading.point.failed if i not in seen["ids"]]
            if new:
                self.state.save_state(kind=FAILURES, key=key, value={
                    "ids": [*seen["ids"], *new][-500:], "total": int(seen["total"]) + len(new)})
        if reading.state == "unknown":
            return  # not known to be in breach or not: keep what was said
        breach = self.state.load_state(kind=BREACHES, key=key)
        if reading.state == "breach" and breach is None:
            since = iso(reading.checked_at)
            if self.state.claim_once(kind=BREACHES, key=key, value={"since": since}):
                self.announce(f"rpo:{key}:breach:{since}",
                              f":rotating_light: RPO breach — {reading.sentence()}.")
        elif reading.state == "ok" and breach is not None:
            self.state.delete_state(kind=BREACHES, key=key)
            self.announce(f"rpo:{key}:clear:{breach['since']}",
                          f":white_check_mark: RPO back within target — {reading.sentence()} "
                          f"(in breach since {breach['since']}).")

    # ------------------------------------------------------------------------------------------- showing

    def kept(self) -> list[Reading]:
        """The last readings, in configuration order (what `/metrics` exports)."""
        stored = self.state.list_state(kind=READINGS)
        return [Reading.from_stored(stored[t.key]) for t in targets(self.settings) if t.key in stored]

    def failures(self) -> dict[str, int]:
        """Failed backups counted so far, by `env/store`."""
        return {key: int(value.get("total") or 0) for key, value in self.state.list_state(kind=FAILURES).items()}


def rpo_table(readings: list[Reading], fmt: str = "md") -> str:
    """`/dr rpo` and `drbot rpo`: each store, its target, its newest recovery point's age and the verdict."""
    rows = [r.stored() | {"sentence": r.sentence()} for r in readings]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    header = ["environment", "store", "tier", "rpo_target", "newest_recovery_point", "age", "state", "what", "cause"]
    values = [[r.target.environment, r.target.resource, r.target.tier, format_duration(r.target.rpo),
               iso(r.point.newest) if r.point is not None and r.point.newest is not None else "",
               format_duration(r.age) if r.age is not None else "", r.state,
               r.point.what if r.point is not None else r.error, r.point.cause if r.point is not None else ""]
              for r in readings]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(values)
        return out.getvalue()
    if not readings:
        return "No store with recovery points is configured (database, kubernetes, vectors or objects).\n"
    marks = {"ok": "✅ ok", "breach": "🚨 breach", "unknown": "❔ unknown"}
    lines = ["| Environment | Store | RPO target | Newest recovery point | Age | State | Notes |",
             "|---|---|---|---|---|---|---|"]
    for r, row in zip(readings, values, strict=True):
        notes = (r.point.cause if r.point is not None and r.state == "breach" and r.point.cause else
                 (r.point.what if r.point is not None else r.error))
        lines.append(f"| {row[0]} | {row[1]} | {row[3]} ({row[2]}) | {row[4] or '—'} | {row[5] or '—'} | "
                     f"{marks[r.state]} | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
