"""The simulated RDS world: instances in state kind `sandbox.rds` keyed by instance id, their status timelines,
restorable windows, automated backups and replica lag — shared by every database action in `database.py`.

The world starts with the configured source `instance` (created 400 days ago, 7-day backup retention, a
`documents` table of 18,432 rows) and, when configured, its cross-region `replica`. Restored instances inherit
their source's tables, so a restore of a restore works too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from integrations.common import Params
from integrations.sandbox.phases import first_time, stamp, status_at, to_time, whole_seconds
from integrations.sandbox.records import digest
from integrations.sandbox.world import SandboxProvider
from runbooks.actions import ACTIONS

RDS_KIND = "sandbox.rds"
RETENTION = timedelta(days=7)
RESTORE_LAG = timedelta(minutes=5)
# Real-world seconds, shared with plans' forecasts (`runbooks.actions`).
PITR_SECONDS = ACTIONS["database.restore_pitr"].typical
BACKUP_RESTORE_SECONDS = ACTIONS["database.restore_latest_backup"].typical
PROMOTE_SECONDS = ACTIONS["database.promote_replica"].typical
REPLICA_SECONDS = ACTIONS["database.create_replica"].typical
DELETE_SECONDS = ACTIONS["database.delete_instance"].typical
SEED_TABLES = {"documents": 18_432, "chunks": 221_184, "users": 312}
RESTORE_PHASES = [("creating", 0.0), ("backing-up", 0.85), ("available", 1.0)]
_WRITE_WORDS = re.compile(r"\b(insert|update|delete|drop|alter|truncate|create|grant|revoke|copy|vacuum)\b", re.I)
_FROM = re.compile(r"\bfrom\s+([A-Za-z_][\w.\"]*)", re.I)


def query_problem(query: str) -> str:
    """The sandbox only runs one read-only statement, as a careful integrity check should."""
    text = query.strip().rstrip(";")
    if not re.match(r"^(select|with)\b", text, re.I) or _WRITE_WORDS.search(text) or ";" in text:
        return (f"integrity_check runs one read-only query; got {query!r}. Use a single SELECT, e.g. "
                "`SELECT count(*) FROM documents`.")
    return ""


def query_table(query: str) -> str | None:
    found = _FROM.search(query)
    return found.group(1).split(".")[-1].strip('"').lower() if found else None


def replica_lag_seconds(instance: str) -> int:
    """A stable 4–12 s lag per replica name, so demos and tests see the same number every time."""
    return 4 + int(digest("lag", instance)[:8], 16) % 9


def endpoint(instance: str, region: str) -> str:
    return f"{instance}.sandbox-{region}.rds.local"


class RdsWorld(SandboxProvider):
    """Instance bookkeeping; the actions live in `SandboxDatabase`."""

    resource = "database"
    required_settings = {"instance": "rag-engine-prod"}

    def _seed(self) -> None:
        source = self.settings.get("instance")
        region = str(self.settings.get("region", "us-east-1"))
        born = stamp(whole_seconds(self.clock.now() - timedelta(days=400)))
        if self._load(RDS_KIND, str(source)) is None:
            self._save(RDS_KIND, str(source), self._new_instance(str(source), region=region, role="primary",
                                                                  phases=[["available", born]]))
        replica = self.settings.get("replica")
        if isinstance(replica, Mapping) and replica.get("instance"):
            name = str(replica["instance"])
            if self._load(RDS_KIND, name) is None:
                record = self._new_instance(name, region=str(replica.get("region", region)), role="replica",
                                            phases=[[str(replica.get("status", "available")), born]])
                record["source"] = str(source)
                self._save(RDS_KIND, name, record)

    def _new_instance(self, name: str, *, region: str, role: str, phases: list[list[str]]) -> dict[str, Any]:
        return {"id": name, "role": role, "region": region, "engine": str(self.settings.get("engine", "postgres")),
                "engine_version": str(self.settings.get("engine_version", "16.4")), "source": None,
                "endpoint": endpoint(name, region), "phases": phases, "tables": dict(SEED_TABLES),
                "run_id": None, "operation": None}

    def _instance(self, name: Any) -> dict[str, Any] | None:
        record = self._load(RDS_KIND, str(name))
        return record if record is not None and self._status(record) != "deleted" else None

    def _status(self, record: Mapping[str, Any]) -> str:
        return status_at(record["phases"], self.clock.now())

    def _known(self) -> str:
        names = [k for k, v in self.state.list_state(kind=RDS_KIND).items() if self._status(v) != "deleted"]
        return ", ".join(sorted(names)) or "none"

    def _missing(self, name: Any) -> str:
        return (f"Instance `{name}` does not exist in the sandbox (instances: {self._known()}); check "
                f"{self.where}.instance in drbot.yml or the step's parameters.")

    def _window(self, record: Mapping[str, Any]) -> tuple[datetime, datetime]:
        now = self.clock.now()
        since = first_time(record["phases"], "available") or now
        earliest = whole_seconds(max(now - RETENTION, since), up=True)
        return earliest, max(earliest, whole_seconds(now - RESTORE_LAG))

    def _newest_backup(self, record: Mapping[str, Any]) -> datetime:
        """Automated backups run daily at 03:00 UTC; a new instance's first backup is its `backing-up` phase."""
        now = self.clock.now()
        daily = now.replace(hour=3, minute=0, second=0, microsecond=0)
        if daily > now:
            daily -= timedelta(days=1)
        first = first_time(record["phases"], "available") or now
        return whole_seconds(max(daily, first))

    def _restore_time(self, params: Params, record: Mapping[str, Any]) -> tuple[datetime, str]:
        """(resolved time, problem sentence or "")."""
        earliest, latest = self._window(record)
        raw = params.get("restore_time")
        if params.get("use_latest") or raw is None or (isinstance(raw, str) and raw.strip().lower() == "latest"):
            return latest, ""
        moment = to_time(raw, name="restore_time")
        if earliest <= moment <= latest:
            return moment, ""
        return moment, (f"Restore time {stamp(moment)} is outside the restorable window of `{record['id']}` "
                        f"({stamp(earliest)} to {stamp(latest)}); pick a time between {stamp(earliest)} and "
                        f"{stamp(latest)}, or use `latest`.")

    # ---- restore_pitr / restore_latest_backup
