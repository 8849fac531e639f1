"""Velero restores: pick the backup (`latest` = newest Completed), create a `Restore` with a deterministic name,
and follow its `status.phase` to a terminal phase.

Why the name is `<backup>-<run id>`: a drbot restarted mid-step must find the Restore it created rather than
start a second one, so start reads it first and treats 409 AlreadyExists as "attach". `latest` could resolve to a
newer backup after a crash, so the Restore also carries the run in a label and the requested backup in an
annotation, and a restarted `latest` start attaches to the Restore this run already made.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.kubernetes.client import PROVIDER_KIND, KubeApi, not_found
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Operation, OperationStatus, RecoveryPoint

GROUP, VERSION = "velero.io", "v1"
TERMINAL = {"Completed", "PartiallyFailed", "Failed", "FailedValidation"}
FAILED_BACKUP = ("Failed", "PartiallyFailed", "FailedValidation")
RECENT_BACKUPS = 10
"""How many of the newest backups the RPO read looks at for failures."""
RUN_LABEL = "drbot.io/run"
REQUESTED = "drbot.io/requested-backup"
_SPEC_LISTS = {"include_namespaces": "includedNamespaces", "exclude_namespaces": "excludedNamespaces",
               "include_resources": "includedResources", "exclude_resources": "excludedResources"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAPPING_HELP = ('write namespace_mapping as a list of "source:target" strings, e.g. '
                '["rag-engine:rag-engine-drill-r7"], or as a mapping {rag-engine: rag-engine-drill-r7}')


def short_run_id(run_id: str) -> str:
    """`R-12` → `r-12`; anything long or odd becomes a stable 10-character digest (DNS-1123 and label safe)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    return clean if clean and len(clean) <= 20 else hashlib.sha256(run_id.encode()).hexdigest()[:10]


def restore_name(backup: str, run_id: str) -> str:
    """`<backup>-<run short id>`, cut to 63 characters so Velero can also use it as a label value."""
    suffix = short_run_id(run_id)
    head = backup.lower()[: 63 - len(suffix) - 1].rstrip("-.")
    return f"{head}-{suffix}"


def backup_time(backup: Mapping[str, Any]) -> str:
    status = backup.get("status") or {}
    return str(status.get("completionTimestamp") or backup.get("metadata", {}).get("creationTimestamp") or "")


def _lists(params: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for param, field in _SPEC_LISTS.items():
        value = params.get(param)
        if value:
            out[field] = [value] if isinstance(value, str) else [str(v) for v in value]
    return out


def parse_namespace_mapping(value: Any) -> tuple[dict[str, str], str]:
    """`namespace_mapping` as Velero's `spec.namespaceMapping` (source → target), and the sentence that says what
    is wrong with it ("" when nothing is).

    A runbook writes it as a list of `"source:target"` strings, because drbot's templates render values, not mapping
    keys: `["{{ env.kubernetes.namespace }}:{{ env.kubernetes.namespace }}-drill-{{ run.short }}"]`. A mapping
    (`{source: target}`, for callers that know the names) and a single `"source:target"` string are accepted too.
    Namespace names cannot contain `:`, so the split is unambiguous."""
    if value is None or value == "" or value == [] or value == {}:
        return {}, ""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str | list | tuple):
        for item in [value] if isinstance(value, str) else value:
            if not isinstance(item, str) or item.count(":") != 1:
                return {}, f"`namespace_mapping` entry {item!r} is not \"source:target\"; {MAPPING_HELP}."
            source, _, target = item.partition(":")
            pairs.append((source.strip(), target.strip()))
    else:
        return {}, f"`namespace_mapping` must be a list or a mapping; got {value!r}; {MAPPING_HELP}."
    mapping: dict[str, str] = {}
    for source, target in pairs:
        for name in (source, target):
            if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
                return {}, (f"`namespace_mapping` names {name!r}, which is not a namespace name (lower-case letters, "
                            f"digits and '-', at most 63 characters); {MAPPING_HELP}.")
        if source == target:
            return {}, f"`namespace_mapping` maps `{source}` onto itself; leave it out to restore in place."
        if source in mapping and mapping[source] != target:
            return {}, f"`namespace_mapping` maps `{source}` twice (to `{mapping[source]}` and `{target}`)."
        mapping[str(source)] = str(target)
    if len(set(mapping.values())) != len(mapping):
        return {}, "`namespace_mapping` maps two namespaces onto the same target; give each its own."
    return mapping, ""


def mapping_problems(mapping: Mapping[str, str], *, included: list[str], has: list[str]) -> list[str]:
    """A mapped namespace the restore would not bring back (not included, or not in the backup): its target would
    stay empty, which a drill would read as a restore that worked."""
    problems = []
    for source in mapping:
        if included and "*" not in included and source not in included:
            problems.append(f"`namespace_mapping` maps `{source}`, which include_namespaces leaves out "
                            f"({', '.join(included)}); include it or drop the mapping.")
        elif "*" not in has and source not in has:
            problems.append(f"`namespace_mapping` maps `{source}`, which the backup does not contain (it has "
                            f"{', '.join(has)}).")
    return problems


def restore_spec(params: Mapping[str, Any], backup_name: str, mapping: Mapping[str, str]) -> dict[str, Any]:
    """The Restore's `spec`: the backup, the include/exclude lists and the namespace mapping (when there is one)."""
    return {"backupName": backup_name, **_lists(params), **({"namespaceMapping": dict(mapping)} if mapping else {})}


def list_backups(kube: KubeApi, namespace: str) -> list[dict[str, Any]]:
    listing = kube.call(f"list Velero backups in namespace `{namespace}`", kube.custom.list_namespaced_custom_object,
                        GROUP, VERSION, namespace, "backups")
    return [dict(item) for item in dict(listing).get("items", [])]  # type: ignore[call-overload]


def not_installed(namespace: str) -> str:
    return (f"Velero is not installed in namespace `{namespace}` (no backups.velero.io there); set "
            f"`velero_namespace` to where Velero runs.")


def _timestamp(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _taken(backup: Mapping[str, Any]) -> datetime | None:
    """When a backup finished (else started, else was created): what a restore from it brings back."""
    status = backup.get("status") or {}
    return (_timestamp(status.get("completionTimestamp")) or _timestamp(status.get("startTimestamp"))
            or _timestamp((backup.get("metadata") or {}).get("creationTimestamp")))


def recovery_point(backups: list[dict[str, Any]], namespace: str) -> RecoveryPoint:
    """The RPO read over one listing: the newest Completed backup, the failed ones among the newest
    `RECENT_BACKUPS`, and the newest backup's failure as the cause."""
    epoch = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(((_taken(b), str((b.get("metadata") or {}).get("name") or ""),
                       str((b.get("status") or {}).get("phase") or "New")) for b in backups),
                     key=lambda item: (item[0] or epoch, item[1]), reverse=True)
    failed = tuple(name for _, name, phase in ordered[:RECENT_BACKUPS] if phase in FAILED_BACKUP)
    cause = ""
    if ordered and ordered[0][2] in FAILED_BACKUP:
        cause = f"the newest Velero backup {ordered[0][1]} {ordered[0][2]}"
    done = next(((when, name) for when, name, phase in ordered if phase == "Completed" and when), None)
    if done is None:
        missing = f"no Completed Velero backup in namespace {namespace}"
        return RecoveryPoint(newest=None, what="no Completed Velero backup", failed=failed, calls=1,
                             cause=f"{missing}; {cause}" if cause else missing)
    return RecoveryPoint(newest=done[0], what=f"Velero backup {done[1]} (Completed)", failed=failed, cause=cause,
                         calls=1)


def choose_backup(backups: list[dict[str, Any]], wanted: str) -> tuple[dict[str, Any] | None, str]:
    """The backup to restore and, when there is none, the sentence that says why and what to pick instead."""
    done = sorted((b for b in backups if (b.get("status") or {}).get("phase") == "Completed"), key=backup_time)
    names = ", ".join(b["metadata"]["name"] for b in done[-5:]) or "none"
    if wanted.lower() == "latest":
        if not done:
            return None, "There is no Completed Velero backup to restore; run `velero backup create` first."
        return done[-1], ""
    found = next((b for b in backups if b["metadata"]["name"] == wanted), None)
    if found is None:
        return None, f"Velero backup `{wanted}` does not exist; Completed backups: {names} (or use `latest`)."
    phase = (found.get("status") or {}).get("phase") or "New"
    if phase != "Completed":
        return None, (f"Velero backup `{wanted}` is `{phase}`, not Completed, so a restore would be incomplete; "
                      f"pick a Completed backup ({names}) or use `latest`.")
    return found, ""


def _namespaces(backup: Mapping[str, Any]) -> list[str]:
    return [str(n) for n in (backup.get("spec") or {}).get("includedNamespaces") or ["*"]]


def plan(kube: KubeApi, *, params: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    mapping, bad = parse_namespace_mapping(params.get("namespace_mapping"))
    backup, problem = choose_backup(list_backups(kube, namespace), str(params["backup"]))
    details: dict[str, Any] = {"backup": params["backup"], "velero_namespace": namespace}
    if backup is not None:
        status = backup.get("status") or {}
        details.update(backup=backup["metadata"]["name"], backup_time=backup_time(backup),
                       phase=status.get("phase"), total_items=(status.get("progress") or {}).get("totalItems"),
                       namespaces=_namespaces(backup),
                       restore_spec=restore_spec(params, str(backup["metadata"]["name"]), mapping),
                       note="Velero skips objects that already exist; delete broken ones first to replace them.")
    if mapping:
        details["namespace_mapping"] = mapping
        details["note"] = mapping_note(mapping)
    if problem or bad:
        details["problem"] = bad or problem
    return details


def mapping_note(mapping: Mapping[str, str]) -> str:
    return ("Restores into " + ", ".join(f"`{target}` (from `{source}`)" for source, target in mapping.items())
            + "; the source namespace is not touched.")


def preflight(kube: KubeApi, *, params: Mapping[str, Any], namespace: str) -> list[str]:
    mapping, bad = parse_namespace_mapping(params.get("namespace_mapping"))
    if bad:
        return [bad]
    try:
        backups = list_backups(kube, namespace)
    except PermanentError as exc:
        if not_found(exc):
            return [not_installed(namespace)]
        return [exc.message]
    backup, problem = choose_backup(backups, str(params["backup"]))
    if backup is None:
        return [problem]
    has = _namespaces(backup)
    absent = [n for n in _lists(params).get("includedNamespaces", []) if n != "*" and "*" not in has
              and n not in has]
    if absent:
        return [f"Backup `{backup['metadata']['name']}` does not contain namespace(s) {', '.join(absent)} (it has "
                f"{', '.join(has)}); fix include_namespaces."]
    return mapping_problems(mapping, included=_lists(params).get("includedNamespaces", []), has=has)


def _handle(restore: Mapping[str, Any], *, context: str, namespace: str, backup_at: str) -> Operation:
    name = str(restore["metadata"]["name"])
    backup = str((restore.get("spec") or {}).get("backupName") or "")
    return Operation(provider=PROVIDER_KIND, action="velero_restore", id=f"{namespace}/{name}", target=backup,
                     data={"context": context, "namespace": namespace, "restore": name, "backup": backup,
                           "backup_time": backup_at})


def start(kube: KubeApi, *, params: Mapping[str, Any], namespace: str, run_id: str, context: str) -> Operation:
    wanted = str(params["backup"])
    mapping, bad = parse_namespace_mapping(params.get("namespace_mapping"))
    if bad:  # before anything is read or created
        raise PermanentError(bad, provider=PROVIDER_KIND, code="InvalidParameter")
    if wanted.lower() == "latest":
        mine = kube.call("list Velero restores", kube.custom.list_namespaced_custom_object, GROUP, VERSION,
                         namespace, "restores", label_selector=f"{RUN_LABEL}={short_run_id(run_id)}")
        for item in dict(mine).get("items", []):  # type: ignore[call-overload]
            if (item["metadata"].get("annotations") or {}).get(REQUESTED) == "latest":
                return _handle(item, context=context, namespace=namespace, backup_at=(item["metadata"].get(
                    "annotations") or {}).get("drbot.io/backup-time", ""))
    backups = list_backups(kube, namespace)
    backup, problem = choose_backup(backups, wanted)
    if backup is None:
        raise PermanentError(problem, provider=PROVIDER_KIND, code="BackupNotFound")
    name = restore_name(str(backup["metadata"]["name"]), run_id)
    at = backup_time(backup)
    try:
        existing = kube.call(f"read Velero restore `{name}`", kube.custom.get_namespaced_custom_object,
                             GROUP, VERSION, namespace, "restores", name)
        return _handle(dict(existing), context=context, namespace=namespace,  # type: ignore[call-overload]
                       backup_at=at)
    except ProviderError as exc:
        if not not_found(exc):
            raise
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Restore",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {RUN_LABEL: short_run_id(run_id), "app.kubernetes.io/managed-by": "drbot"},
                         "annotations": {REQUESTED: wanted, "drbot.io/backup-time": at}},
            "spec": restore_spec(params, str(backup["metadata"]["name"]), mapping)}
    try:
        created = kube.call(f"create Velero restore `{name}`", kube.custom.create_namespaced_custom_object,
                            GROUP, VERSION, namespace, "restores", body)
    except ProviderError as exc:
        if exc.code != "AlreadyExists":
            raise
        created = body
    return _handle(dict(created), context=context, namespace=namespace,  # type: ignore[call-overload]
                   backup_at=at)


def poll(kube: KubeApi, *, operation: Operation) -> OperationStatus:
    data = operation.data
    name, namespace = str(data["restore"]), str(data["namespace"])
    restore = dict(kube.call(f"read Velero restore `{name}`", kube.custom.get_namespaced_custom_object,  # type: ignore[call-overload]
                             GROUP, VERSION, namespace, "restores", name))
    status = restore.get("status") or {}
    phase = str(status.get("phase") or "New")
    progress = status.get("progress") or {}
    restored, total = int(progress.get("itemsRestored") or 0), int(progress.get("totalItems") or 0)
    fraction = min(1.0, restored / total) if total else None
    message = f"{phase}: itemsRestored {restored}/{total}"
    if phase not in TERMINAL:
        return OperationStatus(done=False, status=phase, progress=fraction, message=message)
    outputs = {"restore": name, "backup": data["backup"], "phase": phase, "items_restored": restored,
               "total_items": total, "backup_time": data["backup_time"]}
    if phase == "Completed":
        return OperationStatus(done=True, status=phase, progress=1.0, message=message, outputs=outputs)
    return OperationStatus(done=True, failed=True, status=phase, progress=fraction, outputs=outputs,
                           message=failure_message(name, status))


def failure_message(name: str, status: Mapping[str, Any]) -> str:
    phase = status.get("phase")
    parts = [f"Velero restore `{name}` ended {phase}"]
    if status.get("validationErrors"):
        parts.append("validation: " + "; ".join(str(e) for e in status["validationErrors"]))
    if status.get("failureReason"):
        parts.append(f"reason: {status['failureReason']}")
    if status.get("errors") or status.get("warnings"):
        parts.append(f"{int(status.get('errors') or 0)} errors, {int(status.get('warnings') or 0)} warnings")
    return ", ".join(parts) + f". See `velero restore describe {name} --details` and `velero restore logs {name}`."


# --------------------------------------------------------------------------------------------- drill namespaces
# A drill restores with `namespaceMapping` into `<namespace>-drill-<run>`; its clean-up deletes that namespace (and
# with it everything the restore put there). Nothing else is ever deleted: the name must carry the drill marker.

DRILL_MARKER = "-drill-"
_STUCK = ("NamespaceDeletionDiscoveryFailure", "NamespaceDeletionGroupVersionParsingFailure",
          "NamespaceDeletionContentFailure", "NamespaceContentRemaining", "NamespaceFinalizersRemaining")


def scratch_refusal(name: str, *, live: str = "") -> str:
    """Why `name` may not be deleted ("" when it is a drill's scratch namespace). The same sentence as the sandbox's."""
    if DRILL_MARKER in name and name != live:
        return ""
    return (f"Refusing to delete namespace `{name}`: it is not a drill's scratch namespace; delete_namespace only "
            f"removes namespaces named `<namespace>{DRILL_MARKER}<run>` (what a drill's restore made), never the "
            f"application's namespace or any other.")


def read_namespace(kube: KubeApi, name: str) -> dict[str, Any] | None:
    """The Namespace (snake_case keys), or None when there is none."""
    try:
        found = kube.call(f"read Namespace `{name}`", kube.core.read_namespace, name)
    except ProviderError as exc:
        if not_found(exc):
            return None
        raise
    return dict(found.to_dict())


def namespace_phase(found: Mapping[str, Any] | None) -> str:
    return "not found" if found is None else str((found.get("status") or {}).get("phase") or "Active")


def delete_namespace(kube: KubeApi, *, name: str, context: str, live: str) -> Operation:
    """Ask for the namespace's deletion and hand back what `poll_namespace` follows until it is gone. Already gone
    (404) or already going (409 while it terminates): attach, so a repeated start is harmless."""
    refusal = scratch_refusal(name, live=live)
    if refusal:
        raise PermanentError(refusal, provider=PROVIDER_KIND, code="InvalidParameter")
    try:
        kube.call(f"delete Namespace `{name}`", kube.core.delete_namespace, name)
    except ProviderError as exc:
        if not (not_found(exc) or exc.code == "Conflict"):
            raise
    return Operation(provider=PROVIDER_KIND, action="delete_namespace", id=f"delete_namespace:{context}/{name}",
                     target=name, data={"context": context, "namespace": name})


def poll_namespace(kube: KubeApi, *, operation: Operation) -> OperationStatus:
    """Done when the Namespace is gone (404); until then its phase, and what holds it up when the namespace
    controller says so (content or finalizers it cannot remove)."""
    name = str(operation.data["namespace"])
    found = read_namespace(kube, name)
    if found is None:
        return OperationStatus(done=True, status="deleted", progress=1.0, message=f"namespace `{name}` is gone",
                               outputs={"deleted": True, "namespace": name})
    phase = namespace_phase(found)
    stuck = [f"{c.get('type')}: {c.get('message')}" for c in (found.get("status") or {}).get("conditions") or []
             if c.get("type") in _STUCK and c.get("status") == "True" and c.get("message")]
    message = f"namespace `{name}` is {phase}" + (f" ({'; '.join(stuck)})" if stuck else "")
    return OperationStatus(done=False, status=phase, message=message)
