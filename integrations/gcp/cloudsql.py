"""Google Cloud SQL (`provider: cloudsql`): point-in-time and latest-state clones into a new instance, replica check
and promotion (`replica.py`), scratch-instance deletion and backup age.

Idempotency: the target name is deterministic (`<source>-pitr-<run short id>`). A clone cannot carry labels, so
drbot remembers what it started (source, run, restore time, operation name) in the StateStore under
`restore:<target>`. `start` describes the target first: an instance this run made (remembered, or named with the
run's short id) is attached to, anything else with that name is refused; an HTTP 409 race is resolved the same way.

The restorable window comes from `getLatestRecoveryTime` (`earliestRecoveryTime`, `latestRecoveryTime`); when
Google leaves out the earliest bound drbot uses now − `transactionLogRetentionDays` of the source's settings.
`integrity_check` connects to the restored instance with SQL (`integrations.integrity`): at its primary IP, port
5432, or at `integrity.host`/`port` — typically cloud-sql-proxy on 127.0.0.1 for instances with private IPs only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.common import ActionImpl, Params
from integrations.database import outside_window
from integrations.gcp.base import endpoint, parse_time
from integrations.gcp.errors import gcp_errors
from integrations.gcp.replica import ReplicaActions
from integrations.integrity import IntegrityActions
from runbooks.errors import ConfigError, PermanentError, ProviderError
from runbooks.planning import run_short
from runbooks.ports import Operation, OperationStatus, RecoveryPoint
from runbooks.timeline import iso

FAILED = frozenset({"FAILED", "SUSPENDED"})
RECENT_RUNS = 10
"""How many of the newest backup runs the RPO read lists (its second and last call)."""


class CloudSql(IntegrityActions, ReplicaActions):
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
            "backup_age": ActionImpl(self._plan_age, self._preflight_age, self._start_age),
            "integrity_check": self._integrity_impl(),
        }

    def _integrity_endpoint(self, instance: str) -> tuple[str, int] | None:
        found = self._describe(instance)
        return None if found is None else (endpoint(found), 5432)

    # ---- the RPO monitor's read (`runbooks.ports.RecoveryPointReader`): instances.get + backupRuns.list

    def recovery_point(self) -> RecoveryPoint:
        """The newest point `instance` can be restored to. With point-in-time recovery on, Cloud SQL's own latest
        recovery time (`getLatestRecoveryTime`: it lags when log archiving stalls, which is what the monitor must
        see); otherwise the newest SUCCESSFUL backup run, with the FAILED runs among the newest ten as `failed`.
        Two calls at most, nothing written."""
        try:
            name = self._setting("instance", "rag-engine-prod")
            project = self.project
        except ConfigError as exc:
            raise PermanentError(exc.message, provider=self.kind, code="ConfigError") from exc
        instance = self._require_instance(name)
        backups = (instance.get("settings") or {}).get("backupConfiguration") or {}
        pitr = bool(backups.get("pointInTimeRecoveryEnabled"))
        if not pitr and backups.get("enabled") is False:
            return RecoveryPoint(newest=None, what="no backup (automated backups off)",
                                 cause=f"automated backups are off for {name}", calls=1)
        if pitr:
            window = self._window(instance)
            assert window is not None
            return RecoveryPoint(newest=window[1], what="latest recovery time (point-in-time recovery on)", calls=2,
                                 cause="transaction log archiving is behind: the latest recovery time is not "
                                       "advancing")
        with gcp_errors(provider=self.kind, doing=f"listing the backup runs of `{name}`", subject=name,
                        setting=f"{self.where}.instance", permission="cloudsql.backupRuns.list"):
            runs = self.client.backupRuns().list(project=project, instance=name,
                                                 maxResults=RECENT_RUNS).execute().get("items") or []
        epoch = datetime.min.replace(tzinfo=UTC)
        dated = sorted(((_run_time(run), dict(run)) for run in runs), key=lambda pair: pair[0] or epoch,
                       reverse=True)[:RECENT_RUNS]
        failed = tuple(str(run.get("id")) for _, run in dated if run.get("status") == "FAILED")
        cause = ""
        if dated and dated[0][1].get("status") == "FAILED":
            cause = f"the newest backup run {dated[0][1].get('id')} FAILED"
        good_at, good_id = next(((when, str(run.get("id"))) for when, run in dated
                                 if when is not None and run.get("status") == "SUCCESSFUL"), (None, ""))
        if pitr:
            newest_run = (f"newest backup run {good_id} at {iso(good_at)}" if good_at else
                          f"no successful backup run among the newest {RECENT_RUNS}")
            return RecoveryPoint(newest=self.clock.now(), what=f"point-in-time recovery on ({newest_run})",
                                 failed=failed, cause=cause, calls=2)
        if good_at is None:
            return RecoveryPoint(newest=None, what="no successful backup run", failed=failed, calls=2,
                                 cause=cause or f"{name} has no successful backup run among its newest "
                                                f"{RECENT_RUNS} (point-in-time recovery is off)")
        return RecoveryPoint(newest=good_at, what=f"backup run {good_id} (SUCCESSFUL)", failed=failed, cause=cause,
                             calls=2)

    # ---- the restorable window

    def _window(self, instance: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
        name = str(instance.get("name"))
        backups = (instance.get("settings") or {}).get("backupConfiguration") or {}
        if not backups.get("pointInTimeRecoveryEnabled"):
            return None
        with gcp_errors(provider=self.kind, doing=f"reading the recovery window of `{name}`", subject=name,
                        permission="cloudsql.instances.get"):
            found = self.client.projects().instances().getLatestRecoveryTime(project=self.project,
                                                                           instance=name).execute()
        latest = parse_time(str(found["latestRecoveryTime"]))
        if found.get("earliestRecoveryTime"):
            earliest = parse_time(str(found["earliestRecoveryTime"]))
        else:
            days = int(backups.get("transactionLogRetentionDays") or 7)
            earliest = self.clock.now().replace(microsecond=0) - timedelta(days=days)
        return earliest, latest

    def _window_problem(self, name: str, moment: datetime | None, window: tuple[datetime, datetime] | None) -> str:
        if window is None:
            return (f"`{name}` has point-in-time recovery turned off, so it has no restorable window; enable it "
                    "(settings.backupConfiguration.pointInTimeRecoveryEnabled) — restores only cover times after.")
        return outside_window(name, moment, window)

    # ---- restore_pitr

    def _plan_pitr(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"source": params["source"], "target": params["target"],
                                   "note": "Creates a new instance (a clone); the source is not touched."}
        source = self._describe(str(params["source"]))
        if source is None:
            details["problem"] = self._missing(params["source"])
            return details
        window = self._window(source)
        details.update(region=source.get("region"), engine=source.get("databaseVersion"))
        try:
            wanted = self._wanted(params)
        except PermanentError as exc:
            details["problem"] = exc.message
            return details
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
        problems = self._source_problems(source)
        try:
            problem = self._window_problem(str(params["source"]), self._wanted(params), self._window(source))
        except PermanentError as exc:
            problem = exc.message
        return problems + [p for p in [problem] if p] + self._target_problems(params)

    def _source_problems(self, source: Mapping[str, Any]) -> list[str]:
        state = str(source.get("state"))
        if state in {"RUNNABLE", "MAINTENANCE"}:
            return []
        return [f"Source instance `{source.get('name')}` is `{state}`; wait until it is RUNNABLE, then retry."]

    def _is_own(self, existing: Mapping[str, Any], *, source: str, run_id: str | None) -> bool:
        """Made by drbot for this run: remembered with the same source and run, or named with the run's short id."""
        target = str(existing.get("name"))
        remembered = self._recall(f"restore:{target}")
        if remembered is not None:
            return remembered.get("source") == source and (run_id is None or remembered.get("run_id") == run_id)
        labels = (existing.get("settings") or {}).get("userLabels") or {}
        if labels.get("drbot-run"):
            return run_id is None or labels["drbot-run"] == run_short(run_id)
        return run_id is not None and target.endswith(run_short(run_id))

    def _target_problems(self, params: Params) -> list[str]:
        target, source = str(params["target"]), str(params["source"])
        existing = self._describe(target)
        if existing is None or self._is_own(existing, source=source, run_id=None):
            return []
        return [f"Target instance `{target}` already exists and was not created by drbot for this run; choose "
                "another name (drbot uses `<source>-pitr-<run id>`) or delete it first."]

    def _start_pitr(self, params: Params, run_id: str) -> Operation:
        return self._restore(params, run_id, action="restore_pitr", wanted=self._wanted(params), pitr=True)

    def _restore(self, params: Params, run_id: str, *, action: str, wanted: datetime | None, pitr: bool,
                 backup_id: str = "") -> Operation:
        source_name, target = str(params["source"]), str(params["target"])
        existing = self._describe(target)
        if existing is not None:
            return self._attach(existing, action=action, source=source_name, run_id=run_id, wanted=wanted)
        source = self._require_instance(source_name)
        moment = wanted
        if pitr:
            window = self._window(source)
            problem = self._window_problem(source_name, wanted, window)
            if problem:
                raise PermanentError(problem, provider=self.kind, code="InvalidRestoreTime")
            moment = wanted or (window[1] if window else None)
        context: dict[str, Any] = {"destinationInstanceName": target}
        if pitr and moment is not None:
            context["pointInTime"] = iso(moment)
        try:
            with gcp_errors(provider=self.kind, doing=f"cloning `{source_name}` into `{target}`",
                            subject=source_name, setting=f"{self.where}.instance",
                            permission="cloudsql.instances.clone"):
                op = self.client.instances().clone(project=self.project, instance=source_name,
                                                   body={"cloneContext": context}).execute()
        except ProviderError as exc:
            raced = self._describe(target) if exc.code == "409" else None
            if raced is None:  # another start of this run won the race: attach to its instance
                raise
            return self._attach(raced, action=action, source=source_name, run_id=run_id, wanted=wanted)
        facts = {"source": source_name, "run_id": run_id, "operation": str(op.get("name", "")),
                 "restore_time": iso(moment or self.clock.now()), "backup_id": backup_id}
        self._remember(f"restore:{target}", facts)
        return self._restore_handle(action=action, target=target, facts=facts)

    def _attach(self, existing: Mapping[str, Any], *, action: str, source: str, run_id: str,
                wanted: datetime | None) -> Operation:
        target = str(existing.get("name"))
        if not self._is_own(existing, source=source, run_id=run_id):
            raise PermanentError(f"Instance `{target}` already exists and was not created by this restore (HTTP "
                                 "409); choose another target name or delete it first.", provider=self.kind,
                                 code="409")
        facts = self._recall(f"restore:{target}") or {}
        restored_to = str(facts.get("restore_time") or "")
        if wanted is not None and restored_to and restored_to != iso(wanted):
            raise PermanentError(f"Instance `{target}` was already restored to {restored_to}, not {iso(wanted)}; "
                                 "delete it or use a new run for a different restore time.", provider=self.kind,
                                 code="409")
        facts = {**facts, "restore_time": restored_to or iso(wanted or self.clock.now())}
        return self._restore_handle(action=action, target=target, facts=facts)

    def _restore_handle(self, *, action: str, target: str, facts: Mapping[str, Any]) -> Operation:
        data = {"operation": str(facts.get("operation") or ""), "restore_time": str(facts["restore_time"])}
        if facts.get("backup_id"):
            data["backup_id"] = str(facts["backup_id"])
        return Operation(provider=self.kind, action=action, id=f"{action}:{target}", target=target, data=data)

    def _poll_restore(self, operation: Operation) -> OperationStatus:
        target = operation.target
        if operation.data.get("operation"):
            op = self._operation(str(operation.data["operation"]))
            status = str(op.get("status"))
            if status != "DONE":
                return OperationStatus(done=False, status=status)
            failure = self._operation_failure(op)
            if failure:
                return OperationStatus(done=True, failed=True, status=status,
                                       message=f"Cloud SQL could not clone into `{target}`: {failure}. Fix the "
                                               "cause, delete the half-made instance if any, then retry or abort.")
        instance = self._describe(target)
        if instance is None:
            raise PermanentError(f"Restored instance `{target}` is gone (HTTP 404); it was deleted or its creation "
                                 "failed — check the operations log in the Cloud console.", provider=self.kind,
                                 code="404")
        state = str(instance.get("state"))
        if state in FAILED:
            return OperationStatus(done=True, failed=True, status=state,
                                   message=f"Cloud SQL reports `{target}` as `{state}`; the restore failed.")
        if state != "RUNNABLE":
            return OperationStatus(done=False, status=state)
        outputs: dict[str, Any] = {"instance": target, "endpoint": endpoint(instance),
                                   "restore_time": operation.data["restore_time"]}
        if operation.action == "restore_latest_backup":
            outputs["backup_id"] = operation.data.get("backup_id", "")
        return OperationStatus(done=True, status=state, progress=1.0, outputs=outputs)

    # ---- restore_latest_backup

    def _newest_backup(self, source: str) -> dict[str, Any] | None:
        with gcp_errors(provider=self.kind, doing=f"listing the backup runs of `{source}`", subject=source,
                        setting=f"{self.where}.instance", permission="cloudsql.backupRuns.list"):
            items = self.client.backupRuns().list(project=self.project, instance=source,
                                                  maxResults=50).execute().get("items") or []
        done = [b for b in items if b.get("status") == "SUCCESSFUL" and b.get("endTime")]
        return dict(max(done, key=lambda b: parse_time(str(b["endTime"])))) if done else None

    def _plan_backup(self, params: Params) -> dict[str, Any]:
        details = self._plan_pitr({**params, "use_latest": True})
        details["note"] = ("Clones the source's current state into a new instance (a clone without pointInTime); "
                           "the source is not touched.")
        newest = self._newest_backup(str(params["source"])) if "problem" not in details else None
        if newest is not None:
            details.update(backup_id=str(newest.get("id")), newest_backup_at=iso(parse_time(str(newest["endTime"]))))
        return details

    def _preflight_backup(self, params: Params) -> list[str]:
        source = self._describe(str(params["source"]))
        if source is None:
            return [self._missing(params["source"])]
        return self._source_problems(source) + self._target_problems(params)

    def _start_backup(self, params: Params, run_id: str) -> Operation:
        newest = self._newest_backup(str(params["source"]))
        return self._restore(params, run_id, action="restore_latest_backup", wanted=None, pitr=False,
                             backup_id=str(newest.get("id")) if newest else "")

    # ---- delete_instance (the flow is `integrations.database`'s)

    def _plan_delete(self, params: Params) -> dict[str, Any]:
        instance = self._describe(str(params["instance"]))
        return {"instance": params["instance"], "status": instance.get("state") if instance else "not found",
                "warning": "Deletion is final; no final backup is taken of a scratch instance."}

    def _delete(self, name: str) -> None:
        with gcp_errors(provider=self.kind, doing=f"deleting scratch instance `{name}`", subject=name,
                        permission="cloudsql.instances.delete"):
            self.client.instances().delete(project=self.project, instance=name).execute()

    # ---- backup_age (the flow is `integrations.database`'s)

    def _no_backup(self, source: str) -> str:
        return (f"`{source}` has no successful backup run; enable automated backups "
                "(settings.backupConfiguration.enabled).")

    def _age_outputs(self, source: Mapping[str, Any], newest: Mapping[str, Any]) -> dict[str, Any]:
        taken = parse_time(str(newest["endTime"]))
        window = self._window(source)
        return {"newest_backup_at": iso(taken), "latest_restorable_time": iso(window[1]) if window else None,
                "age_seconds": int((self.clock.now() - taken).total_seconds())}


def _run_time(run: Mapping[str, Any]) -> datetime | None:
    """When a backup run's data is from: its `endTime`, else `windowStartTime` (a run still going or one that
    failed early: `startTime`, `enqueuedTime`); None when it has none Google sent readably."""
    for key in ("endTime", "windowStartTime", "startTime", "enqueuedTime"):
        if run.get(key):
            try:
                return parse_time(str(run[key]))
            except ValueError:
                continue
    return None
