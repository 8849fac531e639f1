"""Sandbox twin of a Qdrant collection: recover from a snapshot (`recovering` → `green`, ~2 min), count points, and
delete a drill's scratch collection.

The collection starts with 221,184 points and three nightly snapshots (01:00 UTC, named the way Qdrant names
them). Recovery overwrites the collection — the plan says so — and the point count becomes the snapshot's.
With `source_collection`, the snapshot of that collection is recovered into `collection`, which is created when
absent (a drill's `<collection>-drill-<run>`), as Qdrant does. `delete_collection` deletes only a collection named
`*-drill-*` (never the configured one); a deleted collection keeps its record, marked `deleted_at`, so a crash and
re-run see it gone; deleting one that is already absent succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from integrations.common import ActionImpl, Params
from integrations.sandbox.phases import stamp, status_at
from integrations.sandbox.records import Write, digest
from integrations.sandbox.world import SandboxProvider, refuse
from runbooks.actions import ACTIONS
from runbooks.errors import TransientError
from runbooks.ports import Operation, RecoveryPoint
from runbooks.timeline import parse_iso

QDRANT_KIND = "sandbox.qdrant"
RECOVER_SECONDS = ACTIONS["vectors.restore_snapshot"].typical  # real-world seconds, shared with plans' forecasts
DELETE_SECONDS = ACTIONS["vectors.delete_collection"].typical
SEED_POINTS = 221_184
PRIORITIES = ("snapshot", "replica", "no_sync")


def _size(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


class SandboxVectors(SandboxProvider):
    resource = "vectors"

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "restore_snapshot": ActionImpl(self._plan_restore, self._preflight_restore, self._start_restore),
            "count_points": ActionImpl(self._plan_count, self._preflight_count, self._start_count,
                                       verify=self._verify_count),
            "delete_collection": ActionImpl(self._plan_delete, self._preflight_delete, self._start_delete),
        }

    def _key(self, collection: Any) -> str:
        return f"{self.environment}/{collection}"

    def _seed(self) -> None:
        name = str(self.settings.get("collection", "documents"))
        if self._load(QDRANT_KIND, self._key(name)) is not None:
            return
        now = self.clock.now()
        nightly = now.replace(hour=1, minute=0, second=0, microsecond=0)
        if nightly > now:
            nightly -= timedelta(days=1)
        shard = int(digest("shard", name)[:12], 16) % 10**16
        snapshots = []
        for back in (2, 1, 0):
            at = nightly - timedelta(days=back)
            snapshots.append({"name": f"{name}-{shard}-{at:%Y-%m-%d-%H-%M-%S}.snapshot", "created_at": stamp(at),
                              "size": 1_288_490_188 - back * 3_145_728, "points_count": SEED_POINTS - back * 57,
                              "checksum": digest("snapshot", name, stamp(at))})
        self._save(QDRANT_KIND, self._key(name), {
            "collection": name, "points_count": SEED_POINTS, "snapshots": snapshots,
            "phases": [["green", stamp(now - timedelta(days=90))]], "recovered_from": None})

    def _recovery_point(self) -> RecoveryPoint:
        name = self.settings.get("collection", "documents")
        collection = self._collection(name)
        if collection is None:
            raise refuse(self._missing(name), code="NotFound")
        snapshots = sorted(collection["snapshots"], key=lambda s: parse_iso(s["created_at"]))
        if not snapshots:
            return RecoveryPoint(newest=None, what="no snapshot", cause=f"the collection {name} has no snapshot",
                                 calls=1)
        return RecoveryPoint(newest=parse_iso(snapshots[-1]["created_at"]), what=f"snapshot {snapshots[-1]['name']}",
                             calls=1)

    def _collection(self, name: Any) -> dict[str, Any] | None:
        """The collection's record, or None when it does not exist (never made, or deleted)."""
        record = self._load(QDRANT_KIND, self._key(name))
        return None if record is None or record.get("deleted_at") else record

    def _missing(self, name: Any) -> str:
        prefix = f"{self.environment}/"
        known = ", ".join(sorted(k.removeprefix(prefix) for k, v in self.state.list_state(kind=QDRANT_KIND).items()
                                 if k.startswith(prefix) and not v.get("deleted_at"))) or "none"
        return (f"Collection `{name}` doesn't exist in the sandbox Qdrant (collections: {known}); check "
                f"{self.where}.collection in drbot.yml.")

    @staticmethod
    def _source(params: Params) -> str:
        """The collection whose snapshot is recovered: `source_collection`, else the target `collection` itself."""
        return str(params.get("source_collection") or params["collection"])

    def _snapshot(self, params: Params) -> tuple[dict[str, Any] | None, str]:
        source = self._source(params)
        collection = self._collection(source)
        if collection is None:
            return None, self._missing(source)
        snapshots = sorted(collection["snapshots"], key=lambda s: parse_iso(s["created_at"]))
        names = ", ".join(s["name"] for s in snapshots) or "none"
        wanted = str(params["snapshot"])
        if wanted.lower() == "latest":
            if not snapshots:
                return None, f"Collection `{source}` has no snapshots; create one first."
            return snapshots[-1], ""
        found = next((s for s in snapshots if s["name"] == wanted), None)
        if found is None:
            return None, (f"Snapshot `{wanted}` does not exist for collection `{source}`; "
                          f"snapshots: {names} (or use `latest`).")
        return found, ""

    # ---- restore_snapshot

    def _plan_restore(self, params: Params) -> dict[str, Any]:
        snapshot, problem = self._snapshot(params)
        collection = self._collection(params["collection"])
        source = self._source(params)
        details: dict[str, Any] = {"collection": params["collection"], "snapshot": params["snapshot"],
                                   "priority": params.get("priority", "snapshot"),
                                   "expected_duration": self._expected(RECOVER_SECONDS)}
        if source != str(params["collection"]):
            details["source_collection"] = source
        if snapshot is not None:
            details.update(snapshot=snapshot["name"], snapshot_time=snapshot["created_at"],
                           snapshot_size_bytes=snapshot["size"], snapshot_size=_size(int(snapshot["size"])),
                           points_in_snapshot=snapshot["points_count"])
            if collection is not None:
                details.update(points_now=collection["points_count"],
                               warning=(f"Recovery overwrites the collection `{params['collection']}` "
                                        f"({collection['points_count']:,} points now): points written after "
                                        f"{snapshot['created_at']} are lost."))
            else:
                details.update(points_now=None,
                               creates=(f"Creates the new collection `{params['collection']}` from snapshot "
                                        f"`{snapshot['name']}` of `{source}`; `{source}` itself is not touched."))
        if problem:
            details["problem"] = problem
        return details

    def _preflight_restore(self, params: Params) -> list[str]:
        snapshot, problem = self._snapshot(params)
        if snapshot is None:
            return [problem]
        problems: list[str] = []
        checksum = params.get("checksum")
        if checksum and str(checksum) != snapshot["checksum"]:
            problems.append(f"Checksum {checksum} does not match snapshot `{snapshot['name']}` (sha256 "
                            f"{snapshot['checksum']}); the file may be corrupt — pick another snapshot.")
        priority = params.get("priority")
        if priority is not None and priority not in PRIORITIES:
            problems.append(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}.")
        return problems

    def _start_restore(self, params: Params, run_id: str) -> Operation:
        problems = self._preflight_restore(params)
        snapshot, _ = self._snapshot(params)
        if problems or snapshot is None:
            raise refuse(f"Bad request: {problems[0]}", code="SnapshotNotFound")
        name = str(params["collection"])
        collection = self._collection(name)
        timeline = self._timeline(RECOVER_SECONDS, [("recovering", 0.0), ("green", 1.0)])
        if collection is None:  # Qdrant creates the collection a snapshot is recovered into (a drill's scratch one)
            collection = {"collection": name, "points_count": 0, "snapshots": [], "phases": [],
                          "recovered_from": None, "created_by": run_id}
        recovered = {**collection, "points_count": snapshot["points_count"], "recovered_from": snapshot["name"],
                     "source_collection": self._source(params), "phases": [*collection["phases"], *timeline.phases]}
        outputs = {"snapshot": snapshot["name"], "points_count": snapshot["points_count"],
                   "snapshot_time": snapshot["created_at"]}
        return self._begin(action="restore_snapshot", target=str(params["collection"]), run_id=run_id,
                           timeline=timeline, outputs=outputs, inflight_key=str(snapshot["name"]),
                           writes=[Write(QDRANT_KIND, self._key(params["collection"]), recovered)])

    # ---- delete_collection

    def _protected(self, params: Params) -> str:
        """Why `collection` may not be deleted ("" when it may): only a drill's scratch collection is."""
        name = str(params["collection"])
        if "-drill-" in name and name != str(self.settings.get("collection", "documents")):
            return ""
        return (f"Refusing to delete collection `{name}`: delete_collection only removes a drill's scratch "
                "collection (named `<collection>-drill-<run>`); live collections are never deleted.")

    def _plan_delete(self, params: Params) -> dict[str, Any]:
        collection = self._collection(params["collection"])
        details: dict[str, Any] = {"collection": params["collection"], "exists": collection is not None,
                                   "points_now": collection["points_count"] if collection else None,
                                   "expected_duration": self._expected(DELETE_SECONDS),
                                   "warning": "Deletion is final; the scratch collection's points are not kept."}
        protected = self._protected(params)
        if protected:
            details["problem"] = protected
        return details

    def _preflight_delete(self, params: Params) -> list[str]:
        protected = self._protected(params)
        return [protected] if protected else []

    def _start_delete(self, params: Params, run_id: str) -> Operation:
        protected = self._protected(params)
        if protected:
            raise refuse(protected, code="InvalidParameter")
        name = str(params["collection"])
        collection = self._collection(name)
        if collection is None:  # already gone (or never made): done
            return self._begin(action="delete_collection", target=name, run_id=run_id,
                               timeline=self._instant("deleted"), outputs={"deleted": True})
        status = status_at(collection["phases"], self.clock.now())
        if status == "recovering":
            raise TransientError(f"Collection `{name}` is still recovering from a snapshot; it is deleted once the "
                                 "recovery finishes.", provider=self.kind, code="CollectionNotReady")
        timeline = self._timeline(DELETE_SECONDS, [("deleting", 0.0), ("deleted", 1.0)])
        gone = {**collection, "deleted_at": stamp(timeline.finishes_at),
                "phases": [*collection["phases"], *timeline.phases]}
        return self._begin(action="delete_collection", target=name, run_id=run_id, timeline=timeline,
                           outputs={"deleted": True}, writes=[Write(QDRANT_KIND, self._key(name), gone)])

    # ---- count_points

    def _plan_count(self, params: Params) -> dict[str, Any]:
        return {"collection": params["collection"], "min_count": params.get("min_count", 1)}

    def _preflight_count(self, params: Params) -> list[str]:
        return [] if self._collection(params["collection"]) else [self._missing(params["collection"])]

    def _start_count(self, params: Params, run_id: str) -> Operation:
        collection = self._collection(params["collection"])
        if collection is None:
            raise refuse(f"Not found: {self._missing(params['collection'])}", code="NotFound")
        status = status_at(collection["phases"], self.clock.now())
        if status != "green":
            raise TransientError(f"Collection `{params['collection']}` is {status}; counting once it is green.",
                                 provider=self.kind, code="CollectionNotReady")
        return self._begin(action="count_points", target=str(params["collection"]), run_id=run_id,
                           timeline=self._instant("green"), outputs={"points_count": collection["points_count"]})

    def _verify_count(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        minimum = int(params.get("min_count") or 1)
        count = int(outputs.get("points_count", 0))
        if count >= minimum:
            return []
        return [f"Collection `{params['collection']}` has {count:,} points, below the minimum {minimum:,}; the "
                "snapshot may be older or smaller than expected — check it before sending traffic."]
