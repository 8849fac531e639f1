"""The action vocabulary: what a runbook step may ask of a resource, with its parameters and outputs.

The catalog loader checks every step against this table (unknown action, missing or unknown parameter →
refused with the file and key path), and every provider of a resource kind implements these actions — the
real clouds and their sandbox twins alike, so a contract test can run both through the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionInfo:
    resource: str
    name: str
    summary: str
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    outputs: frozenset[str] = frozenset()
    mutates: bool = True
    """False for read-only actions (checks, counts); those are never guarded."""
    typical: float = 0.0
    """Seconds it typically takes in the real world (the sandbox's durations, and a plan's forecast when a
    runbook has no history yet); 0 for what takes a moment."""


def _a(resource: str, name: str, summary: str, required: set[str], optional: set[str] | None = None,
       outputs: set[str] | None = None, mutates: bool = True, typical: float = 0.0) -> ActionInfo:
    return ActionInfo(resource, name, summary, frozenset(required), frozenset(optional or set()),
                      frozenset(outputs or set()), mutates, typical)


ACTIONS: dict[str, ActionInfo] = {
    f"{a.resource}.{a.name}": a
    for a in [
        # ---- database (aws-rds, aws-aurora, cloudsql, azure-postgres, sandbox)
        _a("database", "restore_pitr", "Point-in-time restore of the source into a new instance",
           {"source", "target", "restore_time"}, {"use_latest"},
           {"instance", "endpoint", "restore_time"}, typical=20 * 60),
        _a("database", "restore_latest_backup", "Restore the newest backup into a new instance",
           {"source", "target"}, set(), {"instance", "endpoint", "restore_time", "backup_id"}, typical=18 * 60),
        _a("database", "check_replica", "Check the cross-region replica is healthy and read its lag",
           {"replica"}, set(), {"replica_lag_seconds", "status", "region"}, mutates=False),
        _a("database", "promote_replica", "Promote the read replica to a standalone primary",
           {"replica"}, set(), {"instance", "endpoint", "replica_lag_seconds"}, typical=5 * 60),
        _a("database", "create_replica", "Create a read replica of the source in a region (a drill's stand-in for "
           "the live replica)", {"source", "target"}, {"region"},
           {"instance", "endpoint", "region", "replica_lag_seconds"}, typical=15 * 60),
        _a("database", "integrity_check", "Run a read-only SQL query and return its single number",
           {"instance", "query"}, {"min_count"}, {"count"}, mutates=False),
        _a("database", "delete_instance", "Delete a scratch instance (never the source)",
           {"instance"}, {"source"}, {"deleted"}, typical=5 * 60),
        _a("database", "backup_age", "Age of the newest automated backup and the latest restorable time",
           {"source"}, set(), {"newest_backup_at", "latest_restorable_time", "age_seconds"}, mutates=False),
        # ---- kubernetes (kubernetes, sandbox)
        _a("kubernetes", "set_env", "Patch a Deployment's container env and wait for the rollout",
           {"deployment", "namespace", "env"}, {"container", "context"}, {"generation", "replicas"},
           typical=2 * 60),
        _a("kubernetes", "check_deployment", "Read a Deployment: it is available, and the env a cut-over would set "
           "can be set (changes nothing)", {"deployment", "namespace"}, {"env", "container", "context"},
           {"ready_replicas", "replicas", "image", "would_change"}, mutates=False),
        _a("kubernetes", "set_secret", "Patch a Secret's keys and restart the Deployment",
           {"secret", "namespace", "data", "deployment"}, {"context"}, {"generation"}, typical=2 * 60),
        _a("kubernetes", "scale", "Scale a Deployment and wait for the rollout",
           {"deployment", "namespace", "replicas"}, {"context"}, {"replicas"}, typical=2 * 60),
        _a("kubernetes", "velero_restore", "Create a Velero Restore and follow it to a terminal phase",
           {"backup"}, {"include_namespaces", "exclude_namespaces", "include_resources", "exclude_resources",
                        "velero_namespace", "context", "namespace_mapping"},
           {"restore", "backup", "phase", "items_restored", "total_items", "backup_time"}, typical=4 * 60),
        _a("kubernetes", "delete_namespace", "Delete a drill's scratch namespace (only one named *-drill-*)",
           {"namespace"}, {"context"}, {"deleted"}, typical=60),
        # ---- dns (route53, sandbox)
        _a("dns", "switch", "UPSERT the record to the DR target and wait until in sync",
           {"record", "type", "target"}, {"zone_id", "ttl"}, {"previous", "current", "change_id"}, typical=60),
        _a("dns", "health_check", "Check the record resolves to the expected target and answers",
           {"record"}, {"expect"}, {"healthy", "value"}, mutates=False),
        _a("dns", "check_target", "Check the DR target answers (its health check, or a TCP connect) without "
           "changing the record", {"target"}, {"port", "health_check_id"}, {"healthy", "detail"}, mutates=False),
        # ---- vectors (qdrant, sandbox)
        _a("vectors", "restore_snapshot", "Recover the collection from a snapshot (overwrites it)",
           {"collection", "snapshot"}, {"checksum", "priority", "source_collection"},
           {"snapshot", "points_count", "snapshot_time"}, typical=2 * 60),
        _a("vectors", "count_points", "Count points in the collection", {"collection"}, {"min_count"},
           {"points_count"}, mutates=False),
        _a("vectors", "delete_collection", "Delete a drill's scratch collection (only one named *-drill-*)",
           {"collection"}, set(), {"deleted"}, typical=10),
        # ---- objects (s3, sandbox)
        _a("objects", "undelete", "Remove delete markers newer than `since` (any, when None) under a prefix",
           {"bucket", "prefix"}, {"since"}, {"restored", "keys"}),
        _a("objects", "rollback", "Copy back the version current at `at` for every key under a prefix",
           {"bucket", "prefix", "at"}, set(), {"restored", "keys"}),
        _a("objects", "copy_versions", "Copy the version each deleted key had before its delete marker to "
           "`to_prefix` + key (the deleted keys stay deleted)", {"bucket", "prefix", "to_prefix"}, {"since"},
           {"copied", "keys"}),
        _a("objects", "delete_prefix", "Delete every object (all versions) under a drill prefix (only drill-*)",
           {"bucket", "prefix"}, set(), {"deleted"}),
        # ---- pagerduty (pagerduty, sandbox)
        _a("pagerduty", "note", "Add a note to the PagerDuty incident", {"incident", "text"}, set(), {"note_id"}),
        _a("pagerduty", "resolve", "Resolve the PagerDuty incident", {"incident"}, {"note"}, {"status"}),
        _a("pagerduty", "acknowledge", "Acknowledge the PagerDuty incident", {"incident"}, set(), {"status"}),
        # ---- built-ins, run by the engine itself
        _a("builtin", "notify", "Post a message in the incident thread", {"text"}, set(), set(), mutates=False),
        _a("builtin", "report", "Summarise the run (RTO so far, outputs) in the thread", set(), {"text"}, set(),
           mutates=False),
        _a("builtin", "record", "Record a result on the incident timeline", {"text"}, {"result"}, set(),
           mutates=False),
    ]
}

RESOURCES: frozenset[str] = frozenset(a.resource for a in ACTIONS.values() if a.resource != "builtin")


def lookup(action: str) -> ActionInfo | None:
    return ACTIONS.get(action)
