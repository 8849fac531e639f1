"""Sandbox twin of a Qdrant collection: recover from a snapshot (`recovering` → `green`, ~2 min) and count points.

The collection starts with 221,184 points and three nightly snapshots (01:00 UTC, named the way Qdrant names
them). Recovery overwrites the collection — the plan says so — and the point count becomes the snapshot's.
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
        return self._load(QDRANT_KIND, self._key(name))

    def _missing(self, name: Any) -> str:
        prefix = f"{self.environment}/"
        known = ", ".join(sorted(k.removeprefix(prefix) for k in self.state.list_state(kind=QDRANT_KIND)
                                 if k.startswith(prefix))) or "none"
        return (f"Collection `{name}` doesn't exist in the sandbox Qdrant (collections: {known}); check "
                f"{self.where}.collection in drbot.yml.")

    def _snapshot(self, params: Params) -> tuple[dict[str, Any] | None, str]:
        collection = self._collection(params["collection"])
        if collection is None:
            return None, self._missing(params["collection"])
        snapshots = sorted(collection["snapshots"], key=lambda s: parse_iso(s["created_at"]))
        names = ", ".join(s["name"] for s in snapshots) or "none"
        wanted = str(params["snapshot"])
        if wanted.lower() == "latest":
            if not snapshots:
                return None, f"Collection `{params['collection']}` has no snapshots; create one first."
            return snapshots[-1], ""
        found = next((s for s in snapshots if s["name"] == wanted), None)
        if found is None:
            return None, (f"Snapshot `{wanted}` does not exist for collection `{params['collection']}`; "
                          f"snapshots: {names} (or use `latest`).")
        return found, ""

    # ---- restore_snapshot

    def _plan_restore(self, params: Params) -> dict[str, Any]:
        snapshot, problem = self._snapshot(params)
        collection = self._collection(params["collection"])
        details: dict[str, Any] = {"collection": params["collection"], "snapshot": params["snapshot"],
                                   "priority": params.get("priority", "snapshot"),
                                   "expected_duration": self._expected(RECOVER_SECONDS)}
        if snapshot is not None and collection is not None:
            details.update(snapshot=snapshot["name"], snapshot_time=snapshot["created_at"],
                           snapshot_size_bytes=snapshot["size"], snapshot_size=_size(int(snapshot["size"])),
                           points_in_snapshot=snapshot["points_count"], points_now=collection["points_count"],
                           warning=(f"Recovery overwrites the collection `{params['collection']}` "
                                    f"({collection['points_count']:,} points now): points written after "
                                    f"{snapshot['created_at']} are lost."))
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
        collection = self._collection(params["collection"])
        if problems or snapshot is None or collection is None:
            raise refuse(f"Bad request: {problems[0]}", code="SnapshotNotFound")
        timeline = self._timeline(RECOVER_SECONDS, [("recovering", 0.0), ("green", 1.0)])
        recovered = {**collection, "points_count": snapshot["points_count"], "recovered_from": snapshot["name"],
                     "phases": [*collection["phases"], *timeline.phases]}
        outputs = {"snapshot": snapshot["name"], "points_count": snapshot["points_count"],
                   "snapshot_time": snapshot["created_at"]}
        return self._begin(action="restore_snapshot", target=str(params["collection"]), run_id=run_id,
                           timeline=timeline, outputs=outputs, inflight_key=str(snapshot["name"]),
                           writes=[Write(QDRANT_KIND, self._key(params["collection"]), recovered)])

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
