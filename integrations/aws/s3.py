"""Amazon S3 (`provider: s3`): undo deletions (remove delete markers) and roll a prefix back to the versions current
at a time, in a versioned bucket; for drills, copy what an undelete would bring back under a `drill-…/` prefix
(copy_versions) and delete such a prefix afterwards (delete_prefix).

Why removing delete markers: in a versioned bucket a DELETE only adds a marker on top of the object's versions;
deleting that marker (by its version id) makes the previous version current again. Nothing is overwritten and no
data is copied. A key deleted twice has two markers; every marker newer than `since` is removed, so the key
really comes back.

Why drills copy instead: removing a delete marker changes what the live application reads, so a drill copies the
version just before each marker (CopyObject with its VersionId) to `<to_prefix><key>` and leaves the markers where
they are; the clean-up then deletes every version and marker under that prefix, and refuses any prefix that does
not start with `drill-`, so it can never reach live keys.

All four actions finish inside `start` (one API call per key; DeleteObjects takes 1000 versions a call). They are
idempotent by nature — a second pass finds no marker to remove and no version to copy back, copies over the same
drill keys again, or finds an empty prefix — and, with a state store, the outputs of this run's first pass are
remembered so a restarted `start` reports the same keys instead of "0 restored".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.aws.base import AwsProvider, make_client, utc
from integrations.aws.errors import SERVER_SIDE, THROTTLING, aws_errors
from integrations.common import ActionImpl, Params
from runbooks.drills import drill_prefix_problem
from runbooks.errors import ConfigError, PermanentError, ProviderError, TransientError
from runbooks.ports import Operation, RecoveryPoint
from runbooks.redact import redact_text
from runbooks.timeline import iso

PREVIEW_KEYS = 10
PROGRESS_EVERY = 100
DELETE_BATCH = 1000
"""DeleteObjects takes at most 1000 keys (versions) a call."""
GONE = frozenset({"NoSuchKey", "NoSuchVersion"})
"""DeleteObjects errors that mean the version is already gone (a second pass after a crash): not a failure."""


@dataclass(frozen=True)
class Entry:
    """One version or delete marker of a key."""

    key: str
    version_id: str
    at: datetime
    marker: bool
    latest: bool
    etag: str = ""


class AwsS3(AwsProvider):
    kind = "s3"
    resource = "objects"
    state_kind = "aws.s3"

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "undelete": ActionImpl(self._plan_undelete, self._preflight_undelete, self._start_undelete),
            "rollback": ActionImpl(self._plan_rollback, self._preflight_rollback, self._start_rollback),
            "copy_versions": ActionImpl(self._plan_copy, self._preflight_copy, self._start_copy),
            "delete_prefix": ActionImpl(self._plan_delete_prefix, self._preflight_delete_prefix,
                                        self._start_delete_prefix),
        }

    def _make_client(self) -> Any:
        return make_client("s3", settings=self.settings)

    # ---- reading

    def _history(self, bucket: str, prefix: str) -> dict[str, list[Entry]]:
        """key → its versions and markers, oldest first; paginated (`settings.page_size`, default 1000).

        LastModified has one-second resolution, so entries of a key made in the same second are ordered by
        IsLatest, versions before markers, then by listing order (S3 lists a key's versions newest first, and its
        markers newest first)."""
        page_size = int(self.settings.get("page_size") or 1000)
        found: dict[str, list[Entry]] = {}
        listed: dict[Entry, int] = {}
        with aws_errors(provider=self.kind, doing=f"listing versions under `{prefix}` in bucket `{bucket}`",
                        subject=bucket, setting=f"{self.where}.bucket"):
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
            for page in pages:
                for item, marker in [*[(v, False) for v in page.get("Versions", [])],
                                     *[(m, True) for m in page.get("DeleteMarkers", [])]]:
                    entry = Entry(key=str(item["Key"]), version_id=str(item["VersionId"]),
                                  at=utc(item["LastModified"]), marker=marker, latest=bool(item.get("IsLatest")),
                                  etag=str(item.get("ETag", "")))
                    listed[entry] = -len(listed)  # newest first in the listing: a later one is older
                    found.setdefault(entry.key, []).append(entry)
        for entries in found.values():
            entries.sort(key=lambda e: (e.at, e.latest, e.marker, listed[e]))
        return found

    def _probe(self) -> list[str]:
        bucket = self._setting("bucket", "rag-docs-prod")
        try:
            with aws_errors(provider=self.kind, doing=f"reading bucket `{bucket}`", subject=bucket,
                            setting=f"{self.where}.bucket", preflight=True):
                self.client.head_bucket(Bucket=bucket)
        except ProviderError as exc:
            return [exc.message]
        return self._bucket_problems(bucket)

    def _bucket_problems(self, bucket: str) -> list[str]:
        try:
            with aws_errors(provider=self.kind, doing=f"reading the versioning of bucket `{bucket}`",
                            subject=bucket, setting=f"{self.where}.bucket", preflight=True):
                status = self.client.get_bucket_versioning(Bucket=bucket).get("Status") or ""
        except ProviderError as exc:
            if exc.code in {"NoSuchBucket", "404", "NotFound"}:
                return [exc.message]
            raise
        if status != "Enabled":
            state = status or "never enabled"
            return [f"Versioning on bucket `{bucket}` is {state}, so deleted or overwritten objects have no versions "
                    "to recover; enable versioning (it protects future deletes only) and restore from a backup "
                    "instead."]
        return []

    # ---- recovery_point (the RPO monitor; `runbooks.ports.RecoveryPointReader`)

    def recovery_point(self) -> RecoveryPoint:
        """With versioning on, every overwrite and delete keeps the previous version, so the bucket can be
        recovered to now (the provider's clock). One GetBucketVersioning, then — only when versioning is on — one
        GetBucketReplication, whose rules are added to `what` (no replication configuration is not a problem).
        Read-only."""
        try:
            bucket = self._setting("bucket", "rag-docs-prod")
        except ConfigError as exc:
            raise PermanentError(exc.message, provider=self.kind, code="ConfigError") from exc
        with aws_errors(provider=self.kind, doing=f"reading the versioning of bucket `{bucket}`", subject=bucket,
                        setting=f"{self.where}.bucket"):
            status = str(self.client.get_bucket_versioning(Bucket=bucket).get("Status") or "")
        if status == "Suspended":
            return RecoveryPoint(newest=None, what="versioning suspended", calls=1,
                                 cause=f"versioning is suspended on bucket {bucket}: an object deleted or overwritten "
                                       "now cannot be recovered; resume versioning")
        if status != "Enabled":
            return RecoveryPoint(newest=None, what="versioning never enabled", calls=1,
                                 cause=f"versioning was never enabled on bucket {bucket}: a deleted or overwritten "
                                       "object cannot be recovered from S3; enable versioning (it protects only "
                                       "changes made after that)")
        now = self.clock.now()
        return RecoveryPoint(newest=now, what=f"versioning on: every version is kept{self._replication(bucket)}",
                             calls=2)

    def _replication(self, bucket: str) -> str:
        """"; replication Enabled to arn:aws:s3:::dr-bucket" (one entry per distinct rule status and destination),
        or "" when the bucket has no replication configuration."""
        try:
            with aws_errors(provider=self.kind, doing=f"reading the replication of bucket `{bucket}`",
                            subject=bucket, setting=f"{self.where}.bucket"):
                rules = self.client.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"].get("Rules")
        except ProviderError as exc:
            if exc.code == "ReplicationConfigurationNotFoundError":
                return ""
            # The recovery point is the versioning's, known already: a role that may not read the replication
            # (or a throttled call) must not hide it.
            return f"; replication unknown ({exc.code or 'error'})"
        described = list(dict.fromkeys(
            f"{rule.get('Status') or 'unknown'} to {(rule.get('Destination') or {}).get('Bucket') or 'unknown'}"
            for rule in rules or []))
        return f"; replication {', '.join(described)}" if described else ""

    def _time_problems(self, params: Params, name: str) -> list[str]:
        if name == "since" and params.get(name) is None:
            return []
        try:
            moment = self._time(params[name], name)
        except PermanentError as exc:
            return [exc.message]
        now = self.clock.now()
        if moment > now:
            return [f"`{name}` {iso(moment)} is in the future; give a past time such as "
                    f"{iso(now - timedelta(hours=2))}."]
        return []

    def _problems(self, params: Params, time_name: str) -> list[str]:
        return self._bucket_problems(str(params["bucket"])) or self._time_problems(params, time_name)

    # ---- undelete

    def _since(self, params: Params) -> datetime:
        raw = params.get("since")
        return self._time(raw, "since") if raw is not None else datetime.min.replace(tzinfo=UTC)

    def _deleted(self, params: Params) -> dict[str, tuple[list[Entry], Entry | None]]:
        """key → (its delete markers newer than `since`, the version that is current once they are gone, None when
        none would be), for keys whose current entry is such a marker: what undelete removes, and what
        copy_versions copies."""
        since = self._since(params)
        chosen: dict[str, tuple[list[Entry], Entry | None]] = {}
        for key, entries in sorted(self._history(str(params["bucket"]), str(params["prefix"])).items()):
            if entries and entries[-1].marker and entries[-1].at >= since:
                markers = [e for e in entries if e.marker and e.at >= since]
                left = [e for e in entries if e not in markers]
                chosen[key] = (markers, left[-1] if left and not left[-1].marker else None)
        return chosen

    def _markers(self, params: Params) -> dict[str, tuple[list[Entry], bool]]:
        """key → (its delete markers newer than `since`, whether a version is current once they are gone), for
        keys whose current entry is such a marker."""
        return {key: (markers, version is not None) for key, (markers, version) in self._deleted(params).items()}

    def _plan_undelete(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"],
                                   "since": iso(self._since(params)) if params.get("since") is not None
                                   else "any time"}
        problems = self._problems(params, "since")
        if problems:
            details["problem"] = problems[0]
            return details
        markers = self._markers(params)
        details.update(delete_markers=sum(len(m) for m, _ in markers.values()), keys_to_restore=len(markers),
                       keys=sorted(markers)[:PREVIEW_KEYS])
        if not markers:
            details["warning"] = (f"No delete markers under `{params['prefix']}` since {details['since']}: nothing "
                                  "would be restored; check the prefix and the time.")
        return details

    def _preflight_undelete(self, params: Params) -> list[str]:
        return self._problems(params, "since")

    def _start_undelete(self, params: Params, run_id: str) -> Operation:
        bucket, prefix = str(params["bucket"]), str(params["prefix"])
        since = iso(self._since(params)) if params.get("since") is not None else "any"
        key = f"undelete:{bucket}:{prefix}:{since}:{run_id}"
        problems = self._problems(params, "since")
        if problems:
            raise PermanentError(problems[0], provider=self.kind, code="InvalidRequest")
        done = list((self._recall(key) or {}).get("keys", []))
        for name, (markers, comes_back) in self._markers(params).items():
            for marker in sorted(markers, key=lambda e: e.at, reverse=True):
                with aws_errors(provider=self.kind, doing=f"removing the delete marker of `{name}` in `{bucket}`",
                                subject=bucket):
                    self.client.delete_object(Bucket=bucket, Key=name, VersionId=marker.version_id)
            if comes_back:
                done.append(name)
            if len(done) % PROGRESS_EVERY == 0:
                self._remember(key, {"keys": done})
        restored = sorted(set(done))
        self._remember(key, {"keys": restored})
        return self._instant(action="undelete", target=bucket, run_id=run_id, status="Complete",
                             outputs={"restored": len(restored), "keys": restored},
                             message=f"Complete: {len(restored)} keys restored under {prefix}")

    # ---- rollback

    def _rollbacks(self, params: Params) -> dict[str, Entry]:
        """key → the version current at `at`, for keys whose current content differs from it."""
        at = self._time(params["at"], "at")
        chosen: dict[str, Entry] = {}
        for key, entries in sorted(self._history(str(params["bucket"]), str(params["prefix"])).items()):
            then = [e for e in entries if e.at <= at]
            if not then or then[-1].marker:
                continue  # the key did not exist at `at`: rollback never deletes
            now = entries[-1]
            if now.marker or now.etag != then[-1].etag:
                chosen[key] = then[-1]
        return chosen

    def _plan_rollback(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"], "at": params["at"]}
        problems = self._problems(params, "at")
        if problems:
            details["problem"] = problems[0]
            return details
        found = self._rollbacks(params)
        details.update(at=iso(self._time(params["at"], "at")), keys_to_copy_back=len(found),
                       keys=sorted(found)[:PREVIEW_KEYS],
                       note="Copies create new versions; nothing is deleted and newer versions stay in history.")
        return details

    def _preflight_rollback(self, params: Params) -> list[str]:
        return self._problems(params, "at")

    def _start_rollback(self, params: Params, run_id: str) -> Operation:
        bucket = str(params["bucket"])
        problems = self._problems(params, "at")
        if problems:
            raise PermanentError(problems[0], provider=self.kind, code="InvalidRequest")
        key = f"rollback:{bucket}:{params['prefix']}:{iso(self._time(params['at'], 'at'))}:{run_id}"
        done = list((self._recall(key) or {}).get("keys", []))
        for name, version in self._rollbacks(params).items():
            with aws_errors(provider=self.kind, doing=f"copying back version {version.version_id} of `{name}`",
                            subject=bucket):
                self.client.copy_object(Bucket=bucket, Key=name, CopySource={
                    "Bucket": bucket, "Key": name, "VersionId": version.version_id})
            done.append(name)
            if len(done) % PROGRESS_EVERY == 0:
                self._remember(key, {"keys": done})
        restored = sorted(set(done))
        self._remember(key, {"keys": restored})
        return self._instant(action="rollback", target=bucket, run_id=run_id, status="Complete",
                             outputs={"restored": len(restored), "keys": restored})

    # ---- copy_versions (drills: what undelete would bring back, copied under a drill prefix)

    def _copy_problems(self, params: Params) -> list[str]:
        if not str(params.get("to_prefix") or ""):
            return ["`to_prefix` is empty, so the copies would land on the deleted keys themselves (an undelete); "
                    "give a separate prefix such as drill-r1/."]
        return self._problems(params, "since")

    def _plan_copy(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"],
                                   "to_prefix": params["to_prefix"],
                                   "since": iso(self._since(params)) if params.get("since") is not None
                                   else "any time"}
        problems = self._copy_problems(params)
        if problems:
            details["problem"] = problems[0]
            return details
        deleted = self._deleted(params)
        copies = sorted(key for key, (_, version) in deleted.items() if version is not None)
        # the same counts as undelete's plan: what a real undelete would bring back is what the drill copies
        details.update(delete_markers=sum(len(m) for m, _ in deleted.values()), keys_to_restore=len(deleted),
                       keys_to_copy=len(copies), keys=copies[:PREVIEW_KEYS],
                       note=f"Copies each deleted key's last version to {params['to_prefix']}<key>; the deleted keys "
                            "stay deleted (no delete marker is removed).")
        if not copies:
            details["warning"] = (f"No deleted keys under `{params['prefix']}` since {details['since']}: nothing "
                                  "would be copied; check the prefix and the time.")
        return details

    def _preflight_copy(self, params: Params) -> list[str]:
        return self._copy_problems(params)

    def _start_copy(self, params: Params, run_id: str) -> Operation:
        bucket, prefix, to = str(params["bucket"]), str(params["prefix"]), str(params.get("to_prefix") or "")
        problems = self._copy_problems(params)
        if problems:
            raise PermanentError(problems[0], provider=self.kind, code="InvalidRequest")
        since = iso(self._since(params)) if params.get("since") is not None else "any"
        key = f"copy_versions:{bucket}:{prefix}:{to}:{since}:{run_id}"
        done = list((self._recall(key) or {}).get("keys", []))
        for name, (_, version) in self._deleted(params).items():
            if version is None:
                continue
            target = f"{to}{name}"
            with aws_errors(provider=self.kind, doing=f"copying version {version.version_id} of `{name}` to "
                                                      f"`{target}` in `{bucket}`", subject=bucket):
                self.client.copy_object(Bucket=bucket, Key=target, CopySource={
                    "Bucket": bucket, "Key": name, "VersionId": version.version_id})
            done.append(target)
            if len(done) % PROGRESS_EVERY == 0:
                self._remember(key, {"keys": done})
        copied = sorted(set(done))
        self._remember(key, {"keys": copied})
        return self._instant(action="copy_versions", target=bucket, run_id=run_id, status="Complete",
                             outputs={"copied": len(copied), "keys": copied},
                             message=f"Complete: {len(copied)} deleted keys under {prefix} copied to {to}; "
                                     "none was undeleted")

    # ---- delete_prefix (a drill's clean-up; only under drill-*)

    def _plan_delete_prefix(self, params: Params) -> dict[str, Any]:
        bucket, prefix = str(params["bucket"]), str(params["prefix"])
        details: dict[str, Any] = {"bucket": bucket, "prefix": prefix}
        problem = drill_prefix_problem(bucket, prefix)
        if problem:
            details["problem"] = problem
            return details
        history = self._history(bucket, prefix)
        details.update(objects=len(history), versions=sum(len(entries) for entries in history.values()),
                       warning="Deletion is final: every version and delete marker under the prefix is removed.")
        return details

    def _preflight_delete_prefix(self, params: Params) -> list[str]:
        problem = drill_prefix_problem(str(params["bucket"]), str(params["prefix"]))
        return [problem] if problem else []

    def _start_delete_prefix(self, params: Params, run_id: str) -> Operation:
        bucket, prefix = str(params["bucket"]), str(params["prefix"])
        problem = drill_prefix_problem(bucket, prefix)
        if problem:
            raise PermanentError(problem, provider=self.kind, code="InvalidParameter")
        key = f"delete_prefix:{bucket}:{prefix}:{run_id}"
        deleted = int((self._recall(key) or {}).get("deleted", 0))
        entries = [e for found in self._history(bucket, prefix).values() for e in found if e.key.startswith(prefix)]
        for first in range(0, len(entries), DELETE_BATCH):
            batch = entries[first:first + DELETE_BATCH]
            with aws_errors(provider=self.kind, doing=f"deleting {len(batch)} versions under `{prefix}` in "
                                                      f"`{bucket}`", subject=bucket):
                response = self.client.delete_objects(Bucket=bucket, Delete={
                    "Objects": [{"Key": e.key, "VersionId": e.version_id} for e in batch], "Quiet": True})
            errors = [e for e in response.get("Errors") or [] if str(e.get("Code")) not in GONE]
            deleted += len(batch) - len(errors)
            self._remember(key, {"deleted": deleted})
            if errors:
                raise self._delete_error(errors, batch=len(batch), bucket=bucket, prefix=prefix)
        return self._instant(action="delete_prefix", target=bucket, run_id=run_id, status="Complete",
                             outputs={"deleted": deleted},
                             message=f"Complete: {deleted} versions and delete markers under {prefix} deleted")

    def _delete_error(self, errors: list[dict[str, Any]], *, batch: int, bucket: str, prefix: str) -> ProviderError:
        """DeleteObjects answers 200 and lists what it could not delete: throttling and server errors are retried
        (the next pass lists only what is left), anything else (AccessDenied) is final."""
        first = errors[0]
        code = str(first.get("Code") or "")
        message = (f"S3 did not delete {len(errors)} of {batch} versions under `{prefix}` in bucket `{bucket}`: "
                   f"{code} on `{first.get('Key')}` ({redact_text(str(first.get('Message') or '')).strip()})")
        if code in THROTTLING or code in SERVER_SIDE:
            return TransientError(message, provider=self.kind, code=code)
        return PermanentError(message, provider=self.kind, code=code or "DeleteObjectsFailed")
