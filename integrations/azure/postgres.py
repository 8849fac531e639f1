"""Azure Database for PostgreSQL Flexible Server (`provider: azure-postgres`): point-in-time and geo restores into
a new server, replica check and promotion (`replica.py`), and deletion of drbot's scratch servers.

Idempotency: the target name is deterministic (`<source>-pitr-<run short id>`) and drbot tags what it creates
(`drbot-run`, `drbot-source`, `drbot-restore-time`). `start` reads the target first; a server this run created is
attached to (its LRO status URL comes back from the StateStore), anything else with that name is refused.

Why the restorable window ends at "now": Azure restores to any second from `backup.earliestRestoreDate` up to the
present (it replays the WAL), unlike RDS's `LatestRestorableTime`.

`integrity_check` connects to the restored server with SQL (`integrations.integrity`): at its
`fullyQualifiedDomainName`, port 5432, or at `integrity.host`/`port` when a tunnel is configured. `backup_age` is not
offered: it needs the backups API.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from integrations.azure.common import SCRATCH_MARKERS, TAG_RUN, TAG_SOURCE, TAG_TIME, endpoint, server_tags, to_utc
from integrations.azure.replica import ReplicaActions
from integrations.common import ActionImpl, Params
from integrations.database import outside_window
from integrations.integrity import IntegrityActions
from runbooks.errors import ConfigError, PermanentError
from runbooks.planning import run_short
from runbooks.ports import Operation, OperationStatus, RecoveryPoint
from runbooks.timeline import iso

PITR, GEO = "PointInTimeRestore", "GeoRestore"
CONTINUOUS = frozenset({"Ready", "Succeeded"})
"""Server states in which the WAL is archived continuously, so the latest restore point is now."""
CONFLICT = frozenset({"409", "Conflict", "ServerNameAlreadyExists", "ResourceExists", "OperationInProgress"})


class AzurePostgres(IntegrityActions, ReplicaActions):
    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "restore_pitr": ActionImpl(self._plan_pitr, self._preflight_pitr, self._start_pitr, self._poll_restore),
            "restore_latest_backup": ActionImpl(self._plan_backup, self._preflight_backup, self._start_backup,
                                                self._poll_restore),
            "check_replica": ActionImpl(self._plan_replica, self._preflight_check, self._start_check),
            "promote_replica": ActionImpl(self._plan_replica, self._preflight_promote, self._start_promote,
                                          self._poll_promote),
            "delete_instance": ActionImpl(self._plan_delete, self._preflight_delete, self._start_delete,
                                          self._poll_delete),
            "integrity_check": self._integrity_impl(),
        }

    def _integrity_endpoint(self, instance: str) -> tuple[str, int] | None:
        found = self._describe(instance)
        return None if found is None else (endpoint(found), 5432)

    # ---- the RPO monitor's read (`runbooks.ports.RecoveryPointReader`): one servers.get

    def recovery_point(self) -> RecoveryPoint:
        """The newest point `server` can be restored to: now, for a Ready server with a backup (Azure archives the
        WAL continuously and restores to any second since `backup.earliestRestoreDate`); None otherwise, with the
        state or the missing backup as the cause. One call, nothing written."""
        try:
            name = self._setting("server", "rag-engine-prod")
            self._setting("subscription", "00000000-0000-0000-0000-000000000000")
            self._setting("resource_group", "dr-rg")
        except ConfigError as exc:
            raise PermanentError(exc.message, provider=self.kind, code="ConfigError") from exc
        server = self._describe(name)
        if server is None:
            raise PermanentError(self._missing(name), provider=self.kind, code="ResourceNotFound")
        properties = server.get("properties") or {}
        state = str(properties.get("state") or "unknown")
        backup = properties.get("backup") or {}
        try:
            earliest = to_utc(backup.get("earliestRestoreDate"))
        except ValueError:
            earliest = None
        days = backup.get("backupRetentionDays")
        if state not in CONTINUOUS:
            return RecoveryPoint(newest=None, what="no continuous backup", calls=1,
                                 cause=f"server {name} is {state}, not Ready, so its WAL is not being archived")
        if earliest is None or not days:
            missing = "backup.earliestRestoreDate" if earliest is None else "backup.backupRetentionDays"
            return RecoveryPoint(newest=None, what="no continuous backup", calls=1,
                                 cause=f"server {name} is {state} but reports no {missing}: it has no backup yet")
        return RecoveryPoint(newest=self.clock.now(), calls=1,
                             what=f"continuous backup (earliest restore {iso(earliest)}, retention {days} days)")

    # ---- restore window

    def _window(self, server: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
        backup = (server.get("properties") or {}).get("backup") or {}
        earliest = to_utc(backup.get("earliestRestoreDate"))
        return None if earliest is None else (earliest, self.clock.now().replace(microsecond=0))

    def _window_problem(self, name: str, moment: datetime | None, window: tuple[datetime, datetime] | None) -> str:
        if window is None:
            return (f"`{name}` reports no earliest restore date (backup.earliestRestoreDate), so it has no "
                    "restorable window yet; wait for its first backup, then retry.")
        return outside_window(name, moment, window)

    def _own(self, server: Mapping[str, Any], *, source: str, run_id: str | None = None) -> bool:
        marks = server_tags(server)
        run = marks.get(TAG_RUN)
        if not run or marks.get(TAG_SOURCE) != source or (run_id is not None and run != run_id):
            return False
        return str(server.get("name", "")).endswith(run_short(run))

    def _target_problems(self, params: Params) -> list[str]:
        target, source = str(params["target"]), str(params["source"])
        existing = self._describe(target)
        if existing is None or self._own(existing, source=source):
            return []
        return [f"Target server `{target}` already exists and was not created by drbot for this run; choose "
                "another name (drbot uses `<source>-pitr-<run id>`) or delete it first."]

    # ---- restore_pitr / restore_latest_backup

    def _plan_pitr(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"source": params["source"], "target": params["target"],
                                   "resource_group": self.settings.get("resource_group"),
                                   "note": "Creates a new server; the source is not touched."}
        source = self._describe(str(params["source"]))
        if source is None:
            details["problem"] = self._missing(params["source"])
            return details
        window, wanted = self._window(source), self._wanted(params)
        details.update(region=source.get("location"), create_mode=PITR,
                       version=(source.get("properties") or {}).get("version"))
        if window is not None:
            details["restorable_window"] = {"earliest": iso(window[0]), "latest": iso(window[1])}
            details["restore_time"] = iso(wanted or window[1])
        problem = self._window_problem(str(params["source"]), wanted, window)
        if problem:
            details["problem"] = problem
        return details

    def _preflight_pitr(self, params: Params) -> list[str]:
        source = self._describe(str(params["source"]))
        if source is None:
            return [self._missing(params["source"])]
        state = str((source.get("properties") or {}).get("state"))
        problems = [] if state in {"Ready", "Updating"} else [
            f"Source server `{params['source']}` is `{state}`; wait until it is Ready, then retry."]
        try:
            problem = self._window_problem(str(params["source"]), self._wanted(params), self._window(source))
        except PermanentError as exc:
            problem = exc.message
        return problems + [p for p in [problem] if p] + self._target_problems(params)

    def _start_pitr(self, params: Params, run_id: str) -> Operation:
        return self._restore(params, run_id, action="restore_pitr", wanted=self._wanted(params), mode=PITR)

    def _restore(self, params: Params, run_id: str, *, action: str, wanted: datetime | None, mode: str) -> Operation:
        from azure.mgmt.postgresqlflexibleservers import models

        source_name, target = str(params["source"]), str(params["target"])
        existing = self._describe(target)
        if existing is not None:
            return self._attach(existing, action=action, source=source_name, run_id=run_id, wanted=wanted)
        source = self._describe(source_name)
        if source is None:
            raise PermanentError(self._missing(source_name), provider=self.kind, code="ResourceNotFound")
        window = self._window(source)
        moment = wanted or (window[1] if window else self.clock.now().replace(microsecond=0))
        if mode == PITR:
            problem = self._window_problem(source_name, wanted, window)
            if problem:
                raise PermanentError(problem, provider=self.kind, code="InvalidRestoreTime")
        location = str(self.settings.get("geo_location") or self.location) if mode == GEO else \
            str(source.get("location") or self.location)
        properties = models.ServerProperties(create_mode=mode, source_server_resource_id=self._server_id(source_name),
                                             point_in_time_utc=moment if mode == PITR else None)
        body = models.Server(location=location, properties=properties,
                             tags={TAG_RUN: run_id, TAG_SOURCE: source_name, TAG_TIME: iso(moment)})
        try:
            url = self._begin(self.client.servers.begin_create_or_update, self.group, target, body,
                              doing=f"restoring `{source_name}` into `{target}` ({mode})", subject=source_name,
                              setting=f"{self.where}.server")
        except PermanentError as exc:
            raced = self._describe(target) if exc.code in CONFLICT else None
            if raced is None:  # not a lost race: another start of this run did not create it
                raise
            return self._attach(raced, action=action, source=source_name, run_id=run_id, wanted=wanted)
        self._remember_op(f"restore:{target}:{run_id}", url=url, restore_time=iso(moment))
        return self._handle(action=action, target=target, moment=moment, url=url, mode=mode)

    def _attach(self, existing: Mapping[str, Any], *, action: str, source: str, run_id: str,
                wanted: datetime | None) -> Operation:
        target = str(existing.get("name"))
        if not self._own(existing, source=source, run_id=run_id):
            raise PermanentError(f"ServerAlreadyExists: `{target}` already exists and was not created by this "
                                 "restore; choose another target name or delete it first.", provider=self.kind,
                                 code="ServerAlreadyExists")
        restored_to = server_tags(existing).get(TAG_TIME, "")
        if wanted is not None and restored_to and restored_to != iso(wanted):
            raise PermanentError(f"ServerAlreadyExists: `{target}` was already restored to {restored_to}, not "
                                 f"{iso(wanted)}; delete it or use a new run for a different restore time.",
                                 provider=self.kind, code="ServerAlreadyExists")
        facts = self._recall(f"restore:{target}:{run_id}") or {}
        moment = to_utc(restored_to) or wanted or self.clock.now()
        mode = str((existing.get("properties") or {}).get("createMode") or PITR)
        return self._handle(action=action, target=target, moment=moment, url=str(facts.get("async_url") or ""),
                            mode=mode)

    def _handle(self, *, action: str, target: str, moment: datetime, url: str, mode: str) -> Operation:
        return Operation(provider=self.kind, action=action, id=f"{action}:{target}", target=target,
                         data={"restore_time": iso(moment), "async_url": url, "create_mode": mode})

    def _poll_restore(self, operation: Operation) -> OperationStatus:
        status, server = self._follow(operation, what=f"the restore into `{operation.target}`")
        if status is not None or server is None:
            return status or OperationStatus(done=False, status="Provisioning")
        outputs: dict[str, Any] = {"instance": operation.target, "endpoint": endpoint(server),
                                   "restore_time": operation.data["restore_time"]}
        if operation.action == "restore_latest_backup":
            outputs["backup_id"] = f"{operation.data.get('create_mode', PITR)}@{operation.data['restore_time']}"
        return OperationStatus(done=True, status="Ready", progress=1.0, outputs=outputs)

    def _geo(self) -> bool:
        return bool(self.settings.get("geo_restore"))

    def _plan_backup(self, params: Params) -> dict[str, Any]:
        details = self._plan_pitr({**params, "use_latest": True})
        if self._geo():
            details.update(create_mode=GEO, region=self.settings.get("geo_location") or self.location,
                           note="Geo-restores the newest geo-redundant backup into the paired region; the source is "
                                "not touched.")
        return details

    def _preflight_backup(self, params: Params) -> list[str]:
        return self._preflight_pitr({**params, "use_latest": True})

    def _start_backup(self, params: Params, run_id: str) -> Operation:
        return self._restore(params, run_id, action="restore_latest_backup", wanted=None,
                             mode=GEO if self._geo() else PITR)

    # ---- delete_instance

    def _refusal(self, params: Params, server: Mapping[str, Any] | None) -> str:
        """Why `instance` may not be deleted (empty when it may): Azure also demands drbot's tag on it."""
        name = str(params["instance"])
        guarded = {str(self.settings.get("server") or ""), str(params.get("source") or ""),
                   str(self._settings_replica().get("server") or "")} - {""}
        made_by_drbot = server is None or TAG_RUN in server_tags(server)
        if name in guarded or not any(m in name for m in SCRATCH_MARKERS) or not made_by_drbot:
            return (f"Refusing to delete `{name}`: it is not a scratch server created by drbot (the source, its "
                    "replica and untagged servers are never deleted); delete_instance only removes restores named "
                    "`<source>-pitr-<run id>` that carry drbot's `drbot-run` tag.")
        return ""

    def _plan_delete(self, params: Params) -> dict[str, Any]:
        server = self._describe(str(params["instance"]))
        return {"instance": params["instance"],
                "status": (server.get("properties") or {}).get("state") if server else "not found",
                "warning": "Deletion is final; the scratch server's backups go with it."}

    def _preflight_delete(self, params: Params) -> list[str]:
        server = self._describe(str(params["instance"]))
        protected = self._refusal(params, server)
        if protected:
            return [protected]
        return [self._missing(params["instance"], "instance")] if server is None else []

    def _start_delete(self, params: Params, run_id: str) -> Operation:
        name = str(params["instance"])
        server = self._describe(name)
        protected = self._refusal(params, server)
        if protected:
            raise PermanentError(protected, provider=self.kind, code="InvalidParameter")
        key = f"delete:{name}:{run_id}"
        facts = self._recall(key)
        if facts is None and server is not None:
            url = self._begin(self.client.servers.begin_delete, self.group, name,
                              doing=f"deleting scratch server `{name}`", subject=name)
            facts = self._remember_op(key, url=url)
        return Operation(provider=self.kind, action="delete_instance", id=f"delete_instance:{name}", target=name,
                         data={"async_url": str((facts or {}).get("async_url") or "")})

    def _poll_delete(self, operation: Operation) -> OperationStatus:
        url = str(operation.data.get("async_url") or "")
        if url:
            status, error = self._lro_status(url, doing=f"reading the status of deleting `{operation.target}`")
            if status in {"Failed", "Canceled"}:
                return OperationStatus(done=True, failed=True, status=status,
                                       message=f"Azure could not delete `{operation.target}` ({error}).")
            if status != "Succeeded":
                return OperationStatus(done=False, status=status)
        server = self._describe(operation.target)
        if server is not None:
            return OperationStatus(done=False, status=str((server.get("properties") or {}).get("state") or
                                                          "Dropping"))
        return OperationStatus(done=True, status="Deleted", progress=1.0,
                               outputs={"deleted": True, "instance": operation.target})
