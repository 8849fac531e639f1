"""Sandbox twin of a managed PostgreSQL (RDS-like): PITR, backup restore, replica check and promotion, a drill's
fresh `-drill-` replica (`create_replica`, promoted and deleted like any scratch instance), read-only
integrity queries and scratch-instance deletion, with RDS's own status words (`creating` → `backing-up` →
`available`; `modifying` → `rebooting` → `available`) and real-world durations divided by `speed`.

The instances themselves (seeding, windows, backups, lag) are kept by `rds.RdsWorld`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from integrations.common import ActionImpl, Params
from integrations.sandbox.phases import stamp, to_time
from integrations.sandbox.rds import (
    BACKUP_RESTORE_SECONDS,
    DELETE_SECONDS,
    PITR_SECONDS,
    PROMOTE_SECONDS,
    RDS_KIND,
    REPLICA_SECONDS,
    RESTORE_PHASES,
    RETENTION,
    RdsWorld,
    endpoint,
    query_problem,
    query_table,
    replica_lag_seconds,
)
from integrations.sandbox.records import Write
from integrations.sandbox.records import create_count as _create_count
from integrations.sandbox.world import refuse
from runbooks.drills import drill_replica_problem
from runbooks.errors import PermanentError, TransientError
from runbooks.ports import Operation, RecoveryPoint, StateStore
from runbooks.timeline import parse_iso

__all__ = ["SandboxDatabase", "create_count", "endpoint", "replica_lag_seconds"]


def create_count(state: StateStore, *, target: str) -> int:
    """How many times an instance named `target` was created (by PITR, backup restore or a drill's replica)."""
    return sum(_create_count(state, action=f"database.{a}", target=target)
               for a in ("restore_pitr", "restore_latest_backup", "create_replica"))


class SandboxDatabase(RdsWorld):
    """The database actions; every fact about instances comes from `RdsWorld`."""

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "restore_pitr": ActionImpl(self._plan_pitr, self._preflight_pitr, self._start_pitr),
            "restore_latest_backup": ActionImpl(self._plan_backup, self._preflight_backup, self._start_backup),
            "check_replica": ActionImpl(self._plan_replica, self._preflight_check, self._start_check),
            "promote_replica": ActionImpl(self._plan_replica, self._preflight_promote, self._start_promote),
            "create_replica": ActionImpl(self._plan_create_replica, self._preflight_create_replica,
                                         self._start_create_replica),
            "integrity_check": ActionImpl(self._plan_query, self._preflight_query, self._start_query,
                                          verify=self._verify_query),
            "delete_instance": ActionImpl(self._plan_delete, self._preflight_delete, self._start_delete),
            "backup_age": ActionImpl(self._plan_age, self._preflight_age, self._start_age),
        }

    # ---- restore_pitr / restore_latest_backup

    def _plan_pitr(self, params: Params) -> dict[str, Any]:
        source = self._instance(params["source"])
        details: dict[str, Any] = {"source": params["source"], "target": params["target"],
                                   "expected_duration": self._expected(PITR_SECONDS),
                                   "note": "Creates a new instance; the source is not touched."}
        if source is not None:
            earliest, latest = self._window(source)
            details.update(region=source["region"], engine=source["engine"],
                           restorable_window={"earliest": stamp(earliest), "latest": stamp(latest)},
                           endpoint=endpoint(str(params["target"]), str(source["region"])))
            try:
                moment, problem = self._restore_time(params, source)
                details["restore_time"] = stamp(moment)
            except PermanentError as exc:
                problem = exc.message
            if problem:
                details["problem"] = problem
        else:
            details["problem"] = self._missing(params["source"])
        return details

    def _preflight_pitr(self, params: Params) -> list[str]:
        source = self._instance(params["source"])
        if source is None:
            return [self._missing(params["source"])]
        problems = self._source_ready(source)
        try:
            problems += [p for p in [self._restore_time(params, source)[1]] if p]
        except PermanentError as exc:
            problems.append(exc.message)
        return problems + self._target_free(params)

    def _source_ready(self, source: Mapping[str, Any]) -> list[str]:
        status = self._status(source)
        if status in {"available", "backing-up", "modifying"}:
            return []
        return [f"Source instance `{source['id']}` is `{status}`; wait until it is available, then retry."]

    def _target_free(self, params: Params) -> list[str]:
        existing = self._instance(params["target"])
        if existing is None or self._own_target(existing, params):
            return []
        return [f"Target instance `{params['target']}` already exists; choose another name (drbot uses "
                "`<source>-pitr-<run id>`) or delete it first."]

    def _own_target(self, existing: Mapping[str, Any], params: Params) -> bool:
        """A run's deterministic target (`…-<run id>`) made by drbot from the same source: re-attach, not clash."""
        run_id = existing.get("run_id")
        short = str(run_id or "").lower().replace("-", "")  # the catalog names targets with the run's short id
        target = str(params["target"])
        return bool(run_id and (target.endswith(str(run_id)) or target.endswith(short))
                    and existing.get("source") == params["source"])

    def _start_pitr(self, params: Params, run_id: str) -> Operation:
        source = self._instance(params["source"])
        if source is None:
            raise refuse(f"DBInstanceNotFound: {self._missing(params['source'])}", code="DBInstanceNotFound")
        attached = self._attach_existing(params, run_id)
        if attached is not None:
            return attached
        moment, problem = self._restore_time(params, source)
        if problem:
            raise refuse(problem, code="InvalidRestoreTime")
        return self._create(params, run_id, source=source, action="restore_pitr", moment=moment,
                            seconds=PITR_SECONDS, extra={})

    def _attach_existing(self, params: Params, run_id: str) -> Operation | None:
        existing = self._instance(params["target"])
        if existing is None:
            return None
        if not existing.get("operation") or not self._own_target(existing, params):
            raise refuse(f"DBInstanceAlreadyExists: `{params['target']}` already exists and was not created by "
                         "this restore; choose another target name.", code="DBInstanceAlreadyExists")
        wanted = params.get("restore_time")
        if (wanted is not None and not params.get("use_latest") and str(wanted).lower() != "latest"
                and existing.get("restore_time") and to_time(wanted, name="restore_time")
                != parse_iso(str(existing["restore_time"]))):
            raise refuse(f"DBInstanceAlreadyExists: `{params['target']}` was already restored to "
                         f"{existing['restore_time']}, not {stamp(to_time(wanted, name='restore_time'))}; delete it "
                         "or use a new run for a different restore time.", code="DBInstanceAlreadyExists")
        return self._attach(str(existing["operation"]))

    def _create(self, params: Params, run_id: str, *, source: Mapping[str, Any], action: str, moment: datetime,
                seconds: float, extra: dict[str, Any]) -> Operation:
        target = str(params["target"])
        timeline = self._timeline(seconds, RESTORE_PHASES)
        record = self._new_instance(target, region=str(source["region"]), role="primary", phases=timeline.phases)
        record.update(source=source["id"], tables=dict(source["tables"]), run_id=run_id,
                      operation=self._op_id(action, target, run_id),
                      restore_time=stamp(moment))
        outputs = {"instance": target, "endpoint": record["endpoint"], "restore_time": stamp(moment), **extra}
        return self._begin(action=action, target=target, run_id=run_id, timeline=timeline, outputs=outputs,
                           writes=[Write(RDS_KIND, target, record)])

    def _plan_backup(self, params: Params) -> dict[str, Any]:
        details = self._plan_pitr({**params, "use_latest": True})
        details.pop("restore_time", None)
        source = self._instance(params["source"])
        if source is not None:
            newest = self._newest_backup(source)
            details.update(restore_time=stamp(newest), backup_id=self._backup_id(source, newest))
        details["expected_duration"] = self._expected(BACKUP_RESTORE_SECONDS)
        return details

    def _preflight_backup(self, params: Params) -> list[str]:
        source = self._instance(params["source"])
        if source is None:
            return [self._missing(params["source"])]
        return self._source_ready(source) + self._target_free(params)

    def _backup_id(self, source: Mapping[str, Any], moment: datetime) -> str:
        return f"rds:{source['id']}-{moment:%Y-%m-%d-%H-%M}"

    def _start_backup(self, params: Params, run_id: str) -> Operation:
        source = self._instance(params["source"])
        if source is None:
            raise refuse(f"DBInstanceNotFound: {self._missing(params['source'])}", code="DBInstanceNotFound")
        attached = self._attach_existing({**params, "use_latest": True}, run_id)
        if attached is not None:
            return attached
        newest = self._newest_backup(source)
        return self._create(params, run_id, source=source, action="restore_latest_backup", moment=newest,
                            seconds=BACKUP_RESTORE_SECONDS, extra={"backup_id": self._backup_id(source, newest)})

    # ---- replicas

    def _plan_replica(self, params: Params) -> dict[str, Any]:
        replica = self._instance(params["replica"])
        details: dict[str, Any] = {"replica": params["replica"],
                                   "replica_lag_seconds": replica_lag_seconds(str(params["replica"]))}
        if replica is not None:
            details.update(region=replica["region"], source=replica.get("source"), status=self._status(replica),
                           expected_duration=self._expected(PROMOTE_SECONDS),
                           warning=(f"Promotion is one-way: `{replica['id']}` stops replicating from "
                                    f"`{replica.get('source')}` and becomes a standalone primary; writes from the "
                                    f"last ~{details['replica_lag_seconds']} s are not on it."))
        return details

    def _replica_problems(self, params: Params) -> list[str]:
        replica = self._instance(params["replica"])
        if replica is None:
            return [self._missing(params["replica"]).replace(f"{self.where}.instance",
                                                             f"{self.where}.replica.instance")]
        if replica["role"] != "replica":
            return [f"`{replica['id']}` is not a read replica (it is a standalone primary); there is nothing "
                    "to promote — point the runbook at the replica in "
                    f"{self.where}.replica.instance."]
        return []

    def _preflight_check(self, params: Params) -> list[str]:
        return self._replica_problems(params)

    def _preflight_promote(self, params: Params) -> list[str]:
        problems = self._replica_problems(params)
        replica = self._instance(params["replica"])
        if not problems and replica is not None:
            status = self._status(replica)
            if status == "backing-up":
                problems.append(f"Replica `{replica['id']}` is `backing-up`; RDS refuses to promote until the "
                                "backup finishes. Wait until it is `available`, then retry.")
            elif status != "available":
                problems.append(f"Replica `{replica['id']}` is `{status}`; wait until it is `available`.")
        return problems

    def _start_check(self, params: Params, run_id: str) -> Operation:
        problems = self._replica_problems(params)
        if problems:
            raise refuse(problems[0], code="InvalidDBInstanceState")
        replica = self._instance(params["replica"]) or {}
        status = self._status(replica)
        outputs = {"replica_lag_seconds": replica_lag_seconds(str(params["replica"])),
                   "status": "replicating" if status == "available" else status, "region": replica["region"]}
        return self._begin(action="check_replica", target=str(params["replica"]), run_id=run_id,
                           timeline=self._instant(status), outputs=outputs)

    def _start_promote(self, params: Params, run_id: str) -> Operation:
        replica = self._instance(params["replica"])
        if replica is not None and replica["role"] == "primary" and replica.get("promotion"):
            attached = self._attach(str(replica["promotion"]))
            if attached is not None:
                return attached
        problems = self._preflight_promote(params)
        if problems or replica is None:
            raise refuse(problems[0] if problems else self._missing(params["replica"]),
                         code="InvalidDBInstanceState")
        lag = replica_lag_seconds(str(replica["id"]))  # captured before promotion: it is the RPO
        timeline = self._timeline(PROMOTE_SECONDS, [("modifying", 0.0), ("rebooting", 0.7), ("available", 1.0)])
        promoted = {**replica, "role": "primary", "phases": [*replica["phases"], *timeline.phases],
                    "promotion": self._op_id("promote_replica", str(replica["id"]), run_id),
                    "promoted_from": replica.get("source"), "source": None}
        outputs = {"instance": replica["id"], "endpoint": replica["endpoint"], "replica_lag_seconds": lag}
        return self._begin(action="promote_replica", target=str(replica["id"]), run_id=run_id, timeline=timeline,
                           outputs=outputs, writes=[Write(RDS_KIND, str(replica["id"]), promoted)])

    # ---- create_replica (a drill's stand-in for the live replica)

    def _replica_region(self, params: Params, source: Mapping[str, Any] | None) -> str:
        """The step's `region`, else the DR region (`replica.region`), else the source's own."""
        replica = self.settings.get("replica")
        configured = replica.get("region") if isinstance(replica, Mapping) else None
        fallback = source["region"] if source is not None else self.settings.get("region", "us-east-1")
        return str(params.get("region") or configured or fallback)

    def _drill_name_problem(self, params: Params) -> str:
        return drill_replica_problem(str(params["target"]))

    def _plan_create_replica(self, params: Params) -> dict[str, Any]:
        source = self._instance(params["source"])
        region = self._replica_region(params, source)
        details: dict[str, Any] = {"source": params["source"], "target": params["target"], "region": region,
                                   "expected_duration": self._expected(REPLICA_SECONDS),
                                   "endpoint": endpoint(str(params["target"]), region),
                                   "note": "Creates a new read replica; the source and its live replica are not "
                                           "touched."}
        problems = self._preflight_create_replica(params)
        if problems:
            details["problem"] = problems[0]
        return details

    def _preflight_create_replica(self, params: Params) -> list[str]:
        named = self._drill_name_problem(params)
        if named:
            return [named]
        source = self._instance(params["source"])
        if source is None:
            return [self._missing(params["source"])]
        return self._source_ready(source) + self._target_free(params)

    def _start_create_replica(self, params: Params, run_id: str) -> Operation:
        named = self._drill_name_problem(params)
        if named:
            raise refuse(named, code="InvalidParameter")
        source = self._instance(params["source"])
        if source is None:
            raise refuse(f"DBInstanceNotFound: {self._missing(params['source'])}", code="DBInstanceNotFound")
        attached = self._attach_existing(params, run_id)
        if attached is not None:
            return attached
        target, region = str(params["target"]), self._replica_region(params, source)
        timeline = self._timeline(REPLICA_SECONDS, [("creating", 0.0), ("available", 1.0)])
        record = self._new_instance(target, region=region, role="replica", phases=timeline.phases)
        record.update(source=source["id"], tables=dict(source["tables"]), run_id=run_id,
                      operation=self._op_id("create_replica", target, run_id))
        outputs = {"instance": target, "endpoint": record["endpoint"], "region": region,
                   "replica_lag_seconds": replica_lag_seconds(target)}
        return self._begin(action="create_replica", target=target, run_id=run_id, timeline=timeline,
                           outputs=outputs, writes=[Write(RDS_KIND, target, record)])

    # ---- integrity_check

    def _plan_query(self, params: Params) -> dict[str, Any]:
        return {"instance": params["instance"], "query": params["query"], "min_count": params.get("min_count", 1)}

    def _preflight_query(self, params: Params) -> list[str]:
        problem = query_problem(str(params["query"]))
        return [problem] if problem else []

    def _start_query(self, params: Params, run_id: str) -> Operation:
        query = str(params["query"])
        problem = query_problem(query)
        if problem:
            raise refuse(problem)
        record = self._instance(params["instance"])
        if record is None:
            raise refuse(f"DBInstanceNotFound: {self._missing(params['instance'])}", code="DBInstanceNotFound")
        status = self._status(record)
        if status not in {"available", "backing-up"}:
            raise TransientError(f"Instance `{record['id']}` is `{status}`; the query runs once it is available.",
                                 provider=self.kind, code="InvalidDBInstanceState")
        table = query_table(query)
        if table is None:
            numbers = re.findall(r"\d+", query)
            count = int(numbers[0]) if numbers else 1
        elif table in record["tables"]:
            count = int(record["tables"][table])
        else:
            raise refuse(f'ERROR: relation "{table}" does not exist (tables on `{record["id"]}`: '
                         f"{', '.join(sorted(record['tables']))}).", code="UndefinedTable")
        return self._begin(action="integrity_check", target=str(record["id"]), run_id=run_id,
                           timeline=self._instant("succeeded"), outputs={"count": count})

    def _verify_query(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        minimum = int(params.get("min_count") or 1)
        count = int(outputs.get("count", 0))
        if count >= minimum:
            return []
        return [f"Integrity check on `{params['instance']}` returned {count:,}, below the minimum {minimum:,}; the "
                "restore may be missing data — compare with the source before switching traffic."]

    # ---- delete_instance

    def _plan_delete(self, params: Params) -> dict[str, Any]:
        record = self._instance(params["instance"])
        return {"instance": params["instance"], "status": self._status(record) if record else "not found",
                "expected_duration": self._expected(DELETE_SECONDS),
                "warning": "Deletion is final; no final snapshot is taken of a scratch instance."}

    def _protected(self, params: Params) -> str:
        name = str(params["instance"])
        replica = self.settings.get("replica")
        guarded = {str(self.settings.get("instance")), str(params.get("source") or "")}
        if isinstance(replica, Mapping):
            guarded.add(str(replica.get("instance")))
        record = self._load(RDS_KIND, name)
        if name in guarded or (record is not None and not record.get("run_id")):
            return (f"Refusing to delete `{name}`: it is not a scratch instance created by drbot (the source, its "
                    "replica and pre-existing instances are never deleted); delete_instance only removes "
                    "restores such as `<source>-pitr-<run id>`.")
        return ""

    def _preflight_delete(self, params: Params) -> list[str]:
        protected = self._protected(params)
        if protected:
            return [protected]
        record = self._instance(params["instance"])
        if record is None:
            return [self._missing(params["instance"])]
        status = self._status(record)
        if status not in {"available", "deleting"}:
            return [f"Instance `{record['id']}` is `{status}`; RDS deletes it only once it is `available`."]
        return []

    def _start_delete(self, params: Params, run_id: str) -> Operation:
        protected = self._protected(params)
        if protected:
            raise refuse(protected, code="InvalidParameter")
        name = str(params["instance"])
        record = self._load(RDS_KIND, name)
        if record is not None and record.get("deletion"):
            attached = self._attach(str(record["deletion"]))
            if attached is not None:
                return attached
        if record is None or self._instance(name) is None:  # already gone (or never made): done, as RDS attaches
            return self._begin(action="delete_instance", target=name, run_id=run_id, timeline=self._instant("deleted"),
                               outputs={"deleted": True, "instance": name})
        status = self._status(record)
        if status != "available":
            raise TransientError(f"Instance `{name}` is `{status}`; it can be deleted once it is available.",
                                 provider=self.kind, code="InvalidDBInstanceState")
        timeline = self._timeline(DELETE_SECONDS, [("deleting", 0.0), ("deleted", 1.0)])
        gone = {**record, "phases": [*record["phases"], *timeline.phases],
                "deletion": self._op_id("delete_instance", name, run_id)}
        return self._begin(action="delete_instance", target=name, run_id=run_id, timeline=timeline,
                           outputs={"deleted": True, "instance": name}, writes=[Write(RDS_KIND, name, gone)])

    # ---- the RPO monitor's read

    def _recovery_point(self) -> RecoveryPoint:
        name = self.settings.get("instance")
        source = self._instance(name)
        if source is None:
            raise refuse(f"DBInstanceNotFound: {self._missing(name)}", code="DBInstanceNotFound")
        _, latest = self._window(source)
        return RecoveryPoint(newest=latest, what="latest restorable time", calls=1)

    # ---- backup_age

    def _plan_age(self, params: Params) -> dict[str, Any]:
        return {"source": params["source"], "retention_days": RETENTION.days}

    def _preflight_age(self, params: Params) -> list[str]:
        return [] if self._instance(params["source"]) else [self._missing(params["source"])]

    def _start_age(self, params: Params, run_id: str) -> Operation:
        source = self._instance(params["source"])
        if source is None:
            raise refuse(f"DBInstanceNotFound: {self._missing(params['source'])}", code="DBInstanceNotFound")
        newest = self._newest_backup(source)
        _, latest = self._window(source)
        outputs = {"newest_backup_at": stamp(newest), "latest_restorable_time": stamp(latest),
                   "age_seconds": int((self.clock.now() - newest).total_seconds())}
        return self._begin(action="backup_age", target=str(source["id"]), run_id=run_id,
                           timeline=self._instant("available"), outputs=outputs)
