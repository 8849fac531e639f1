"""Amazon Aurora (`provider: aws-aurora`, resource `database`): cluster point-in-time restore plus a writer
instance, deletion of such a scratch cluster, and backup age — the same actions and outputs as `aws-rds`, so the
catalog's `database-pitr` runs unchanged.

How `instance`/`source` map to the cluster: every database runbook passes `{{ env.database.instance }}` as the
source, and the engine reads that straight from drbot.yml, so for `aws-aurora` `instance` *is the cluster id*:
`{provider: aws-aurora, instance: rag-engine-prod, cluster: rag-engine-prod, region: us-west-2,
writer_class: db.r6g.large}`. `cluster` is accepted as the clearer name (either alone names the cluster; the
provider prefers `cluster`), and `drbot check` says so when `instance` is missing or differs — without it the
catalog's templates cannot resolve. The `instance` *output* is the restored cluster's id, as runbooks expect.

Why the writer is created by the wait, not only by start: AWS accepts `CreateDBInstance` for a restored cluster
only once that cluster is `available`. `start` restores the cluster (and adds the writer at once if the cluster is
already available); `poll` adds the writer the first time it sees the cluster `available`. Both describe before
they create, so a re-run after a crash attaches; the writer's class and engine are fixed at start and travel in
the operation handle. Progress reports AWS's own words, prefixed with what they describe (`cluster creating`,
`writer backing-up`).

`integrity_check` connects with SQL (`integrations.integrity`) to the restored cluster's writer `Endpoint` and
`Port`, or to `integrity.host`/`port` when a tunnel or proxy is configured.

Idempotency: the target is `<source>-pitr-<run short id>`, tagged `drbot:run`, `drbot:source`,
`drbot:restore-time`; a cluster this run restored is attached to, anything else with that name is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from integrations.aws.aurora_common import (
    CLUSTER_FAILED,
    CLUSTER_NOT_FOUND,
    SOURCE_READY,
    AuroraBase,
    cluster_window,
    copied_cluster_settings,
    is_own_cluster,
    writer_name,
    writer_of,
)
from integrations.aws.base import utc
from integrations.aws.errors import aws_errors
from integrations.aws.rds_common import (
    FAILED,
    TAG_RUN,
    TAG_SOURCE,
    TAG_TIME,
    backup_age_outputs,
    configured,
    database_recovery_point,
    tags,
)
from integrations.common import ActionImpl, Params
from integrations.database import SCRATCH_MARKERS
from integrations.integrity import IntegrityActions
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Operation, OperationStatus, RecoveryPoint
from runbooks.timeline import iso

__all__ = ["AuroraProvider"]


class AuroraProvider(IntegrityActions, AuroraBase):
    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "restore_pitr": ActionImpl(self._plan_pitr, self._preflight_pitr, self._start_pitr, self._poll_pitr,
                                       self._verify_pitr),
            "delete_instance": ActionImpl(self._plan_delete, self._preflight_delete, self._start_delete,
                                          self._poll_delete),
            "backup_age": ActionImpl(self._plan_age, self._preflight_age, self._start_age),
            "integrity_check": self._integrity_impl(),
        }

    def _integrity_endpoint(self, instance: str) -> tuple[str, int] | None:
        """The restored cluster's writer endpoint: `instance` is a cluster id, as the restore's output is."""
        found = self._cluster(instance)
        if found is None:
            return None
        return str(found.get("Endpoint") or ""), int(found.get("Port") or 5432)

    # ---- restore_pitr

    def _plan_pitr(self, params: Params) -> dict[str, Any]:
        target = str(params["target"])
        details: dict[str, Any] = {"source": params["source"], "target": target, "writer": writer_name(target),
                                   "note": "Creates a new cluster and its writer; the source is not touched."}
        source = self._cluster(str(params["source"]))
        if source is None:
            details["problem"] = self._missing(params["source"])
            return details
        wanted = self._wanted(params)
        details.update(region=self.settings.get("region"), engine=source.get("Engine"),
                       writer_class=self._writer_class(source), copied_settings=copied_cluster_settings(source))
        window = cluster_window(source)
        if window is not None:
            details["restorable_window"] = {"earliest": iso(window[0]), "latest": iso(window[1])}
            details["restore_time"] = iso(wanted) if wanted else iso(window[1])
        if wanted is None:
            details["use_latest"] = True
        problem = self._window_problem(source, wanted)
        if problem:
            details["problem"] = problem
        return details

    def _preflight_pitr(self, params: Params) -> list[str]:
        source = self._cluster(str(params["source"]))
        if source is None:
            return [self._missing(params["source"])]
        problems: list[str] = []
        status = str(source.get("Status"))
        if status not in SOURCE_READY:
            problems.append(f"Source cluster `{params['source']}` is `{status}`; wait until it is available, "
                            "then retry.")
        try:
            problem = self._window_problem(source, self._wanted(params))
        except PermanentError as exc:
            problem = exc.message
        if problem:
            problems.append(problem)
        if self._writer_class(source) is None:
            problems.append(f"Source cluster `{params['source']}` has no writer to copy the instance class from; "
                            f"add `writer_class: db.r6g.large` (your class) to {self.where} in drbot.yml.")
        return problems + self._target_problems(params)

    def _start_pitr(self, params: Params, run_id: str) -> Operation:
        source_name, target = str(params["source"]), str(params["target"])
        wanted = self._wanted(params)
        existing = self._cluster(target)
        if existing is not None:
            return self._attach(existing, source=source_name, run_id=run_id, wanted=wanted)
        source = self._require_cluster(source_name)
        problem = self._window_problem(source, wanted)
        if problem:
            raise PermanentError(problem, provider=self.kind, code="InvalidRestoreTime")
        window = cluster_window(source)
        moment = wanted or (window[1] if window else self.clock.now())
        handle = self._handle(target=target, run_id=run_id, moment=iso(moment), source=source)
        request: dict[str, Any] = {
            "SourceDBClusterIdentifier": source_name, "DBClusterIdentifier": target,
            **copied_cluster_settings(source), "Tags": self._tags(run_id, source_name, iso(moment)),
        }
        if wanted is None:
            request["UseLatestRestorableTime"] = True  # never together with RestoreToTime: AWS refuses the pair
        else:
            request["RestoreToTime"] = wanted
        try:
            with aws_errors(provider=self.kind, doing=f"restoring Aurora cluster `{source_name}` into `{target}`",
                            subject=source_name, setting=f"{self.where}.{self.cluster_setting}"):
                restored = self.client.restore_db_cluster_to_point_in_time(**request)["DBCluster"]
        except ProviderError as exc:
            raced = self._cluster(target) if exc.code == "DBClusterAlreadyExistsFault" else None
            if raced is None:
                raise
            return self._attach(raced, source=source_name, run_id=run_id, wanted=wanted)
        if restored.get("Status") == "available":
            self._ensure_writer(handle)
        return handle

    def _attach(self, existing: Mapping[str, Any], *, source: str, run_id: str, wanted: datetime | None
                ) -> Operation:
        target = str(existing["DBClusterIdentifier"])
        if not is_own_cluster(existing, source=source, run_id=run_id):
            raise PermanentError(f"DBClusterAlreadyExistsFault: `{target}` already exists and was not created by "
                                 "this restore; choose another target name or delete it first.",
                                 provider=self.kind, code="DBClusterAlreadyExistsFault")
        restored_to = tags(existing).get(TAG_TIME, "")
        if wanted is not None and restored_to and restored_to != iso(wanted):
            raise PermanentError(f"DBClusterAlreadyExistsFault: `{target}` was already restored to {restored_to}, "
                                 f"not {iso(wanted)}; delete it or use a new run for a different restore time.",
                                 provider=self.kind, code="DBClusterAlreadyExistsFault")
        writer = self._instance(writer_name(target))
        source_cluster = None if writer is not None else self._require_cluster(source)
        handle = self._handle(target=target, run_id=run_id, moment=restored_to or iso(wanted or self.clock.now()),
                              source=source_cluster, writer=writer, engine=str(existing.get("Engine") or ""))
        if existing.get("Status") == "available":
            self._ensure_writer(handle)
        return handle

    def _handle(self, *, target: str, run_id: str, moment: str, source: Mapping[str, Any] | None,
                writer: Mapping[str, Any] | None = None, engine: str = "") -> Operation:
        """The writer's class and engine are fixed here, so a failover of the source cannot change them later."""
        if writer is not None:
            writer_class, engine = str(writer.get("DBInstanceClass")), str(writer.get("Engine") or engine)
        else:
            assert source is not None
            found = self._writer_class(source)
            if found is None:
                raise PermanentError(f"Source cluster `{source.get('DBClusterIdentifier')}` has no writer to copy "
                                     f"the instance class from; add `writer_class: db.r6g.large` to {self.where}.",
                                     provider=self.kind, code="InvalidParameter")
            writer_class, engine = found, str(source.get("Engine") or engine)
        return Operation(provider=self.kind, action="restore_pitr", id=f"restore_pitr:{target}", target=target,
                         data={"restore_time": moment, "writer": writer_name(target), "writer_class": writer_class,
                               "engine": engine, "run": run_id})

    def _tags(self, run_id: str, source: str, moment: str) -> list[dict[str, str]]:
        return [{"Key": TAG_RUN, "Value": run_id}, {"Key": TAG_SOURCE, "Value": source},
                {"Key": TAG_TIME, "Value": moment}]

    def _ensure_writer(self, operation: Operation) -> dict[str, Any] | None:
        """Describe, else create the writer; "already exists" attaches. None while AWS is not ready for it."""
        name, target = str(operation.data["writer"]), operation.target
        writer = self._instance(name)
        if writer is not None:
            return writer
        try:
            with aws_errors(provider=self.kind, doing=f"creating writer `{name}` in Aurora cluster `{target}`",
                            subject=name):
                self.client.create_db_instance(
                    DBInstanceIdentifier=name, DBClusterIdentifier=target, Engine=operation.data["engine"],
                    DBInstanceClass=operation.data["writer_class"],
                    Tags=[{"Key": TAG_RUN, "Value": str(operation.data["run"])},
                          {"Key": TAG_SOURCE, "Value": target}])
        except ProviderError as exc:
            if exc.code == "InvalidDBClusterStateFault":
                return None  # the cluster is not ready for instances yet: the next poll tries again
            if exc.code not in {"DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"}:
                raise
        return self._instance(name)

    def _poll_pitr(self, operation: Operation) -> OperationStatus:
        target, name = operation.target, str(operation.data["writer"])
        cluster = self._cluster(target)
        if cluster is None:
            raise PermanentError(f"Restored Aurora cluster `{target}` is gone (DBClusterNotFoundFault); it was "
                                 "deleted or its creation failed — check the RDS console events.",
                                 provider=self.kind, code="DBClusterNotFoundFault")
        status = str(cluster.get("Status"))
        if status in CLUSTER_FAILED:
            return OperationStatus(done=True, failed=True, status=f"cluster {status}",
                                   message=f"Aurora reports cluster `{target}` as `{status}`; the restore failed. "
                                           "Check its events in the RDS console, then retry or abort.")
        if status != "available":
            return OperationStatus(done=False, status=f"cluster {status}", progress=0.3,
                                   message=f"Aurora is restoring cluster `{target}`")
        writer = self._ensure_writer(operation)
        word = str(writer.get("DBInstanceStatus")) if writer else "requested"
        if word in FAILED:
            return OperationStatus(done=True, failed=True, status=f"writer {word}",
                                   message=f"Aurora reports writer `{name}` as `{word}`; the cluster `{target}` "
                                           "was restored but has no working writer. Check its events, then retry.")
        if word != "available":
            return OperationStatus(done=False, status=f"writer {word}", progress=0.7,
                                   message=f"cluster `{target}` is available; its writer `{name}` is on the way")
        return OperationStatus(done=True, status="available", progress=1.0, outputs={
            "instance": target, "endpoint": str(cluster.get("Endpoint") or ""), "port": cluster.get("Port"),
            "restore_time": operation.data["restore_time"], "writer": name})

    def _verify_pitr(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        target = str(outputs.get("instance") or params["target"])
        name = str(outputs.get("writer") or writer_name(target))
        cluster = self._cluster(target)
        if cluster is None:
            return [f"Restored Aurora cluster `{target}` no longer exists; check the RDS console events."]
        problems: list[str] = []
        if cluster.get("Status") != "available":
            problems.append(f"Restored cluster `{target}` is `{cluster.get('Status')}`, not `available`.")
        writer = self._instance(name)
        if writer is None or writer.get("DBInstanceStatus") != "available":
            problems.append(f"Writer `{name}` is `{(writer or {}).get('DBInstanceStatus', 'missing')}`, "
                            "not `available`.")
        if writer_of(cluster) != name:
            problems.append(f"`{name}` is not the writer of `{target}` (IsClusterWriter is false; the writer is "
                            f"`{writer_of(cluster) or 'none'}`); the endpoint would not accept writes.")
        return problems

    # ---- delete_instance (a scratch cluster and its instances)

    def _protected(self, params: Params) -> str:
        name = str(params["instance"])
        guarded = {str(self.settings.get("cluster") or ""), str(self.settings.get("instance") or ""),
                   str(params.get("source") or "")} - {""}
        if name in guarded or not any(marker in name for marker in SCRATCH_MARKERS):
            return (f"Refusing to delete `{name}`: it is not a scratch cluster created by drbot (the source and "
                    "other clusters are never deleted); delete_instance only removes restores named "
                    "`<source>-pitr-<run id>`, `<source>-verify-<run id>` or `<source>-drill-<run id>`.")
        return ""

    def _plan_delete(self, params: Params) -> dict[str, Any]:
        cluster = self._cluster(str(params["instance"]))
        members = [str(m["DBInstanceIdentifier"]) for m in (cluster or {}).get("DBClusterMembers") or []]
        return {"instance": params["instance"], "status": cluster.get("Status") if cluster else "not found",
                "instances": members,
                "warning": "Deletion is final: the cluster and its instances go, with no final snapshot."}

    def _start_delete(self, params: Params, run_id: str) -> Operation:
        protected = self._protected(params)
        if protected:
            raise PermanentError(protected, provider=self.kind, code="InvalidParameter")
        name = str(params["instance"])
        handle = Operation(provider=self.kind, action="delete_instance", id=f"delete_instance:{name}", target=name)
        self._delete_step(name)
        return handle

    def _delete_step(self, name: str) -> dict[str, Any] | None:
        """Instances first, then the cluster (Aurora refuses to delete a cluster that has members), so start and
        every poll take the next step; each describes first, so repeating one is harmless."""
        cluster = self._cluster(name)
        if cluster is None or cluster.get("Status") == "deleting":
            return cluster
        members = [str(m["DBInstanceIdentifier"]) for m in cluster.get("DBClusterMembers") or []]
        for member in members:
            instance = self._instance(member)
            if instance is not None and instance.get("DBInstanceStatus") != "deleting":
                with aws_errors(provider=self.kind, doing=f"deleting instance `{member}` of `{name}`",
                                subject=member):
                    self.client.delete_db_instance(DBInstanceIdentifier=member)
        if not members or all(self._instance(m) is None for m in members):
            with aws_errors(provider=self.kind, doing=f"deleting scratch cluster `{name}`", subject=name):
                self.client.delete_db_cluster(DBClusterIdentifier=name, SkipFinalSnapshot=True)
        return self._cluster(name)

    def _poll_delete(self, operation: Operation) -> OperationStatus:
        cluster = self._delete_step(operation.target)
        if cluster is None:
            return OperationStatus(done=True, status="deleted", progress=1.0,
                                   outputs={"deleted": True, "instance": operation.target})
        return OperationStatus(done=False, status=f"cluster {cluster.get('Status')}")

    # ---- backup_age (the flow is `integrations.database`'s)

    def _newest_backup(self, source: str) -> dict[str, Any] | None:
        with aws_errors(provider=self.kind, doing=f"listing automated snapshots of `{source}`", subject=source):
            pages = self.client.get_paginator("describe_db_cluster_snapshots").paginate(
                DBClusterIdentifier=source, SnapshotType="automated")
            snapshots = [s for page in pages for s in page["DBClusterSnapshots"] if s.get("SnapshotCreateTime")]
        return dict(max(snapshots, key=lambda s: utc(s["SnapshotCreateTime"]))) if snapshots else None

    def _no_backup(self, source: str) -> str:
        return f"`{source}` has no automated cluster snapshot yet; Aurora takes one daily in the backup window."

    def _age_outputs(self, source: Mapping[str, Any], newest: Mapping[str, Any]) -> dict[str, Any]:
        return backup_age_outputs(taken=utc(newest["SnapshotCreateTime"]), latest=source.get("LatestRestorableTime"),
                                  now=self.clock.now(), backup_id=str(newest["DBClusterSnapshotIdentifier"]))

    # ---- recovery_point (the RPO monitor; `runbooks.ports.RecoveryPointReader`)

    def recovery_point(self) -> RecoveryPoint:
        """The configured cluster's latest restorable time: one DescribeDBClusters (without the tag read `_cluster`
        adds), plus one DescribeDBClusterSnapshots only when Aurora reports no restorable time. Read-only.

        Aurora's retention is at least 1 day, so "backups off" is not expected; it is reported like aws-rds's."""
        name = configured(lambda: self.cluster_id, provider=self.kind)
        setting = f"{self.where}.{self.cluster_setting}"
        try:
            with aws_errors(provider=self.kind, doing=f"describing Aurora cluster `{name}`", subject=name,
                            setting=setting):
                found = self.client.describe_db_clusters(DBClusterIdentifier=name)["DBClusters"]
        except PermanentError as exc:
            if exc.code not in CLUSTER_NOT_FOUND:
                raise
            raise PermanentError(self._missing(name), provider=self.kind, code="DBClusterNotFoundFault") from exc
        if not found:
            raise PermanentError(self._missing(name), provider=self.kind, code="DBClusterNotFoundFault")
        return database_recovery_point(found[0], name=name, noun="Aurora cluster",
                                       id_key="DBClusterSnapshotIdentifier",
                                       snapshots=lambda: self._automated_snapshots(name, setting))

    def _automated_snapshots(self, name: str, setting: str) -> list[dict[str, Any]]:
        """One page (the most RDS returns, 100), not the paginator, so the monitor's two-call budget holds."""
        with aws_errors(provider=self.kind, doing=f"listing automated snapshots of `{name}`", subject=name,
                        setting=setting):
            page = self.client.describe_db_cluster_snapshots(DBClusterIdentifier=name, SnapshotType="automated",
                                                             MaxRecords=100)
        return [dict(s) for s in page.get("DBClusterSnapshots") or []]
