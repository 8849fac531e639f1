"""RDS facts shared by every database action: describing instances, the restorable window, the settings a PITR
must copy from its source, and what RDS's status words mean.

Why copy settings explicitly: `RestoreDBInstanceToPointInTime` does not inherit the source's subnet group,
security groups, parameter group, class or Multi-AZ — it silently uses the account defaults, so a restored
instance would land in the default VPC with the default parameters. drbot passes them from the source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.aws.base import AwsProvider, make_client, utc
from integrations.aws.errors import aws_errors
from integrations.common import Params
from integrations.database import DatabaseActions, outside_window
from runbooks.errors import ConfigError, PermanentError
from runbooks.planning import run_short
from runbooks.ports import RecoveryPoint
from runbooks.timeline import iso

PENDING = frozenset({"creating", "backing-up", "modifying", "rebooting", "upgrading", "configuring-enhanced-monitoring",
                     "configuring-log-exports", "starting", "renaming", "resetting-master-credentials",
                     "storage-optimization", "maintenance", "moving-to-vpc", "converting-to-vpc"})
FAILED = frozenset({"failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
                    "incompatible-option-group", "incompatible-credentials", "restore-error", "storage-full",
                    "inaccessible-encryption-credentials", "inaccessible-encryption-credentials-recoverable",
                    "stopped", "stopping", "deleting", "deleted"})
TAG_RUN, TAG_SOURCE, TAG_TIME = "drbot:run", "drbot:source", "drbot:restore-time"


def restorable_window(instance: Mapping[str, Any], *, now: datetime, earliest: datetime | None = None
                      ) -> tuple[datetime, datetime] | None:
    """[earliest, latest] restorable, or None when automated backups are off (no PITR possible).

    DescribeDBInstances reports only LatestRestorableTime; the earliest comes from the instance's automated
    backups (`RestoreWindow.EarliestTime`, which moto does not report). Without it the window starts at the later
    of the instance's creation and now − retention, which is what RDS itself keeps.
    """
    latest = instance.get("LatestRestorableTime")
    retention = int(instance.get("BackupRetentionPeriod") or 0)
    if latest is None or retention <= 0:
        return None
    if earliest is None:
        floor = now - timedelta(days=retention)
        created = instance.get("InstanceCreateTime")
        earliest = max(utc(created), floor) if created is not None else floor
    start = utc(earliest)
    rounded_up = start.replace(microsecond=0) + timedelta(seconds=1 if start.microsecond else 0)
    return rounded_up, utc(latest).replace(microsecond=0)


def copied_settings(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The source's network and sizing, as restore keyword arguments (see the module docstring)."""
    copied: dict[str, Any] = {}
    group = (instance.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
    if group:
        copied["DBSubnetGroupName"] = group
    security = [g["VpcSecurityGroupId"] for g in instance.get("VpcSecurityGroups") or []
                if g.get("VpcSecurityGroupId")]
    if security:
        copied["VpcSecurityGroupIds"] = security
    params = [g["DBParameterGroupName"] for g in instance.get("DBParameterGroups") or []
              if g.get("DBParameterGroupName")]
    if params:
        copied["DBParameterGroupName"] = params[0]
    if instance.get("DBInstanceClass"):
        copied["DBInstanceClass"] = instance["DBInstanceClass"]
    if "MultiAZ" in instance:
        copied["MultiAZ"] = bool(instance["MultiAZ"])
    return copied


def backup_age_outputs(*, taken: datetime, latest: Any, now: datetime, backup_id: str) -> dict[str, Any]:
    """What `backup_age` reports for an instance or a cluster: the newest automated snapshot and its age (the RPO
    a restore from it would have), and the latest restorable time (the RPO of a PITR)."""
    return {"newest_backup_at": iso(taken), "latest_restorable_time": iso(utc(latest)) if latest else None,
            "age_seconds": int((now - taken).total_seconds()), "backup_id": backup_id}


def endpoint(instance: Mapping[str, Any]) -> str:
    return str((instance.get("Endpoint") or {}).get("Address") or "")


def tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in instance.get("TagList") or []}


def is_own_target(instance: Mapping[str, Any], *, source: str, run_id: str | None = None) -> bool:
    """Made by drbot from this source for this run (the name ends with the run's short id): attach, not clash."""
    marks = tags(instance)
    run = marks.get(TAG_RUN)
    if not run or marks.get(TAG_SOURCE) != source:
        return False
    if run_id is not None and run != run_id:
        return False
    return str(instance.get("DBInstanceIdentifier", "")).endswith(run_short(run))


# ---- recovery points (the RPO monitor): shared by aws-rds (instances) and aws-aurora (clusters)


def configured(read: Callable[[], str], *, provider: str) -> str:
    """A drbot.yml setting for `recovery_point`, whose contract is to raise only `ProviderError`s: a missing one is
    a `PermanentError` carrying the `ConfigError`'s sentence."""
    try:
        return read()
    except ConfigError as exc:
        raise PermanentError(exc.message, provider=provider, code="ConfigError") from exc


def database_recovery_point(record: Mapping[str, Any], *, name: str, noun: str, id_key: str,
                            snapshots: Callable[[], Sequence[Mapping[str, Any]]]) -> RecoveryPoint:
    """The recovery point of one described RDS instance or Aurora cluster (that describe was the first call).

    Retention 0 means automated backups are off: no point-in-time recovery and no automated snapshot, so nothing
    (manual snapshots are not a recovery point the monitor can rely on). Otherwise the latest restorable time; only
    when AWS reports none (a first backup not yet done) does `snapshots()` make the second call, and the newest
    `available` automated snapshot is the point."""
    retention = record.get("BackupRetentionPeriod")
    if retention is not None and int(retention) <= 0:
        return RecoveryPoint(newest=None, what="automated backups off", calls=1,
                             cause=f"automated backups are off for {name} (backup retention 0 days): there is no "
                                   "point-in-time recovery; set a retention period")
    latest = record.get("LatestRestorableTime")
    if latest is not None:
        return RecoveryPoint(newest=utc(latest), what="latest restorable time", calls=1)
    status = str(record.get("DBInstanceStatus") or record.get("Status") or "unknown")
    return snapshot_recovery_point(snapshots(), name=name, noun=noun, id_key=id_key, status=status)


def snapshot_recovery_point(snapshots: Sequence[Mapping[str, Any]], *, name: str, noun: str, id_key: str,
                            status: str) -> RecoveryPoint:
    """The newest `available` automated snapshot, with the ids of `failed` ones (newest first); the cause names
    the newest snapshot when it is a failed one. A failed snapshot without a creation time counts as the newest."""
    def taken(snapshot: Mapping[str, Any]) -> datetime:
        moment = snapshot.get("SnapshotCreateTime")
        return utc(moment) if moment is not None else datetime.max.replace(tzinfo=UTC)

    good = [s for s in snapshots if s.get("Status") == "available" and s.get("SnapshotCreateTime") is not None]
    bad = sorted((s for s in snapshots if s.get("Status") == "failed"), key=taken, reverse=True)
    newest = max(good, key=taken) if good else None
    failed = tuple(str(s.get(id_key) or "") for s in bad)
    if bad and (newest is None or taken(bad[0]) > taken(newest)):
        cause = f"the newest automated snapshot {failed[0]} failed"
    elif newest is not None:
        cause = (f"{noun} {name} reports no latest restorable time (status {status}), so there is no point-in-time "
                 "recovery yet; the newest automated snapshot is the recovery point")
    else:
        cause = (f"{noun} {name} has no latest restorable time and no automated snapshot (status {status}): its "
                 "first automated backup has not completed")
    if newest is None:
        return RecoveryPoint(newest=None, what="no restorable time, no automated snapshot", failed=failed,
                             cause=cause, calls=2)
    return RecoveryPoint(newest=taken(newest), what=f"automated snapshot {newest.get(id_key)}", failed=failed,
                         cause=cause, calls=2)


class RdsBase(AwsProvider, DatabaseActions):
    """Clients and describe helpers; the actions live in `rds.py` and `rds_replica.py`."""

    kind = "aws-rds"
    resource = "database"
    state_kind = "aws.rds"
    deleting_state = "deleting"
    no_backup_code = "DBSnapshotNotFound"
    age_status = "available"
    replica_state_code = "InvalidDBInstanceState"

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any], client: Any = None,
                 replica_client: Any = None, cloudwatch: Any = None, **kwargs: Any) -> None:
        super().__init__(environment=environment, resource=resource, settings=settings, client=client, **kwargs)
        self._replica_client = replica_client
        self._cloudwatch = cloudwatch

    def _make_client(self) -> Any:
        return make_client("rds", settings=self.settings)

    @property
    def replica_region(self) -> str | None:
        replica = self.settings.get("replica")
        region = replica.get("region") if isinstance(replica, Mapping) else None
        return str(region or self.settings.get("region") or "") or None

    @property
    def replica_client(self) -> Any:
        """The replica lives in the DR region; a client for the primary's region cannot see it."""
        if self._replica_client is None:
            if self.replica_region == self.settings.get("region") and self._client is not None:
                self._replica_client = self._client
            else:
                with aws_errors(provider=self.kind, doing="creating the RDS client for the replica's region"):
                    self._replica_client = make_client("rds", settings=self.settings, region=self.replica_region)
        return self._replica_client

    @property
    def cloudwatch(self) -> Any:
        if self._cloudwatch is None:
            with aws_errors(provider=self.kind, doing="creating the CloudWatch client"):
                self._cloudwatch = make_client("cloudwatch", settings=self.settings, region=self.replica_region)
        return self._cloudwatch

    def _describe(self, name: str, *, client: Any = None) -> dict[str, Any] | None:
        """The instance, or None when RDS says it does not exist."""
        rds = client if client is not None else self.client
        try:
            with aws_errors(provider=self.kind, doing=f"describing RDS instance `{name}`", subject=name):
                found = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"]
        except PermanentError as exc:
            if exc.code in {"DBInstanceNotFound", "DBInstanceNotFoundFault"}:
                return None
            raise
        instance = dict(found[0]) if found else None
        if instance is not None and "TagList" not in instance and instance.get("DBInstanceArn"):
            with aws_errors(provider=self.kind, doing=f"reading the tags of `{name}`"):
                instance["TagList"] = rds.list_tags_for_resource(ResourceName=instance["DBInstanceArn"])["TagList"]
        return instance

    def _probe(self) -> list[str]:
        name = self._setting("instance", "rag-engine-prod")
        problems = [] if self._describe(name) is not None else [self._missing(name)]
        replica = self.settings.get("replica")
        if isinstance(replica, Mapping) and replica.get("instance"):
            other = str(replica["instance"])
            if self._describe(other, client=self.replica_client) is None:
                problems.append(f"RDS replica `{other}` does not exist in {self.replica_region} "
                                f"(DBInstanceNotFound); check {self.where}.replica.instance and replica.region "
                                "in drbot.yml.")
        return problems

    def _missing(self, name: Any, setting: str = "instance") -> str:
        return (f"RDS instance `{name}` does not exist in {self.settings.get('region', 'the configured region')} "
                f"(DBInstanceNotFound); check {self.where}.{setting} in drbot.yml or the step's parameters.")

    def _require_instance(self, name: str, setting: str = "instance") -> dict[str, Any]:
        instance = self._describe(name)
        if instance is None:
            raise PermanentError(self._missing(name, setting), provider=self.kind, code="DBInstanceNotFound")
        return instance

    def _window(self, instance: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
        name = str(instance.get("DBInstanceIdentifier"))
        try:
            with aws_errors(provider=self.kind, doing=f"reading the automated backups of `{name}`", subject=name):
                backups = self.client.describe_db_instance_automated_backups(
                    DBInstanceIdentifier=name)["DBInstanceAutomatedBackups"]
        except PermanentError as exc:
            if not exc.code.startswith("DBInstanceAutomatedBackupNotFound"):
                raise
            backups = []
        earliest = [utc(b["RestoreWindow"]["EarliestTime"]) for b in backups
                    if (b.get("RestoreWindow") or {}).get("EarliestTime")]
        return restorable_window(instance, now=self.clock.now(), earliest=min(earliest) if earliest else None)

    def _window_problem(self, instance: Mapping[str, Any], moment: datetime | None,
                        window: tuple[datetime, datetime] | None) -> str:
        name = instance.get("DBInstanceIdentifier")
        if window is None:
            return (f"`{name}` has automated backups turned off (BackupRetentionPeriod 0), so it has no restorable "
                    "window; enable backups (e.g. 7 days) — point-in-time restore only covers times after that.")
        return outside_window(name, moment, window)

    def _state(self, found: Mapping[str, Any]) -> str:
        return str(found.get("DBInstanceStatus"))

    def _source_problems(self, instance: Mapping[str, Any]) -> list[str]:
        status = str(instance.get("DBInstanceStatus"))
        if status in {"available", "backing-up", "modifying", "storage-optimization"}:
            return []
        return [f"Source instance `{instance.get('DBInstanceIdentifier')}` is `{status}`; wait until it is "
                "available, then retry."]

    def _target_problems(self, params: Params) -> list[str]:
        target, source = str(params["target"]), str(params["source"])
        existing = self._describe(target)
        if existing is None or is_own_target(existing, source=source):
            return []
        return [f"Target instance `{target}` already exists and was not created by drbot for this run; choose "
                "another name (drbot uses `<source>-pitr-<run id>`) or delete it first."]
