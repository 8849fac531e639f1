"""Sandbox twin of a versioned S3 bucket: remove delete markers (undelete) or copy back the versions current at a
time (rollback), at ~2.5 s a key — about 30 s for the demo's twelve accidentally deleted documents. For drills:
copy each deleted key's last version under a `drill-…/` prefix without undeleting it (copy_versions), and delete
every version under such a prefix (delete_prefix, which refuses any other prefix).

The bucket starts with 36 objects under `docs/`, `images/` and `exports/`; an hour before the world was first
touched, twelve `docs/` objects were deleted (delete markers) and two others were overwritten half an hour ago.
Operation status words follow S3 Batch Operations (`Active` → `Complete`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.common import ActionImpl, Params
from integrations.sandbox.phases import stamp, to_time
from integrations.sandbox.records import Write, digest
from integrations.sandbox.world import SandboxProvider, refuse
from runbooks.drills import drill_prefix_problem
from runbooks.errors import PermanentError
from runbooks.ports import Operation, RecoveryPoint
from runbooks.timeline import parse_iso

S3_KIND = "sandbox.s3"
SECONDS_PER_KEY = 2.5
SECONDS_PER_DELETE = 0.05
"""DeleteObjects removes up to 1000 versions a call: a drill's copies go in a second or two."""
DELETED_DOCS = 12
_TOPICS = ("onboarding", "pricing", "architecture", "runbook", "security", "roadmap")


def _version(key: str, at: datetime, n: int) -> dict[str, Any]:
    return {"id": digest("version", key, str(n))[:32], "at": stamp(at), "size": 40_000 + int(digest(key)[:4], 16),
            "etag": digest("etag", key, str(n))[:32]}


def _visible(entry: Mapping[str, Any], at: datetime | None = None) -> dict[str, Any] | None:
    """The version a GET returns at `at` (now when None), or None when the newest entry is a delete marker."""
    rows: list[tuple[datetime, int, dict[str, Any] | None]] = [
        *[(parse_iso(v["at"]), 1, dict(v)) for v in entry["versions"]],
        *[(parse_iso(m["at"]), 0, None) for m in entry["markers"]],
    ]
    rows = [r for r in rows if at is None or r[0] <= at]
    return max(rows, key=lambda r: (r[0], r[1]))[2] if rows else None


def to_prefix_problem(params: Params) -> str:
    """copy_versions writes `to_prefix` + key: an empty `to_prefix` would write over the deleted keys themselves."""
    if str(params.get("to_prefix") or ""):
        return ""
    return ("`to_prefix` is empty, so the copies would land on the deleted keys themselves (an undelete); give a "
            "separate prefix such as drill-r1/.")


class SandboxObjects(SandboxProvider):
    resource = "objects"

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "undelete": ActionImpl(self._plan_undelete, self._preflight_undelete, self._start_undelete),
            "rollback": ActionImpl(self._plan_rollback, self._preflight_rollback, self._start_rollback),
            "copy_versions": ActionImpl(self._plan_copy, self._preflight_copy, self._start_copy),
            "delete_prefix": ActionImpl(self._plan_delete_prefix, self._preflight_delete_prefix,
                                        self._start_delete_prefix),
        }

    def _seed(self) -> None:
        bucket = str(self.settings.get("bucket", f"{self.environment}-documents"))
        if self._load(S3_KIND, bucket) is not None:
            return
        now = self.clock.now().replace(microsecond=0)
        born = now - timedelta(days=30)
        keys = [f"docs/{_TOPICS[i % len(_TOPICS)]}-{i:02d}.pdf" for i in range(24)]
        keys += [f"images/diagram-{i:02d}.png" for i in range(8)] + [f"exports/{i:02d}.csv" for i in range(4)]
        objects: dict[str, Any] = {}
        for i, key in enumerate(keys):
            entry: dict[str, Any] = {"versions": [_version(key, born + timedelta(hours=i), 0)], "markers": []}
            if key.startswith("docs/") and i < DELETED_DOCS:
                entry["markers"].append({"id": digest("marker", key)[:32],
                                         "at": stamp(now - timedelta(hours=1) + timedelta(seconds=3 * i))})
            elif key.startswith("docs/") and i < DELETED_DOCS + 2:
                entry["versions"].append(_version(key, now - timedelta(minutes=30), 1))
            objects[key] = entry
        versioning = self.settings.get("versioning", True)
        self._save(S3_KIND, bucket, {"bucket": bucket, "objects": objects,
                                     "versioning": "Enabled" if versioning is True else str(versioning or "")})

    def _recovery_point(self) -> RecoveryPoint:
        name = self.settings.get("bucket")
        bucket = self._bucket(name)
        if bucket is None:
            raise refuse(f"NoSuchBucket: bucket `{name}` does not exist in the sandbox", code="NoSuchBucket")
        if bucket["versioning"] == "Enabled":
            return RecoveryPoint(newest=self.clock.now(), what="versioning on: every version is kept", calls=1)
        state = "suspended" if bucket["versioning"] == "Suspended" else "never enabled"
        return RecoveryPoint(newest=None, what=f"versioning {state}", calls=1,
                             cause=f"versioning is {state} on bucket {name}: an object deleted or overwritten now "
                                   f"cannot be recovered; enable versioning")

    def _bucket(self, name: Any) -> dict[str, Any] | None:
        return self._load(S3_KIND, str(name))

    def _bucket_problems(self, params: Params) -> list[str]:
        bucket = self._bucket(params["bucket"])
        if bucket is None:
            known = ", ".join(sorted(self.state.list_state(kind=S3_KIND))) or "none"
            return [f"Bucket `{params['bucket']}` does not exist in the sandbox (buckets: {known}); check "
                    f"{self.where}.bucket in drbot.yml."]
        if bucket["versioning"] != "Enabled":
            state = bucket["versioning"] or "never enabled"
            return [f"Versioning on bucket `{bucket['bucket']}` is {state}, so deleted or overwritten objects have "
                    "no versions to recover; enable versioning (it protects future deletes only) and restore "
                    "from a backup instead."]
        return []

    def _time_problems(self, params: Params, name: str) -> list[str]:
        if name == "since" and params.get(name) is None:
            return []  # no time given: undo every deletion under the prefix
        try:
            moment = to_time(params[name], name=name)
        except PermanentError as exc:
            return [exc.message]
        if moment > self.clock.now():
            return [f"`{name}` {stamp(moment)} is in the future; give a past time such as "
                    f"{stamp((self.clock.now() - timedelta(hours=2)).replace(microsecond=0))}."]
        return []

    def _markers(self, params: Params) -> dict[str, list[str]]:
        """key → ids of delete markers newer than `since` under the prefix."""
        bucket = self._bucket(params["bucket"]) or {"objects": {}}
        since = (to_time(params["since"], name="since") if params.get("since") is not None
                 else datetime.min.replace(tzinfo=UTC))
        found: dict[str, list[str]] = {}
        for key, entry in sorted(bucket["objects"].items()):
            if key.startswith(str(params["prefix"])):
                ids = [m["id"] for m in entry["markers"] if parse_iso(m["at"]) >= since]
                if ids:
                    found[key] = ids
        return found

    def _rollbacks(self, params: Params) -> dict[str, dict[str, Any]]:
        """key → the version current at `at`, for keys whose visible content differs from it now."""
        bucket = self._bucket(params["bucket"]) or {"objects": {}}
        at = to_time(params["at"], name="at")
        found: dict[str, dict[str, Any]] = {}
        for key, entry in sorted(bucket["objects"].items()):
            if not key.startswith(str(params["prefix"])):
                continue
            then, now = _visible(entry, at), _visible(entry)
            if then is not None and (now is None or now["etag"] != then["etag"]):
                found[key] = then
        return found

    def _problems(self, params: Params, time_name: str) -> list[str]:
        return self._bucket_problems(params) or self._time_problems(params, time_name)

    def _duration(self, count: int) -> float:
        return count * SECONDS_PER_KEY

    # ---- undelete

    def _plan_undelete(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"], "since": params["since"]}
        if not self._problems(params, "since"):
            markers = self._markers(params)
            since = "any time" if params.get("since") is None else stamp(to_time(params["since"], name="since"))
            details.update(since=since, delete_markers=len(markers),
                           keys=sorted(markers)[:10], expected_duration=self._expected(self._duration(len(markers))))
            if not markers:
                details["warning"] = (f"No delete markers under `{params['prefix']}` since {details['since']}: "
                                      "nothing would be restored; check the prefix and the time.")
        return details

    def _preflight_undelete(self, params: Params) -> list[str]:
        return self._problems(params, "since")

    def _start_undelete(self, params: Params, run_id: str) -> Operation:
        problems = self._problems(params, "since")
        if problems:
            raise refuse(problems[0], code="InvalidRequest")
        bucket = self._bucket(params["bucket"]) or {}
        markers = self._markers(params)
        objects = dict(bucket["objects"])
        for key, ids in markers.items():
            objects[key] = {**objects[key], "markers": [m for m in objects[key]["markers"] if m["id"] not in ids]}
        restored = sorted(k for k in markers if _visible(objects[k]) is not None)
        return self._batch("undelete", params, run_id, objects=objects, keys=restored,
                           fingerprint=f"{params['prefix']}|{params['since']}")

    def _batch(self, action: str, params: Params, run_id: str, *, objects: dict[str, Any], keys: list[str],
               fingerprint: str, outputs: Mapping[str, Any] | None = None, seconds: float | None = None,
               done: str = "keys restored") -> Operation:
        bucket = self._bucket(params["bucket"]) or {}
        real = self._duration(len(keys)) if seconds is None else seconds
        timeline = self._timeline(real, [("Active", 0.0), ("Complete", 1.0)])
        return self._begin(action=action, target=str(params["bucket"]), run_id=run_id, timeline=timeline,
                           outputs=outputs if outputs is not None else {"restored": len(keys), "keys": keys},
                           inflight_key=fingerprint,
                           writes=[Write(S3_KIND, str(params["bucket"]), {**bucket, "objects": objects})],
                           detail={"total": len(keys), "done": done})

    def _progress_message(self, record: Mapping[str, Any], fraction: float, status: str) -> str:
        detail = record.get("detail", {})
        total = int(detail.get("total", 0))
        return (f"{status}: {total if fraction >= 1 else int(total * fraction)}/{total} "
                f"{detail.get('done', 'keys restored')}")

    # ---- rollback

    def _plan_rollback(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"], "at": params["at"]}
        if not self._problems(params, "at"):
            found = self._rollbacks(params)
            details.update(at=stamp(to_time(params["at"], name="at")), keys_to_copy_back=len(found),
                           keys=sorted(found)[:10], expected_duration=self._expected(self._duration(len(found))),
                           note="Copies create new versions; nothing is deleted and newer versions stay in history.")
        return details

    def _preflight_rollback(self, params: Params) -> list[str]:
        return self._problems(params, "at")

    def _start_rollback(self, params: Params, run_id: str) -> Operation:
        problems = self._problems(params, "at")
        if problems:
            raise refuse(problems[0], code="InvalidRequest")
        bucket = self._bucket(params["bucket"]) or {}
        objects = dict(bucket["objects"])
        now = self.clock.now()
        found = self._rollbacks(params)
        for key, version in found.items():
            copy = {**version, "id": digest("copy", key, run_id)[:32], "at": stamp(now)}
            objects[key] = {**objects[key], "versions": [*objects[key]["versions"], copy]}
        return self._batch("rollback", params, run_id, objects=objects, keys=sorted(found),
                           fingerprint=f"{params['prefix']}|{params['at']}")

    # ---- copy_versions (drills: what undelete would bring back, copied under a drill prefix)

    def _copies(self, params: Params) -> dict[str, tuple[list[str], dict[str, Any]]]:
        """key → (its delete markers newer than `since`, the version an undelete would make current), for every
        key whose newest entry is such a marker and that an undelete would bring back."""
        bucket = self._bucket(params["bucket"]) or {"objects": {}}
        found: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for key, ids in self._markers(params).items():
            entry = bucket["objects"][key]
            if _visible(entry) is not None:
                continue  # not deleted now (a newer version is current): an undelete would not change what a GET sees
            before = _visible({**entry, "markers": [m for m in entry["markers"] if m["id"] not in ids]})
            if before is not None:
                found[key] = (ids, before)
        return found

    def _copy_problems(self, params: Params) -> list[str]:
        problem = to_prefix_problem(params)
        return [problem] if problem else self._problems(params, "since")

    def _plan_copy(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"],
                                   "to_prefix": params["to_prefix"], "since": params.get("since")}
        problems = self._copy_problems(params)
        if problems:
            details["problem"] = problems[0]
            return details
        copies = self._copies(params)
        since = "any time" if params.get("since") is None else stamp(to_time(params["since"], name="since"))
        details.update(since=since, delete_markers=sum(len(ids) for ids, _ in copies.values()),
                       keys_to_restore=len(copies), keys_to_copy=len(copies), keys=sorted(copies)[:10],
                       expected_duration=self._expected(self._duration(len(copies))),
                       note=f"Copies each deleted key's last version to {params['to_prefix']}<key>; the deleted keys "
                            "stay deleted (no delete marker is removed).")
        if not copies:
            details["warning"] = (f"No deleted keys under `{params['prefix']}` since {since}: nothing would be "
                                  "copied; check the prefix and the time.")
        return details

    def _preflight_copy(self, params: Params) -> list[str]:
        return self._copy_problems(params)

    def _start_copy(self, params: Params, run_id: str) -> Operation:
        problems = self._copy_problems(params)
        if problems:
            raise refuse(problems[0], code="InvalidRequest")
        bucket = self._bucket(params["bucket"]) or {}
        objects = dict(bucket["objects"])
        at = stamp(self.clock.now())
        to = str(params["to_prefix"])
        copied: list[str] = []
        for key, (_, version) in self._copies(params).items():
            target = f"{to}{key}"
            old = objects.get(target) or {"versions": [], "markers": []}
            copy = {**version, "id": digest("copy", target, run_id, at)[:32], "at": at}
            objects[target] = {**old, "versions": [*old["versions"], copy]}  # copying again: a newer version
            copied.append(target)
        return self._batch("copy_versions", params, run_id, objects=objects, keys=copied,
                           outputs={"copied": len(copied), "keys": copied}, done="keys copied",
                           fingerprint=f"{params['prefix']}|{params.get('since')}|{to}")

    # ---- delete_prefix (a drill's clean-up; only under drill-*)

    def _under(self, params: Params) -> dict[str, Any]:
        bucket = self._bucket(params["bucket"]) or {"objects": {}}
        prefix = str(params["prefix"])
        return {key: entry for key, entry in bucket["objects"].items() if key.startswith(prefix)}

    def _delete_problems(self, params: Params) -> list[str]:
        problem = drill_prefix_problem(str(params["bucket"]), str(params["prefix"]))
        if problem:
            return [problem]
        if self._bucket(params["bucket"]) is None:  # a missing bucket; a bucket without versioning is fine here
            return self._bucket_problems(params)
        return []

    def _plan_delete_prefix(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"bucket": params["bucket"], "prefix": params["prefix"]}
        problems = self._delete_problems(params)
        if problems:
            details["problem"] = problems[0]
            return details
        under = self._under(params)
        versions = sum(len(e["versions"]) + len(e["markers"]) for e in under.values())
        details.update(objects=len(under), versions=versions,
                       warning="Deletion is final: every version and delete marker under the prefix is removed.")
        return details

    def _preflight_delete_prefix(self, params: Params) -> list[str]:
        return self._delete_problems(params)

    def _start_delete_prefix(self, params: Params, run_id: str) -> Operation:
        problems = self._delete_problems(params)
        if problems:
            raise refuse(problems[0], code="InvalidParameter")
        bucket = self._bucket(params["bucket"]) or {}
        under = self._under(params)
        versions = sum(len(e["versions"]) + len(e["markers"]) for e in under.values())
        objects = {key: entry for key, entry in bucket["objects"].items() if key not in under}
        return self._batch("delete_prefix", params, run_id, objects=objects, keys=sorted(under),
                           outputs={"deleted": versions}, seconds=versions * SECONDS_PER_DELETE,
                           done="keys deleted", fingerprint=str(params["prefix"]))
