"""Read replica of a flexible server: check it and promote it to a standalone primary.

Promotion uses the current API — PATCH `properties.replica.promoteMode` (`Standalone`, or `Switchover` when
`replica.promote_mode: switchover` is set, which needs virtual endpoints) with `promoteOption` `Planned` (waits for
the replica to catch up) or `Forced` — not the deprecated `replicationRole: None`.

Why the lag is reported as 0 with a note: Azure publishes replica lag only as the Azure Monitor metric
`physical_replication_delay_in_seconds`, which the PostgreSQL management API does not expose; reading it would need
a second SDK. The note tells the operator to check the portal before trusting the RPO.
"""

from __future__ import annotations

from typing import Any

from integrations.azure.common import AzureBase, endpoint
from integrations.common import Params
from runbooks.ports import Operation, OperationStatus

REPLICA_ROLES = frozenset({"AsyncReplica", "GeoAsyncReplica", "Secondary", "WalReplica", "SyncReplica"})
LAG_NOTE = ("Azure exposes replica lag only as the Azure Monitor metric physical_replication_delay_in_seconds; "
            "reported as 0 s — check it in the portal before trusting the RPO.")


class ReplicaActions(AzureBase):
    def _replica(self, name: str) -> dict[str, Any] | None:
        return self._describe(name)

    @staticmethod
    def _role(server: dict[str, Any]) -> str:
        props = server.get("properties") or {}
        return str((props.get("replica") or {}).get("role") or props.get("replicationRole") or "None")

    def _replica_problems(self, name: str) -> list[str]:
        replica = self._replica(name)
        if replica is None:
            return [self._missing(name, "replica.server")]
        if self._role(replica) not in REPLICA_ROLES:
            return [f"`{name}` is not a read replica (its role is {self._role(replica)}); there is nothing to "
                    f"promote — point the runbook at the replica in {self.where}.replica.server."]
        return []

    # ---- check_replica

    def _plan_replica(self, params: Params) -> dict[str, Any]:
        name = str(params["replica"])
        replica = self._replica(name)
        details: dict[str, Any] = {"replica": name}
        if replica is None:
            details["problem"] = self._replica_problems(name)[0]
            return details
        props = replica.get("properties") or {}
        details.update(region=replica.get("location"), status=props.get("state"), role=self._role(replica),
                       replication_state=(props.get("replica") or {}).get("replicationState"),
                       promote_mode=self._promote_mode(), replica_lag_seconds=0, note=LAG_NOTE,
                       warning=(f"Promotion is one-way: `{name}` stops replicating and becomes a standalone "
                                "primary; writes not yet replicated are not on it."))
        return details

    def _start_check(self, params: Params, run_id: str) -> Operation:
        name = self._checked_replica(params)
        replica = self._replica(name) or {}
        props = replica.get("properties") or {}
        word = str((props.get("replica") or {}).get("replicationState") or props.get("state") or "Unknown")
        return self._instant(action="check_replica", target=name, run_id=run_id, status=word, message=LAG_NOTE,
                             outputs={"replica_lag_seconds": 0, "status": word, "region": replica.get("location")})

    # ---- promote_replica

    def _promote_mode(self) -> str:
        return "Switchover" if str(self._settings_replica().get("promote_mode", "")).lower() == "switchover" \
            else "Standalone"

    def _preflight_promote(self, params: Params) -> list[str]:
        name = str(params["replica"])
        problems = self._replica_problems(name)
        replica = self._replica(name) if not problems else None
        state = str((replica.get("properties") or {}).get("state")) if replica else "Ready"
        if state != "Ready":
            problems.append(f"Replica `{name}` is `{state}`; Azure promotes it only once it is Ready — wait, then "
                            "retry.")
        return problems

    def _start_promote(self, params: Params, run_id: str) -> Operation:
        from azure.mgmt.postgresqlflexibleservers import models

        name = str(params["replica"])
        key = f"promote:{name}:{run_id}"
        facts = self._recall(key)
        if facts is None:  # not yet promoted by this run
            self._refuse_replica(self._preflight_promote(params))
            option = str(self._settings_replica().get("promote_option") or "Planned").capitalize()
            patch = models.ServerForPatch(properties=models.ServerPropertiesForPatch(
                replica=models.Replica(promote_mode=self._promote_mode(), promote_option=option)))
            url = self._begin(self.client.servers.begin_update, self.group, name, patch,
                              doing=f"promoting read replica `{name}`", subject=name,
                              setting=f"{self.where}.replica.server")
            facts = self._remember_op(key, url=url, lag=0, note=LAG_NOTE)
        return Operation(provider=self.kind, action="promote_replica", id=f"promote:{name}", target=name,
                         data={"async_url": str(facts.get("async_url") or ""), "lag": int(facts.get("lag", 0)),
                               "note": str(facts.get("note", ""))})

    def _poll_promote(self, operation: Operation) -> OperationStatus:
        status, server = self._follow(operation, what=f"the promotion of `{operation.target}`")
        if status is not None or server is None:
            return status or OperationStatus(done=False, status="Updating")
        if self._role(server) in REPLICA_ROLES:
            return OperationStatus(done=False, status="Promoting", message=str(operation.data.get("note", "")))
        outputs = {"instance": operation.target, "endpoint": endpoint(server),
                   "replica_lag_seconds": int(operation.data.get("lag", 0))}
        return OperationStatus(done=True, status="Ready", progress=1.0, outputs=outputs,
                               message=str(operation.data.get("note", "")))
