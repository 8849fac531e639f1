"""Amazon S3 (`provider: s3`): undo deletions (remove delete markers) and roll a prefix back to the versions current
at a time, in a versioned bucket.

Why removing delete markers: in a versioned bucket a DELETE only adds a marker on top of the object's versions;
deleting that marker (by its version id) makes the previous version current again. Nothing is overwritten and no
data is copied. A key deleted twice has two markers; every marker newer than `since` is removed, so the key
really comes back.

Both actions finish inside `start` (one API call per key). They are idempotent by nature — a second pass finds
no marker to remove and no version to copy — and, with a state store, the outputs of this run's first pass are
remembered so a restarted `start` reports the same keys instead of "0 restored".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.aws.base import AwsProvider, make_client, utc
from integrations.aws.errors import aws_errors
from integrations.common import ActionImpl, Params
from runbooks.errors import ConfigError, PermanentError, ProviderError
from runbooks.ports import Operation, RecoveryPoint
from runbooks.timeline import iso

PREVIEW_KEYS = 10
PROGRESS_EVERY = 100


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
        }

    def _make_client(self) -> Any:
        return make_client("s3", settings=self.settings)

    # ---- reading

    def _history(self, bucket: str, prefix: str) -> dict[str, list[Entry]]:
        """key → its versions and markers, oldest first; paginated (`settings.page_size`, default 1000)."""
        page_size = int(self.settings.get("page_size") or 1000)
        found: dict[str, list[Entry]] = {}
        with aws_errors(provider=self.kind, doing=f"listing versions under `{prefix}` in bucket `{bucket}`",
                        subject=bucket, setting=f"{self.where}.bucket"):
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
            for page in pages:
                for item, marker in [*[(v, False) for v in page.get("Versions", [])],
                                     *[(m, True) for m in page.get("DeleteMarkers", [])]]:
                    found.setdefault(str(item["Key"]), []).append(Entry(
                        key=str(item["Key"]), version_id=str(item["VersionId"]), at=utc(item["LastModified"]),
                        marker=marker, latest=bool(item.get("IsLatest")), etag=str(item.get("ETag", ""))))
        for entries in found.values():
            entries.sort(key=lambda e: (e.at, e.latest))
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
            raise
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

    def _markers(self, params: Params) -> dict[str, tuple[list[Entry], bool]]:
        """key → (its delete markers newer than `since`, whether a version is current once they are gone), for
        keys whose current entry is such a marker."""
        since = self._since(params)
        chosen: dict[str, tuple[list[Entry], bool]] = {}
        for key, entries in sorted(self._history(str(params["bucket"]), str(params["prefix"])).items()):
            if entries and entries[-1].marker and entries[-1].at >= since:
                markers = [e for e in entries if e.marker and e.at >= since]
                left = [e for e in entries if e not in markers]
                chosen[key] = (markers, bool(left) and not left[-1].marker)
        return chosen

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
