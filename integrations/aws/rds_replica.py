"""Cross-region read replica: check it and promote it to a standalone primary.

Why the lag is read *before* promoting: once promoted the replica stops replicating and its lag is gone, yet that
number is the RPO of a region failover. RDS reports it only as the CloudWatch metric `ReplicaLag` (seconds); moto
has no such metric, so when CloudWatch has no datapoint drbot reports 0 and says so in the operation's message.

Why promotion is "done" only when the instance is `available` *and* no longer names a source: right after
`PromoteReadReplica` RDS may still report `available` for a moment before `modifying`. moto never clears the
source (a fidelity gap), so after `settings.replica.promote_settle_seconds` (default 300) of `available` drbot
accepts it as promoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from integrations.aws.base import utc
from integrations.aws.errors import aws_errors
from integrations.aws.rds_common import FAILED, RdsBase, endpoint
from integrations.common import Params
from integrations.database import promotion_warning
from runbooks.errors import PermanentError
from runbooks.ports import Operation, OperationStatus
from runbooks.timeline import iso

LAG_LOOKBACK = timedelta(minutes=10)


class ReplicaActions(RdsBase):
    def _replica_settings(self) -> Mapping[str, Any]:
        replica = self.settings.get("replica")
        return replica if isinstance(replica, Mapping) else {}

    def _replica(self, name: str) -> dict[str, Any] | None:
        return self._describe(name, client=self.replica_client)

    def _replica_lag(self, name: str) -> tuple[int, str]:
        """(seconds, note). The newest `ReplicaLag` datapoint of the last ten minutes."""
        now = self.clock.now()
        with aws_errors(provider=self.kind, doing=f"reading the ReplicaLag metric of `{name}`"):
            points = self.cloudwatch.get_metric_statistics(
                Namespace="AWS/RDS", MetricName="ReplicaLag",
                Dimensions=[{"Name": "DBInstanceIdentifier", "Value": name}],
                StartTime=now - LAG_LOOKBACK, EndTime=now + timedelta(minutes=1), Period=60,
                Statistics=["Maximum"])["Datapoints"]
        if not points:
            return 0, (f"CloudWatch has no ReplicaLag datapoint for `{name}` in the last 10 minutes; lag reported "
                       "as 0 s — check the replica's lag in the console before trusting the RPO.")
        newest = max(points, key=lambda p: utc(p["Timestamp"]))
        return int(round(float(newest["Maximum"]))), ""

    def _replica_problems(self, name: str) -> list[str]:
        replica = self._replica(name)
        if replica is None:
            return [self._missing(name, "replica.instance").replace(
                str(self.settings.get("region", "the configured region")), str(self.replica_region))]
        if not replica.get("ReadReplicaSourceDBInstanceIdentifier"):
            return [f"`{name}` is not a read replica (it is a standalone primary); there is nothing to promote — "
                    f"point the runbook at the replica in {self.where}.replica.instance."]
        return []

    # ---- check_replica

    def _plan_replica(self, params: Params) -> dict[str, Any]:
        name = str(params["replica"])
        details: dict[str, Any] = {"replica": name, "region": self.replica_region}
        replica = self._replica(name)
        if replica is None:
            details["problem"] = self._replica_problems(name)[0]
            return details
        lag, note = self._replica_lag(name)
        details.update(status=replica.get("DBInstanceStatus"), replica_lag_seconds=lag,
                       source=replica.get("ReadReplicaSourceDBInstanceIdentifier"),
                       warning=promotion_warning(name, lag))
        if note:
            details["note"] = note
        return details

    def _start_check(self, params: Params, run_id: str) -> Operation:
        name = self._checked_replica(params)
        replica = self._replica(name) or {}
        status = str(replica.get("DBInstanceStatus"))
        infos = [str(i.get("Status")) for i in replica.get("StatusInfos") or [] if i.get("StatusType") ==
                 "read replication"]
        lag, note = self._replica_lag(name)
        word = infos[0] if infos else ("replicating" if status == "available" else status)
        return self._instant(action="check_replica", target=name, run_id=run_id, status=word, message=note,
                             outputs={"replica_lag_seconds": lag, "status": word, "region": self.replica_region})

    # ---- promote_replica

    def _preflight_promote(self, params: Params) -> list[str]:
        name = str(params["replica"])
        problems = self._replica_problems(name)
        replica = self._replica(name) if not problems else None
        if replica is not None:
            status = str(replica.get("DBInstanceStatus"))
            if status == "backing-up":
                problems.append(f"Replica `{name}` is `backing-up`; RDS refuses to promote until the backup "
                                "finishes. Wait until it is `available`, then retry.")
            elif status != "available":
                problems.append(f"Replica `{name}` is `{status}`; wait until it is `available`.")
        return problems

    def _start_promote(self, params: Params, run_id: str) -> Operation:
        name = str(params["replica"])
        key = f"promote:{name}:{run_id}"
        remembered = self._recall(key)
        if remembered is not None:  # this run already promoted it: attach
            return self._promotion(name, remembered)
        self._refuse_replica(self._preflight_promote(params))
        lag, note = self._replica_lag(name)  # before promoting: it is the RPO
        facts = {"lag": lag, "note": note, "started_at": iso(self.clock.now())}
        self._remember(key, facts)
        retention = int(self._replica_settings().get("backup_retention_days", 7))
        with aws_errors(provider=self.kind, doing=f"promoting read replica `{name}`", subject=name,
                        setting=f"{self.where}.replica.instance"):
            self.replica_client.promote_read_replica(DBInstanceIdentifier=name, BackupRetentionPeriod=retention)
        return self._promotion(name, facts)

    def _promotion(self, name: str, facts: Mapping[str, Any]) -> Operation:
        return Operation(provider=self.kind, action="promote_replica", id=f"promote:{name}", target=name,
                         data={"lag": int(facts["lag"]), "note": str(facts.get("note", "")),
                               "started_at": str(facts["started_at"])})

    def _poll_promote(self, operation: Operation) -> OperationStatus:
        name = operation.target
        replica = self._replica(name)
        if replica is None:
            raise PermanentError(f"Promoted replica `{name}` no longer exists (DBInstanceNotFound); check the RDS "
                                 "console for a deletion.", provider=self.kind, code="DBInstanceNotFound")
        status = str(replica.get("DBInstanceStatus"))
        if status in FAILED:
            return OperationStatus(done=True, failed=True, status=status,
                                   message=f"Promotion of `{name}` ended in `{status}`.")
        settle = float(self._replica_settings().get("promote_settle_seconds", 300))
        started = utc(datetime.fromisoformat(str(operation.data["started_at"]).replace("Z", "+00:00")))
        settled = (self.clock.now() - started).total_seconds() >= settle
        standalone = not replica.get("ReadReplicaSourceDBInstanceIdentifier")
        if status != "available" or not (standalone or settled):
            return OperationStatus(done=False, status=status if status != "available" else "promoting",
                                   message=str(operation.data.get("note", "")))
        outputs = {"instance": name, "endpoint": endpoint(replica),
                   "replica_lag_seconds": int(operation.data["lag"])}
        return OperationStatus(done=True, status=status, progress=1.0, outputs=outputs,
                               message=str(operation.data.get("note", "")))
