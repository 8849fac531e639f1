"""Aurora facts the actions in `aurora.py` share: which cluster drbot.yml names, describing clusters and their
instances, the restorable window, what a cluster PITR must copy from its source, and the writer it needs.

Why a writer is part of the restore: `RestoreDBClusterToPointInTime` restores the cluster's storage only — a
cluster without instances has an endpoint that nothing answers. drbot adds one writer, `<target>-writer`, of the
class in `writer_class` or, without it, the class of the source's current writer (`DBClusterMembers` with
`IsClusterWriter`).

Why settings are copied explicitly: like the instance restore, a cluster restore silently takes the account's
defaults for subnet group, security groups, cluster parameter group and port, so the copy would land in the
default VPC; the source's KMS key, engine mode and Serverless v2 capacity are passed only when it has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from integrations.aws.base import AwsProvider, make_client, utc
from integrations.aws.errors import aws_errors
from integrations.aws.rds_common import TAG_RUN, TAG_SOURCE, tags
from integrations.common import Params
from integrations.database import DatabaseActions, outside_window
from runbooks.errors import ConfigError, PermanentError
from runbooks.planning import run_short

CLUSTER_NOT_FOUND = frozenset({"DBClusterNotFoundFault", "DBClusterNotFound"})
INSTANCE_NOT_FOUND = frozenset({"DBInstanceNotFound", "DBInstanceNotFoundFault"})
CLUSTER_FAILED = frozenset({"failed", "inaccessible-encryption-credentials",
                            "inaccessible-encryption-credentials-recoverable", "incompatible-network",
                            "incompatible-parameters", "incompatible-restore", "stopped", "stopping", "deleting"})
SOURCE_READY = frozenset({"available", "backing-up", "modifying", "maintenance", "upgrading"})
MAX_IDENTIFIER = 63
WRITER_SUFFIX = "-writer"


def cluster_window(cluster: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """[EarliestRestorableTime, LatestRestorableTime] to the second, inward; None when Aurora reports no window."""
    earliest, latest = cluster.get("EarliestRestorableTime"), cluster.get("LatestRestorableTime")
    if earliest is None or latest is None:
        return None
    start = utc(earliest)
    rounded_up = start.replace(microsecond=0) + timedelta(seconds=1 if start.microsecond else 0)
    return rounded_up, utc(latest).replace(microsecond=0)


def copied_cluster_settings(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The source's network, parameters and encryption as restore keyword arguments (see the module docstring)."""
    copied: dict[str, Any] = {}
    if cluster.get("DBSubnetGroup"):
        copied["DBSubnetGroupName"] = str(cluster["DBSubnetGroup"])
    security = [g["VpcSecurityGroupId"] for g in cluster.get("VpcSecurityGroups") or []
                if g.get("VpcSecurityGroupId")]
    if security:
        copied["VpcSecurityGroupIds"] = security
    if cluster.get("DBClusterParameterGroup"):
        copied["DBClusterParameterGroupName"] = str(cluster["DBClusterParameterGroup"])
    if cluster.get("Port"):
        copied["Port"] = int(cluster["Port"])
    if cluster.get("KmsKeyId"):
        copied["KmsKeyId"] = str(cluster["KmsKeyId"])
    if cluster.get("EngineMode"):
        copied["EngineMode"] = str(cluster["EngineMode"])
    capacity = cluster.get("ServerlessV2ScalingConfiguration") or {}
    scaling = {k: capacity[k] for k in ("MinCapacity", "MaxCapacity") if capacity.get(k) is not None}
    if scaling:
        copied["ServerlessV2ScalingConfiguration"] = scaling
    return copied


def writer_of(cluster: Mapping[str, Any]) -> str | None:
    """The instance id of the cluster's current writer, if it has one."""
    return next((str(m["DBInstanceIdentifier"]) for m in cluster.get("DBClusterMembers") or []
                 if m.get("IsClusterWriter")), None)


def writer_name(target: str) -> str:
    return f"{target}{WRITER_SUFFIX}"


def is_own_cluster(cluster: Mapping[str, Any], *, source: str, run_id: str | None = None) -> bool:
    """Restored by drbot from this source for this run (the name ends with the run's short id): attach."""
    marks = tags(cluster)
    run = marks.get(TAG_RUN)
    if not run or marks.get(TAG_SOURCE) != source:
        return False
    if run_id is not None and run != run_id:
        return False
    return str(cluster.get("DBClusterIdentifier", "")).endswith(run_short(run))


class AuroraBase(AwsProvider, DatabaseActions):
    """The client, the configured cluster and describe helpers."""

    kind = "aws-aurora"
    resource = "database"
    state_kind = "aws.aurora"
    no_backup_code = "DBClusterSnapshotNotFoundFault"
    age_status = "available"

    def _make_client(self) -> Any:
        return make_client("rds", settings=self.settings)

    @property
    def cluster_setting(self) -> str:
        """The drbot.yml key that names the cluster: `cluster`, or `instance` when only that is given."""
        return "cluster" if self.settings.get("cluster") else "instance"

    @property
    def cluster_id(self) -> str:
        value = self.settings.get("cluster") or self.settings.get("instance")
        if not value:
            raise ConfigError(f"{self.where}.cluster is missing; add the Aurora cluster id, e.g. "
                              "`cluster: rag-engine-prod` and `instance: rag-engine-prod` (runbooks read "
                              "env.database.instance).")
        return str(value)

    def _region(self) -> str:
        return str(self.settings.get("region") or "the configured region")

    def _cluster(self, name: str) -> dict[str, Any] | None:
        """The cluster with its tags, or None when Aurora says it does not exist."""
        try:
            with aws_errors(provider=self.kind, doing=f"describing Aurora cluster `{name}`", subject=name):
                found = self.client.describe_db_clusters(DBClusterIdentifier=name)["DBClusters"]
        except PermanentError as exc:
            if exc.code in CLUSTER_NOT_FOUND:
                return None
            raise
        cluster = dict(found[0]) if found else None
        if cluster is not None and "TagList" not in cluster and cluster.get("DBClusterArn"):
            with aws_errors(provider=self.kind, doing=f"reading the tags of `{name}`"):
                cluster["TagList"] = self.client.list_tags_for_resource(
                    ResourceName=cluster["DBClusterArn"])["TagList"]
        return cluster

    def _instance(self, name: str) -> dict[str, Any] | None:
        try:
            with aws_errors(provider=self.kind, doing=f"describing Aurora instance `{name}`", subject=name):
                found = self.client.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"]
        except PermanentError as exc:
            if exc.code in INSTANCE_NOT_FOUND:
                return None
            raise
        return dict(found[0]) if found else None

    def _missing(self, name: Any) -> str:
        return (f"Aurora cluster `{name}` does not exist in {self._region()} (DBClusterNotFoundFault); check "
                f"{self.where}.{self.cluster_setting} in drbot.yml or the step's parameters.")

    def _describe(self, name: str) -> dict[str, Any] | None:
        """For the shared flows (`integrations.database`), an Aurora database is its cluster."""
        return self._cluster(name)

    def _require_instance(self, name: str) -> dict[str, Any]:
        return self._require_cluster(name)

    def _require_cluster(self, name: str) -> dict[str, Any]:
        cluster = self._cluster(name)
        if cluster is None:
            raise PermanentError(self._missing(name), provider=self.kind, code="DBClusterNotFoundFault")
        return cluster

    def _probe(self) -> list[str]:
        name = self.cluster_id
        problems = [] if self._cluster(name) is not None else [self._missing(name)]
        instance, cluster = self.settings.get("instance"), self.settings.get("cluster")
        if not instance:
            problems.append(f"{self.where}.instance is missing; the catalog's runbooks pass "
                            f"`{{{{ env.database.instance }}}}` as the cluster to restore, so add "
                            f"`instance: {name}` next to `cluster: {name}`.")
        elif cluster and str(instance) != str(cluster):
            problems.append(f"{self.where}.instance is `{instance}` but .cluster is `{cluster}`; for aws-aurora "
                            f"both name the cluster — set `instance: {cluster}`.")
        return problems

    # ---- restore facts

    def _window_problem(self, cluster: Mapping[str, Any], moment: datetime | None) -> str:
        name = cluster.get("DBClusterIdentifier")
        window = cluster_window(cluster)
        if window is None:
            return (f"Aurora reports no restorable window for `{name}` (no EarliestRestorableTime or "
                    "LatestRestorableTime yet); wait for its first backup, then retry.")
        return outside_window(name, moment, window)

    def _writer_class(self, source: Mapping[str, Any]) -> str | None:
        """`writer_class` from drbot.yml, else the class of the source's current writer."""
        if self.settings.get("writer_class"):
            return str(self.settings["writer_class"])
        current = writer_of(source)
        instance = self._instance(current) if current else None
        return str(instance["DBInstanceClass"]) if instance and instance.get("DBInstanceClass") else None

    def _target_problems(self, params: Params) -> list[str]:
        target, source = str(params["target"]), str(params["source"])
        problems: list[str] = []
        if len(writer_name(target)) > MAX_IDENTIFIER:
            problems.append(f"Target `{target}` is too long: its writer `{writer_name(target)}` would exceed "
                            f"RDS's {MAX_IDENTIFIER}-character identifier limit; use a shorter cluster id.")
        existing = self._cluster(target)
        if existing is not None and not is_own_cluster(existing, source=source):
            problems.append(f"Target cluster `{target}` already exists and was not created by drbot for this "
                            "run; choose another name (drbot uses `<source>-pitr-<run id>`) or delete it first.")
        writer = self._instance(writer_name(target))
        if writer is not None and writer.get("DBClusterIdentifier") != target:
            problems.append(f"Instance `{writer_name(target)}` already exists in another cluster "
                            f"(`{writer.get('DBClusterIdentifier') or 'none'}`); drbot names the restore's writer "
                            "`<target>-writer` — choose another target or delete that instance first.")
        return problems
