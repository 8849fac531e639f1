"""Amazon RDS (`provider: aws-rds`): point-in-time and latest-backup restores into a new instance, replica check
and promotion (`rds_replica.py`), a drill's fresh read replica (`create_replica`: only `<source>-drill-<run>`, in the
DR region `replica.region`, its source named by ARN across regions), scratch-instance deletion (in the primary's
region or, for a drill's promoted replica, the DR region) and backup age.

Idempotency: the restore's target name is deterministic (`<source>-pitr-<run short id>`) and drbot tags what it
creates (`drbot:run`, `drbot:source`, `drbot:restore-time`). `start` describes the target first; an instance this
run created is attached to, anything else with that name is refused; a `DBInstanceAlreadyExists` race is
resolved the same way.

`integrity_check` connects to the restored instance with SQL (`integrations.integrity`): at its `Endpoint.Address`
and `Endpoint.Port`, or at `integrity.host`/`port` when a tunnel or proxy is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from integrations.aws.base import make_client, utc
from integrations.aws.errors import aws_errors
from integrations.aws.rds_common import (
    FAILED,
    TAG_RUN,
    TAG_SOURCE,
    TAG_TIME,
    backup_age_outputs,
    configured,
    copied_settings,
    database_recovery_point,
    endpoint,
    is_own_target,
    tags,
)
from integrations.aws.rds_replica import ReplicaActions
from integrations.common import ActionImpl, Params
from integrations.integrity import IntegrityActions
from runbooks.drills import drill_replica_problem
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Operation, OperationStatus, RecoveryPoint
from runbooks.timeline import iso


class AwsRds(IntegrityActions, ReplicaActions):
    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "restore_pitr": ActionImpl(self._plan_pitr, self._preflight_pitr, self._start_pitr, self._poll_restore),
            "restore_latest_backup": ActionImpl(self._plan_backup, self._preflight_backup, self._start_backup,
                                                self._poll_restore),
            "check_replica": ActionImpl(self._plan_replica, self._preflight_check, self._start_check),
            "promote_replica": ActionImpl(self._plan_replica, self._preflight_promote, self._start_promote,
                                          self._poll_promote),
            "create_replica": ActionImpl(self._plan_create_replica, self._preflight_create_replica,
                                         self._start_create_replica, self._poll_create_replica),
            "delete_instance": ActionImpl(self._plan_delete, self._preflight_delete, self._start_delete,
                                          self._poll_delete),
            "backup_age": ActionImpl(self._plan_age, self._preflight_age, self._start_age),
            "integrity_check": self._integrity_impl(),
        }

    def _integrity_endpoint(self, instance: str) -> tuple[str, int] | None:
        found = self._describe(instance)
        if found is None:
            return None
        return endpoint(found), int((found.get("Endpoint") or {}).get("Port") or 5432)

    # ---- restore_pitr / restore_latest_backup

    def _plan_pitr(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"source": params["source"], "target": params["target"],
                                   "note": "Creates a new instance; the source is not touched."}
        source = self._describe(str(params["source"]))
        if source is None:
            details["problem"] = self._missing(params["source"])
            return details
        window = self._window(source)
        wanted = self._wanted(params)
        details.update(region=self.settings.get("region"), engine=source.get("Engine"),
                       copied_settings=copied_settings(source))
        if window is not None:
            details["restorable_window"] = {"earliest": iso(window[0]), "latest": iso(window[1])}
            details["restore_time"] = iso(wanted) if wanted else iso(window[1])
        if wanted is None:
            details["use_latest"] = True
        problem = self._window_problem(source, wanted, window)
        if problem:
            details["problem"] = problem
        return details

    def _preflight_pitr(self, params: Params) -> list[str]:
        source = self._describe(str(params["source"]))
        if source is None:
            return [self._missing(params["source"])]
        problems = self._source_problems(source)
        try:
            problem = self._window_problem(source, self._wanted(params), self._window(source))
        except PermanentError as exc:
            problem = exc.message
        return problems + [p for p in [problem] if p] + self._target_problems(params)

    def _start_pitr(self, params: Params, run_id: str) -> Operation:
        return self._restore(params, run_id, action="restore_pitr", wanted=self._wanted(params))

    def _restore(self, params: Params, run_id: str, *, action: str, wanted: datetime | None,
                 backup_id: str = "") -> Operation:
        source_name, target = str(params["source"]), str(params["target"])
        existing = self._describe(target)
        if existing is not None:
            return self._attach_restore(existing, action=action, source=source_name, run_id=run_id,
                                        wanted=wanted, backup_id=backup_id)
        source = self._describe(source_name)
        if source is None:
            raise PermanentError(self._missing(source_name), provider=self.kind, code="DBInstanceNotFound")
        window = self._window(source)
        problem = self._window_problem(source, wanted, window)
        if problem:
            raise PermanentError(problem, provider=self.kind, code="InvalidRestoreTime")
        moment = wanted or (window[1] if window else self.clock.now())
        request: dict[str, Any] = {
            "SourceDBInstanceIdentifier": source_name, "TargetDBInstanceIdentifier": target,
            **copied_settings(source),
            "Tags": [{"Key": TAG_RUN, "Value": run_id}, {"Key": TAG_SOURCE, "Value": source_name},
                     {"Key": TAG_TIME, "Value": iso(moment)}],
        }
        if wanted is None:
            request["UseLatestRestorableTime"] = True  # never together with RestoreTime: AWS refuses the pair
        else:
            request["RestoreTime"] = wanted
        try:
            with aws_errors(provider=self.kind, doing=f"restoring `{source_name}` into `{target}`",
                            subject=source_name, setting=f"{self.where}.instance"):
                self.client.restore_db_instance_to_point_in_time(**request)
        except ProviderError as exc:
            if exc.code not in {"DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"}:
                raise
            raced = self._describe(target)  # another start of this run won the race: attach to its instance
            if raced is None:
                raise
            return self._attach_restore(raced, action=action, source=source_name, run_id=run_id, wanted=wanted,
                                        backup_id=backup_id)
        return self._restore_handle(action=action, target=target, moment=moment, backup_id=backup_id)

    def _attach_restore(self, existing: Mapping[str, Any], *, action: str, source: str, run_id: str,
                        wanted: datetime | None, backup_id: str) -> Operation:
        target = str(existing["DBInstanceIdentifier"])
        if not is_own_target(existing, source=source, run_id=run_id):
            raise PermanentError(f"DBInstanceAlreadyExists: `{target}` already exists and was not created by this "
                                 "restore; choose another target name or delete it first.", provider=self.kind,
                                 code="DBInstanceAlreadyExists")
        restored_to = tags(existing).get(TAG_TIME, "")
        if wanted is not None and restored_to and restored_to != iso(wanted):
            raise PermanentError(f"DBInstanceAlreadyExists: `{target}` was already restored to {restored_to}, not "
                                 f"{iso(wanted)}; delete it or use a new run for a different restore time.",
                                 provider=self.kind, code="DBInstanceAlreadyExists")
        moment = wanted or (datetime.fromisoformat(restored_to.replace("Z", "+00:00")) if restored_to
                            else self.clock.now())
        return self._restore_handle(action=action, target=target, moment=moment, backup_id=backup_id)

    def _restore_handle(self, *, action: str, target: str, moment: datetime, backup_id: str) -> Operation:
        data: dict[str, Any] = {"restore_time": iso(moment)}
        if backup_id:
            data["backup_id"] = backup_id
        return Operation(provider=self.kind, action=action, id=f"{action}:{target}", target=target, data=data)

    def _poll_restore(self, operation: Operation) -> OperationStatus:
        instance = self._describe(operation.target)
        if instance is None:
            raise PermanentError(f"Restored instance `{operation.target}` is gone (DBInstanceNotFound); it was "
                                 "deleted or its creation failed — check the RDS console events.",
                                 provider=self.kind, code="DBInstanceNotFound")
        status = str(instance.get("DBInstanceStatus"))
        if status in FAILED:
            return OperationStatus(done=True, failed=True, status=status,
                                   message=f"RDS reports `{operation.target}` as `{status}`; the restore failed. "
                                           "Check the instance's events in the RDS console, then retry or abort.")
        if status != "available":
            return OperationStatus(done=False, status=status)
        outputs: dict[str, Any] = {"instance": operation.target, "endpoint": endpoint(instance),
                                   "restore_time": operation.data["restore_time"]}
        if "backup_id" in operation.data:
            outputs["backup_id"] = operation.data["backup_id"]
        return OperationStatus(done=True, status=status, progress=1.0, outputs=outputs)

    def _newest_backup(self, source: str) -> dict[str, Any] | None:
        with aws_errors(provider=self.kind, doing=f"listing automated snapshots of `{source}`", subject=source):
            pages = self.client.get_paginator("describe_db_snapshots").paginate(
                DBInstanceIdentifier=source, SnapshotType="automated")
            snapshots = [s for page in pages for s in page["DBSnapshots"] if s.get("SnapshotCreateTime")]
        return dict(max(snapshots, key=lambda s: utc(s["SnapshotCreateTime"]))) if snapshots else None

    def _plan_backup(self, params: Params) -> dict[str, Any]:
        details = self._plan_pitr({**params, "use_latest": True})
        newest = self._newest_backup(str(params["source"])) if "problem" not in details else None
        if newest is not None:
            details.update(backup_id=newest["DBSnapshotIdentifier"],
                           newest_backup_at=iso(utc(newest["SnapshotCreateTime"])))
        return details

    def _preflight_backup(self, params: Params) -> list[str]:
        return self._preflight_pitr({**params, "use_latest": True})

    def _start_backup(self, params: Params, run_id: str) -> Operation:
        newest = self._newest_backup(str(params["source"]))
        backup_id = str(newest["DBSnapshotIdentifier"]) if newest else ""
        return self._restore(params, run_id, action="restore_latest_backup", wanted=None, backup_id=backup_id)

    # ---- create_replica (a drill's stand-in for the live replica)

    def _region_of(self, params: Params) -> str:
        """The step's `region`, else the DR region (`replica.region`), else the primary's."""
        return str(params.get("region") or self.replica_region or self.settings.get("region") or "")

    def _client_in(self, region: str) -> Any:
        if region == self.replica_region:
            return self.replica_client
        if region == self.settings.get("region") or not region:
            return self.client
        with aws_errors(provider=self.kind, doing=f"creating the RDS client for {region}"):
            return make_client("rds", settings=self.settings, region=region)

    def _drill_name_problem(self, params: Params) -> str:
        return drill_replica_problem(str(params["target"]))

    def _plan_create_replica(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"source": params["source"], "target": params["target"],
                                   "region": self._region_of(params),
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
        source = self._describe(str(params["source"]))
        if source is None:
            return [self._missing(params["source"])]
        target = str(params["target"])
        existing = self._describe(target, client=self._client_in(self._region_of(params)))
        clash = ([] if existing is None or is_own_target(existing, source=str(params["source"])) else
                 [f"Target instance `{target}` already exists and was not created by drbot for this run; choose "
                  "another name (drbot uses `<source>-drill-<run id>`) or delete it first."])
        return self._source_problems(source) + clash

    def _start_create_replica(self, params: Params, run_id: str) -> Operation:
        named = self._drill_name_problem(params)
        if named:
            raise PermanentError(named, provider=self.kind, code="InvalidParameter")
        source_name, target, region = str(params["source"]), str(params["target"]), self._region_of(params)
        rds = self._client_in(region)
        existing = self._describe(target, client=rds)
        if existing is not None:
            return self._attach_replica(existing, source=source_name, run_id=run_id, region=region)
        source = self._describe(source_name)
        if source is None:
            raise PermanentError(self._missing(source_name), provider=self.kind, code="DBInstanceNotFound")
        home = str(self.settings.get("region") or "")
        request: dict[str, Any] = {
            "DBInstanceIdentifier": target, "SourceDBInstanceIdentifier": source_name,
            "Tags": [{"Key": TAG_RUN, "Value": run_id}, {"Key": TAG_SOURCE, "Value": source_name}]}
        if source.get("DBInstanceClass"):
            request["DBInstanceClass"] = source["DBInstanceClass"]
        if region and home and region != home:  # cross-region: name the source by its ARN, from its region
            request["SourceDBInstanceIdentifier"] = source["DBInstanceArn"]
            request["SourceRegion"] = home
        try:
            with aws_errors(provider=self.kind, doing=f"creating read replica `{target}` of `{source_name}` in "
                            f"{region}", subject=source_name, setting=f"{self.where}.instance"):
                rds.create_db_instance_read_replica(**request)
        except ProviderError as exc:
            if exc.code not in {"DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"}:
                raise
            raced = self._describe(target, client=rds)  # another start of this run won the race: attach to it
            if raced is None:
                raise
            return self._attach_replica(raced, source=source_name, run_id=run_id, region=region)
        return self._replica_handle(target, region)

    def _attach_replica(self, existing: Mapping[str, Any], *, source: str, run_id: str, region: str) -> Operation:
        target = str(existing["DBInstanceIdentifier"])
        if not is_own_target(existing, source=source, run_id=run_id):
            raise PermanentError(f"DBInstanceAlreadyExists: `{target}` already exists and was not created by this "
                                 "run; choose another target name or delete it first.", provider=self.kind,
                                 code="DBInstanceAlreadyExists")
        return self._replica_handle(target, region)

    def _replica_handle(self, target: str, region: str) -> Operation:
        return Operation(provider=self.kind, action="create_replica", id=f"create_replica:{target}", target=target,
                         data={"region": region})

    def _poll_create_replica(self, operation: Operation) -> OperationStatus:
        region = str(operation.data.get("region") or "")
        instance = self._describe(operation.target, client=self._client_in(region))
        if instance is None:
            raise PermanentError(f"Replica `{operation.target}` is gone (DBInstanceNotFound); it was deleted or its "
                                 "creation failed — check the RDS console events.", provider=self.kind,
                                 code="DBInstanceNotFound")
        status = str(instance.get("DBInstanceStatus"))
        if status in FAILED:
            return OperationStatus(done=True, failed=True, status=status,
                                   message=f"RDS reports `{operation.target}` as `{status}`; creating the replica "
                                           "failed. Check the instance's events in the RDS console.")
        if status != "available":
            return OperationStatus(done=False, status=status)
        outputs: dict[str, Any] = {"instance": operation.target, "endpoint": endpoint(instance), "region": region}
        note = ""
        if "ReplicaLag" in instance:
            outputs["replica_lag_seconds"] = int(instance["ReplicaLag"])
        elif region == self.replica_region:
            outputs["replica_lag_seconds"], note = self._replica_lag(operation.target)
        return OperationStatus(done=True, status=status, progress=1.0, outputs=outputs, message=note)

    # ---- delete_instance (the flow is `integrations.database`'s)

    def _describe_scratch(self, name: str) -> dict[str, Any] | None:
        """In the primary's region, else in the DR region (where a drill's replica is made)."""
        found = self._describe(name)
        if found is None and self.replica_region != self.settings.get("region"):
            found = self._describe(name, client=self.replica_client)
        return found

    def _plan_delete(self, params: Params) -> dict[str, Any]:
        instance = self._describe_scratch(str(params["instance"]))
        return {"instance": params["instance"],
                "status": instance.get("DBInstanceStatus") if instance else "not found",
                "warning": "Deletion is final; no final snapshot is taken of a scratch instance."}

    def _deletable(self, found: Mapping[str, Any], name: str) -> list[str]:
        status = self._state(found)
        if status not in {"available", "deleting"}:
            return [f"Instance `{name}` is `{status}`; RDS deletes it only once it is `available`."]
        return []

    def _delete(self, name: str) -> None:
        rds = self.client
        if self.replica_region != self.settings.get("region") and self._describe(name) is None:
            rds = self.replica_client  # a drill's promoted replica lives in the DR region
        with aws_errors(provider=self.kind, doing=f"deleting scratch instance `{name}`", subject=name):
            rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True,
                                           DeleteAutomatedBackups=True)

    # ---- backup_age (the flow is `integrations.database`'s)

    def _no_backup(self, source: str) -> str:
        return f"`{source}` has no automated snapshot; enable automated backups (BackupRetentionPeriod ≥ 1)."

    def _age_outputs(self, source: Mapping[str, Any], newest: Mapping[str, Any]) -> dict[str, Any]:
        return backup_age_outputs(taken=utc(newest["SnapshotCreateTime"]), latest=source.get("LatestRestorableTime"),
                                  now=self.clock.now(), backup_id=str(newest["DBSnapshotIdentifier"]))

    # ---- recovery_point (the RPO monitor; `runbooks.ports.RecoveryPointReader`)

    def recovery_point(self) -> RecoveryPoint:
        """The configured instance's latest restorable time: one DescribeDBInstances (without the tag read
        `_describe` adds), plus one DescribeDBSnapshots only when RDS reports no restorable time. Read-only."""
        name = configured(lambda: self._setting("instance", "rag-engine-prod"), provider=self.kind)
        try:
            with aws_errors(provider=self.kind, doing=f"describing RDS instance `{name}`", subject=name,
                            setting=f"{self.where}.instance"):
                found = self.client.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"]
        except PermanentError as exc:
            if exc.code not in {"DBInstanceNotFound", "DBInstanceNotFoundFault"}:
                raise
            raise PermanentError(self._missing(name), provider=self.kind, code="DBInstanceNotFound") from exc
        if not found:
            raise PermanentError(self._missing(name), provider=self.kind, code="DBInstanceNotFound")
        return database_recovery_point(found[0], name=name, noun="RDS instance", id_key="DBSnapshotIdentifier",
                                       snapshots=lambda: self._automated_snapshots(name))

    def _automated_snapshots(self, name: str) -> list[dict[str, Any]]:
        """One page (the most RDS returns, 100: more than a 35-day retention keeps), not the paginator, so the
        monitor's two-call budget holds."""
        with aws_errors(provider=self.kind, doing=f"listing automated snapshots of `{name}`", subject=name,
                        setting=f"{self.where}.instance"):
            page = self.client.describe_db_snapshots(DBInstanceIdentifier=name, SnapshotType="automated",
                                                     MaxRecords=100)
        return [dict(s) for s in page.get("DBSnapshots") or []]
