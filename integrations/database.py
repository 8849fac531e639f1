"""The database actions every cloud runs alike (aws-rds, aws-aurora, cloudsql, azure-postgres), written once over a
handful of per-cloud hooks.

Why one skeleton: the four clouds answer the same `database.*` vocabulary, and the parts that decide — which
restore time a step asks for, which instances may never be deleted, when a deletion has finished, what "no backup
yet" means — must read and refuse alike everywhere. Each cloud keeps what really differs: how it describes an
instance (`_describe`), its state words (`_state`, `deleting_state`), the call that deletes (`_delete`), and where
its newest backup comes from (`_newest_backup`, `_no_backup`, `_age_outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from integrations.common import CloudProvider, Params, is_latest
from runbooks.errors import PermanentError
from runbooks.ports import Operation, OperationStatus
from runbooks.timeline import iso

SCRATCH_MARKERS = ("-pitr-", "-verify-", "-drill-")
"""What drbot puts in the names of the instances it creates; delete_instance removes nothing else."""

__all__ = ["SCRATCH_MARKERS", "DatabaseActions", "outside_window", "promotion_warning"]


def promotion_warning(name: str, lag: Any) -> str:
    """What the approver of a promotion is told it costs."""
    return (f"Promotion is one-way: `{name}` stops replicating and becomes a standalone primary; writes from the "
            f"last ~{lag} s are not on it.")


def outside_window(name: Any, moment: datetime | None, window: tuple[datetime, datetime]) -> str:
    """The refusal for a restore time outside `[earliest, latest]`; empty when it is inside (or `latest`)."""
    earliest, latest = window
    if moment is None or earliest <= moment <= latest:
        return ""
    return (f"Restore time {iso(moment)} is outside the restorable window of `{name}` ({iso(earliest)} to "
            f"{iso(latest)}); pick a time between {iso(earliest)} and {iso(latest)}, or use `latest`.")


class DatabaseActions(CloudProvider):
    """The shared flows; a cloud's base class puts this under its own describe helpers, which fill the hooks."""

    deleting_state: ClassVar[str] = ""
    """The state word of an instance being deleted: `start` attaches to it instead of deleting again."""
    no_backup_code: ClassVar[str] = ""
    """The error code when `backup_age` finds no backup."""
    age_status: ClassVar[str] = ""
    """The status `backup_age` reports, in the cloud's own words."""
    replica_state_code: ClassVar[str] = ""
    """The error code when the replica is not in a state to be checked or promoted."""

    # ---- hooks

    def _describe(self, name: str) -> dict[str, Any] | None:
        """The instance (or cluster, or server), or None when the cloud says it does not exist."""
        raise NotImplementedError

    def _missing(self, name: Any) -> str:
        """The sentence for an instance that does not exist, naming the drbot.yml key to check."""
        raise NotImplementedError

    def _require_instance(self, name: str) -> dict[str, Any]:
        """`_describe`, raising the cloud's not-found error when there is nothing."""
        raise NotImplementedError

    def _state(self, found: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def _replica_settings(self) -> Mapping[str, Any]:
        return {}

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    def _describe_scratch(self, name: str) -> dict[str, Any] | None:
        """The scratch instance `delete_instance` is about to remove; a cloud whose drills create instances in
        another region (a drill's replica) also looks there."""
        return self._describe(name)

    def _replica_problems(self, name: str) -> list[str]:
        """Why the replica `name` cannot be checked (missing, not a replica of the source, …); empty when it can."""
        raise NotImplementedError

    def _newest_backup(self, source: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _no_backup(self, source: str) -> str:
        raise NotImplementedError

    def _age_outputs(self, source: Mapping[str, Any], newest: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _deletable(self, found: Mapping[str, Any], name: str) -> list[str]:
        """Problems with deleting an existing scratch instance now; none unless the cloud says otherwise."""
        return []

    # ---- restore_pitr / restore_latest_backup

    def _wanted(self, params: Params) -> datetime | None:
        """The restore time the step asks for, or None for the latest restorable time."""
        raw = params.get("restore_time")
        if params.get("use_latest") or is_latest(raw):
            return None
        return self._time(raw, "restore_time")

    # ---- check_replica / promote_replica

    def _preflight_check(self, params: Params) -> list[str]:
        return self._replica_problems(str(params["replica"]))

    def _checked_replica(self, params: Params) -> str:
        """The replica's name, once `_replica_problems` finds nothing wrong with it."""
        name = str(params["replica"])
        self._refuse_replica(self._replica_problems(name))
        return name

    def _refuse_replica(self, problems: list[str]) -> None:
        if problems:
            raise PermanentError(problems[0], provider=self.kind, code=self.replica_state_code)

    # ---- delete_instance

    def _protected(self, params: Params) -> str:
        name = str(params["instance"])
        guarded = {str(self.settings.get("instance") or ""), str(params.get("source") or ""),
                   str(self._replica_settings().get("instance") or "")} - {""}
        if name in guarded or not any(marker in name for marker in SCRATCH_MARKERS):
            return (f"Refusing to delete `{name}`: it is not a scratch instance created by drbot (the source, its "
                    "replica and other instances are never deleted); delete_instance only removes restores named "
                    "`<source>-pitr-<run id>`, `<source>-verify-<run id>` or `<source>-drill-<run id>`.")
        return ""

    def _preflight_delete(self, params: Params) -> list[str]:
        protected = self._protected(params)
        if protected:
            return [protected]
        found = self._describe_scratch(str(params["instance"]))
        if found is None:
            return [self._missing(params["instance"])]
        return self._deletable(found, str(params["instance"]))

    def _start_delete(self, params: Params, run_id: str) -> Operation:
        protected = self._protected(params)
        if protected:
            raise PermanentError(protected, provider=self.kind, code="InvalidParameter")
        name = str(params["instance"])
        found = self._describe_scratch(name)
        handle = Operation(provider=self.kind, action="delete_instance", id=f"delete_instance:{name}", target=name)
        if found is None or self._state(found) == self.deleting_state:
            return handle  # already gone or going: attach
        self._delete(name)
        return handle

    def _poll_delete(self, operation: Operation) -> OperationStatus:
        found = self._describe_scratch(operation.target)
        if found is None:
            return OperationStatus(done=True, status="deleted", progress=1.0,
                                   outputs={"deleted": True, "instance": operation.target})
        return OperationStatus(done=False, status=self._state(found))

    # ---- backup_age

    def _plan_age(self, params: Params) -> dict[str, Any]:
        return {"source": params["source"]}

    def _preflight_age(self, params: Params) -> list[str]:
        source = str(params["source"])
        if self._describe(source) is None:
            return [self._missing(source)]
        if self._newest_backup(source) is None:
            return [self._no_backup(source)]
        return []

    def _start_age(self, params: Params, run_id: str) -> Operation:
        name = str(params["source"])
        source = self._require_instance(name)
        newest = self._newest_backup(name)
        if newest is None:
            raise PermanentError(self._no_backup(name), provider=self.kind, code=self.no_backup_code)
        return self._instant(action="backup_age", target=name, run_id=run_id, status=self.age_status,
                             outputs=self._age_outputs(source, newest))
