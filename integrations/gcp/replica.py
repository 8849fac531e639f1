"""Cross-region read replica: check it and promote it to a standalone primary (`instances.promoteReplica`).

Why the lag comes from settings: the Cloud SQL Admin API does not report replication lag (it is the Cloud
Monitoring metric `cloudsql.googleapis.com/database/replication/replica_lag`). drbot reports
`replica.lag_seconds` from drbot.yml when set, else 0 with a note saying the RPO is unchecked.

Why promotion is followed through the returned operation: `promoteReplica` answers at once with a Cloud SQL
`Operation`; the instance only stops being a replica when that operation is DONE without `error.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.common import Params
from integrations.database import promotion_warning
from integrations.gcp.base import CloudSqlBase, endpoint
from integrations.gcp.errors import gcp_errors
from runbooks.ports import Operation, OperationStatus
from runbooks.timeline import iso

REPLICA_TYPE = "READ_REPLICA_INSTANCE"


class ReplicaActions(CloudSqlBase):
    def _replica_settings(self) -> Mapping[str, Any]:
        replica = self.settings.get("replica")
        return replica if isinstance(replica, Mapping) else {}

    def _replica_region(self, instance: Mapping[str, Any] | None) -> str | None:
        region = (instance or {}).get("region") or self._replica_settings().get("region") or \
            self.settings.get("region")
        return str(region) if region else None

    def _replica_lag(self, name: str) -> tuple[int, str]:
        configured = self._replica_settings().get("lag_seconds")
        if configured is not None:
            return int(configured), ""
        return 0, (f"The Cloud SQL Admin API does not report replication lag for `{name}`; lag reported as 0 s — "
                   "check the replica_lag metric in Cloud Monitoring before trusting the RPO.")

    def _replica_problems(self, name: str) -> list[str]:
        replica = self._describe(name, setting="replica.instance")
        if replica is None:
            return [self._missing(name, "replica.instance")]
        if replica.get("instanceType") != REPLICA_TYPE and not replica.get("masterInstanceName"):
            return [f"`{name}` is not a read replica (it is a standalone primary); there is nothing to promote — "
                    f"point the runbook at the replica in {self.where}.replica.instance."]
        return []

    # ---- check_replica

    def _plan_replica(self, params: Params) -> dict[str, Any]:
        name = str(params["replica"])
        replica = self._describe(name, setting="replica.instance")
        details: dict[str, Any] = {"replica": name, "region": self._replica_region(replica)}
        if replica is None:
            details["problem"] = self._missing(name, "replica.instance")
            return details
        lag, note = self._replica_lag(name)
        details.update(status=replica.get("state"), replica_lag_seconds=lag, source=replica.get("masterInstanceName"),
                       warning=promotion_warning(name, lag))
        if note:
            details["note"] = note
        return details

    def _start_check(self, params: Params, run_id: str) -> Operation:
        name = self._checked_replica(params)
        replica = self._describe(name, setting="replica.instance") or {}
        state = str(replica.get("state"))
        replicating = (replica.get("settings") or {}).get("databaseReplicationEnabled", True)
        word = "replicating" if state == "RUNNABLE" and replicating else (state if replicating else "stopped")
        lag, note = self._replica_lag(name)
        return self._instant(action="check_replica", target=name, run_id=run_id, status=word, message=note,
                             outputs={"replica_lag_seconds": lag, "status": word,
                                      "region": self._replica_region(replica)})

    # ---- promote_replica

    def _preflight_promote(self, params: Params) -> list[str]:
        name = str(params["replica"])
        problems = self._replica_problems(name)
        if problems:
            return problems
        replica = self._describe(name, setting="replica.instance") or {}
        state = str(replica.get("state"))
        if state != "RUNNABLE":
            problems.append(f"Replica `{name}` is `{state}`; Cloud SQL promotes it only when it is `RUNNABLE`.")
        return problems

    def _start_promote(self, params: Params, run_id: str) -> Operation:
        name = str(params["replica"])
        key = f"promote:{name}:{run_id}"
        remembered = self._recall(key)
        if remembered is not None:  # this run already promoted it: attach
            return self._promotion(name, remembered)
        self._refuse_replica(self._preflight_promote(params))
        lag, note = self._replica_lag(name)  # before promoting: it is the RPO
        with gcp_errors(provider=self.kind, doing=f"promoting read replica `{name}`", subject=name,
                        setting=f"{self.where}.replica.instance", permission="cloudsql.instances.promoteReplica"):
            op = self.client.instances().promoteReplica(project=self.project, instance=name,
                                                        failover=False).execute()
        facts = {"lag": lag, "note": note, "started_at": iso(self.clock.now()), "operation": str(op.get("name"))}
        self._remember(key, facts)
        return self._promotion(name, facts)

    def _promotion(self, name: str, facts: Mapping[str, Any]) -> Operation:
        return Operation(provider=self.kind, action="promote_replica", id=f"promote:{name}", target=name,
                         data={"lag": int(facts["lag"]), "note": str(facts.get("note", "")),
                               "operation": str(facts.get("operation", ""))})

    def _poll_promote(self, operation: Operation) -> OperationStatus:
        name = operation.target
        note = str(operation.data.get("note", ""))
        if operation.data.get("operation"):
            op = self._operation(str(operation.data["operation"]))
            status = str(op.get("status"))
            if status != "DONE":
                return OperationStatus(done=False, status=status, message=note)
            failure = self._operation_failure(op)
            if failure:
                return OperationStatus(done=True, failed=True, status=status,
                                       message=f"Cloud SQL could not promote `{name}`: {failure}")
        replica = self._require_instance(name, "replica.instance")
        state = str(replica.get("state"))
        if state != "RUNNABLE" or replica.get("instanceType") == REPLICA_TYPE:
            return OperationStatus(done=False, status=state if state != "RUNNABLE" else "promoting", message=note)
        return OperationStatus(done=True, status=state, progress=1.0, message=note,
                               outputs={"instance": name, "endpoint": endpoint(replica),
                                        "replica_lag_seconds": int(operation.data["lag"])})
