"""Qdrant collections restored from their own snapshots, over REST with qdrant-client; drills' scratch collections.

Why it is built this way:
- Recovery is `PUT /collections/{c}/snapshots/recover?wait=false` with `location` = the snapshot's URL on the same
  server, so the call returns at once and the engine's `wait` step follows the collection's own status words
  (`yellow` while Qdrant rebuilds and optimises, then `green`). Qdrant has no recovery-task id to poll, so an
  operation counts as finished when the collection is green (or grey) *after* drbot has seen it not green, or once
  `settle_seconds` have passed since the request (a recovery fast enough never to show yellow).
- Recovery OVERWRITES the collection, so `plan` says so in words and names the snapshot (name, time, size) and the
  point count that will be replaced; the approver signs exactly that.
- The checksum sent is the one the user gave, else the snapshot's own from the listing, so Qdrant refuses a file
  that changed between listing and recovery. A user-given checksum that does not match is refused at preflight.
- `start` is idempotent without a cloud-side id: an operation record keyed by (environment, collection, run id)
  lives in the StateStore. It is saved before the request (`submitted: false`) and marked after, so a crash in
  between re-sends the same recovery (safe: same snapshot, same result) and any later start just attaches.
- The API key comes from the environment variable named by `api_key_env` (read by the factory), is sent as the
  `api-key` header and as the recover body's `api_key` (Qdrant needs it to download from itself), and is scrubbed
  from every message.
- A drill recovers into a scratch collection: `source_collection` names the collection whose snapshot is listed and
  whose snapshot URL is the `location`; the request goes to `PUT /collections/<collection>/snapshots/recover`, which
  creates `<collection>` (`<live>-drill-<run>`) and never touches the source. The plan says "creates", not
  "overwrites", when the target does not exist yet.
- `delete_collection` deletes only a collection whose name contains `-drill-` and is not the configured
  `collection` (refused at preflight and again at start, before any request). A collection already absent (Qdrant
  answers `false` or 404) counts as deleted, so a re-run clean-up succeeds. It waits (a transient error, retried)
  while this run's own recovery into that collection may still be running, since a recovery finishing after the
  delete would re-create it; a collection still present after the delete fails the step, so the ledger keeps it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from integrations.qdrant.errors import KIND, display_url, translate
from integrations.sdk_errors import map_sdk_errors
from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, DrbotError, PermanentError, TransientError
from runbooks.ports import Clock, Operation, OperationStatus, RecoveryPoint, StateStore, SystemClock
from runbooks.timeline import iso, parse_iso

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http.models import CollectionInfo, SnapshotDescription

OPS_KIND = "qdrant.ops"
PRIORITIES = ("snapshot", "replica", "no_sync")
READY = ("green", "grey")
DEFAULT_SETTLE_SECONDS = 10.0
DRILL_MARK = "-drill-"
RECOVERY_GRACE_SECONDS = 3600.0
"""After this long a recovery that never showed its collection is taken as over (failed): a clean-up then deletes."""
T = TypeVar("T")
Params = Mapping[str, Any]


def snapshot_time(snapshot: SnapshotDescription) -> datetime | None:
    """Qdrant reports `creation_time` as a naive UTC timestamp (`2026-11-24T01:00:00`)."""
    if not snapshot.creation_time:
        return None
    try:
        moment = datetime.fromisoformat(snapshot.creation_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def human_size(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


class MemoryState:
    """Used only when no StateStore is given (a one-off script): idempotency then lasts for this process."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], dict[str, Any]] = {}

    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None:
        value = self._data.get((kind, key))
        return None if value is None else dict(value)

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None:
        self._data[(kind, key)] = dict(value)

    def list_state(self, *, kind: str) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for (kd, k), v in self._data.items() if kd == kind}


class QdrantProvider:
    """`vectors` resource on a Qdrant server: `restore_snapshot`, `count_points` and `delete_collection`."""

    kind = KIND
    resource = "vectors"

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any],
                 client: QdrantClient | None = None, state: StateStore | None = None, clock: Clock | None = None,
                 api_key: str | None = None) -> None:
        self.environment = environment
        self.where = f"environments.{environment}.{resource}"
        self.settings = dict(settings)
        if "api_key" in self.settings:
            raise ConfigError(f"{self.where}.api_key: secrets never go in drbot.yml; write "
                              "`api_key_env: QDRANT_API_KEY` and export the key in that environment variable.")
        url = str(self.settings.get("url") or "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{self.where}.url must be the Qdrant REST address, e.g. `url: http://qdrant:6333`; "
                              f"got {self.settings.get('url')!r}.")
        self.url = url
        self.snapshot_base = str(self.settings.get("snapshot_url") or url).rstrip("/")
        self.api_key_env = str(self.settings["api_key_env"]) if self.settings.get("api_key_env") else None
        try:
            self.settle_seconds = float(self.settings.get("settle_seconds", DEFAULT_SETTLE_SECONDS))
            self.timeout = int(self.settings.get("timeout", 30))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.where}: `timeout` and `settle_seconds` must be numbers of seconds, e.g. "
                              "`timeout: 30`.") from exc
        self._api_key = api_key
        self._client = client
        self.state: StateStore = state if state is not None else MemoryState()
        self.clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:  # never show the key
        return f"QdrantProvider(environment={self.environment!r}, url={display_url(self.url)!r})"

    # ---- plumbing

    @property
    def client(self) -> QdrantClient:
        if self._client is None:
            from qdrant_client import QdrantClient

            self._client = QdrantClient(url=self.url, prefer_grpc=False, api_key=self._api_key,
                                        timeout=self.timeout, check_compatibility=False)
        return self._client

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        # The SDK's errors are not one tree, so every exception goes to translate(), which sorts them.
        with map_sdk_errors(lambda exc: translate(exc, doing=doing, url=self.url, api_key=self._api_key,
                                                  api_key_env=self.api_key_env)):
            return fn()

    def _name(self, action: str) -> str:
        name = action.removeprefix(f"{self.resource}.")
        if f"{self.resource}.{name}" not in ACTIONS or name not in self.actions():
            raise PermanentError(f"The qdrant provider has no action `{action}`; supported: "
                                 f"{', '.join(sorted(self.actions()))}.", provider=KIND, code="UnknownAction")
        return name

    def _missing(self, name: str, params: Params) -> list[str]:
        info = ACTIONS[f"{self.resource}.{name}"]
        return [f"Missing parameter `{p}` for {self.resource}.{name}; the step needs "
                f"{', '.join(sorted(info.required))}." for p in sorted(info.required) if params.get(p) is None]

    def _require(self, name: str, params: Params) -> None:
        problems = self._missing(name, params)
        if problems:
            raise PermanentError(problems[0], provider=KIND, code="MissingParameter")

    def _read_collection(self, collection: str, *, doing: str) -> CollectionInfo | None:
        """The collection's info, or None when Qdrant answers 404 (missing, or being re-created by a recovery)."""
        try:
            return self.client.get_collection(collection)
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise translate(exc, doing=doing, url=self.url, api_key=self._api_key,
                            api_key_env=self.api_key_env) from exc

    def _exists(self, collection: str) -> bool:
        return self._read_collection(collection, doing=f"reading collection `{collection}`") is not None

    def _no_collection(self, collection: str) -> str:
        names = self._call("listing collections", lambda: self.client.get_collections()).collections
        known = ", ".join(sorted(c.name for c in names)) or "none"
        return (f"Collection `{collection}` doesn't exist on Qdrant at {display_url(self.url)} (collections: "
                f"{known}); check {self.where}.collection in drbot.yml.")

    def probe(self) -> list[str]:
        """Read-only reachability check for `drbot check`: an unreachable server is reported, never raised."""
        collection = str(self.settings.get("collection") or "")
        if not collection:
            return [f"{self.where}.collection is missing; add it, e.g. `collection: documents`."]
        try:
            return [] if self._exists(collection) else [self._no_collection(collection)]
        except DrbotError as exc:
            return [exc.message]

    def _points(self, collection: str) -> int:
        result = self._call(f"counting points in `{collection}`",
                            lambda: self.client.count(collection_name=collection, exact=True))
        return int(result.count)

    @staticmethod
    def _source(params: Params) -> str:
        """The collection whose snapshot is recovered: `source_collection`, else the target `collection` itself."""
        return str(params.get("source_collection") or params["collection"])

    def _snapshot(self, params: Params) -> tuple[SnapshotDescription | None, str]:
        """The snapshot the params name (`latest` = newest by creation time) among the source collection's, or a
        sentence saying why not."""
        collection = self._source(params)
        if not self._exists(collection):
            return None, self._no_collection(collection)
        listed = self._call(f"listing snapshots of `{collection}`",
                            lambda: self.client.list_snapshots(collection_name=collection))
        epoch = datetime.min.replace(tzinfo=UTC)
        snapshots = sorted(listed, key=lambda s: (snapshot_time(s) or epoch, s.name))
        wanted = str(params["snapshot"])
        if wanted.lower() == "latest":
            if not snapshots:
                return None, f"Collection `{collection}` has no snapshots; create one first."
            return snapshots[-1], ""
        found = next((s for s in snapshots if s.name == wanted), None)
        if found is None:
            names = ", ".join(s.name for s in snapshots) or "none"
            return None, (f"Snapshot `{wanted}` does not exist for collection `{collection}`; snapshots: {names} "
                          "(or use `latest`).")
        return found, ""

    def _problems(self, params: Params, snapshot: SnapshotDescription) -> list[str]:
        problems: list[str] = []
        checksum = params.get("checksum")
        if checksum and snapshot.checksum and str(checksum).lower() != snapshot.checksum.lower():
            problems.append(f"Checksum {checksum} does not match snapshot `{snapshot.name}` (sha256 "
                            f"{snapshot.checksum}); the file may be corrupt — pick another snapshot.")
        priority = params.get("priority")
        if priority is not None and priority not in PRIORITIES:
            problems.append(f"Priority must be one of {', '.join(PRIORITIES)}; got {priority!r}.")
        return problems

    def _location(self, collection: str, snapshot: str) -> str:
        return f"{self.snapshot_base}/collections/{collection}/snapshots/{snapshot}"

    # ---- the RPO monitor's read (`runbooks.ports.RecoveryPointReader`): one listing of the collection's snapshots

    def recovery_point(self) -> RecoveryPoint:
        """The newest snapshot of `collection` (the listing `latest` restores use). One call, nothing written."""
        collection = str(self.settings.get("collection") or "")
        if not collection:
            raise PermanentError(f"{self.where}.collection is missing; add it, e.g. `collection: documents`.",
                                 provider=KIND, code="ConfigError")
        doing = f"listing snapshots of `{collection}`"
        try:
            listed = self.client.list_snapshots(collection_name=collection)
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                raise PermanentError(f"Collection `{collection}` doesn't exist on Qdrant at {display_url(self.url)} "
                                     f"(404 while {doing}); check {self.where}.collection in drbot.yml.",
                                     provider=KIND, code="404") from exc
            raise translate(exc, doing=doing, url=self.url, api_key=self._api_key,
                            api_key_env=self.api_key_env) from exc
        if not listed:
            return RecoveryPoint(newest=None, what="no snapshot", calls=1,
                                 cause=f"the collection {collection} has no snapshot")
        epoch = datetime.min.replace(tzinfo=UTC)
        newest = max(listed, key=lambda s: (snapshot_time(s) or epoch, s.name))
        taken = snapshot_time(newest)
        if taken is None:
            return RecoveryPoint(newest=None, what=f"snapshot {newest.name}", calls=1,
                                 cause=f"no snapshot of the collection {collection} has a readable creation_time")
        return RecoveryPoint(newest=taken, what=f"snapshot {newest.name}", calls=1)

    # ---- Provider protocol

    def actions(self) -> frozenset[str]:
        return frozenset({"restore_snapshot", "count_points", "delete_collection"})

    def plan(self, *, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name(action)
        self._require(name, params)
        collection = str(params["collection"])
        if name == "count_points":
            return {"collection": collection, "min_count": params.get("min_count", 1)}
        if name == "delete_collection":
            return self._plan_delete(collection)
        source = self._source(params)
        details: dict[str, Any] = {"collection": collection, "snapshot": params["snapshot"],
                                   "priority": params.get("priority") or "snapshot", "server": display_url(self.url)}
        if source != collection:
            details["source_collection"] = source
        snapshot, problem = self._snapshot(params)
        if snapshot is None:
            details["problem"] = problem
            return details
        taken = snapshot_time(snapshot)
        when = iso(taken) if taken else "at an unknown time"
        details.update(snapshot=snapshot.name, snapshot_time=iso(taken) if taken else None,
                       snapshot_size_bytes=snapshot.size, snapshot_size=human_size(snapshot.size),
                       checksum=params.get("checksum") or snapshot.checksum,
                       location=self._location(source, snapshot.name))
        if source == collection or self._exists(collection):
            points_now = self._points(collection)
            details.update(points_now=points_now,
                           warning=(f"Recovery OVERWRITES the collection `{collection}` ({points_now:,} points now) "
                                    f"with snapshot `{snapshot.name}` taken {when} ({human_size(snapshot.size)}): "
                                    "points written after it are lost."))
        else:
            details.update(points_now=None,
                           creates=(f"Creates the new collection `{collection}` from snapshot `{snapshot.name}` of "
                                    f"`{source}` taken {when} ({human_size(snapshot.size)}); `{source}` itself is "
                                    "not touched."))
        problems = self._problems(params, snapshot)
        if problems:
            details["problem"] = " ".join(problems)
        return details

    def preflight(self, *, action: str, params: Mapping[str, Any]) -> list[str]:
        name = self._name(action)
        missing = self._missing(name, params)
        if missing:
            return missing
        collection = str(params["collection"])
        if name == "count_points":
            return [] if self._exists(collection) else [self._no_collection(collection)]
        if name == "delete_collection":
            protected = self._protected(collection)
            return [protected] if protected else []
        snapshot, problem = self._snapshot(params)
        return [problem] if snapshot is None else self._problems(params, snapshot)

    def start(self, *, action: str, params: Mapping[str, Any], run_id: str) -> Operation:
        name = self._name(action)
        self._require(name, params)
        if name == "count_points":
            return self._start_count(params)
        if name == "delete_collection":
            return self._start_delete(params, run_id)
        return self._start_restore(params, run_id)

    def poll(self, *, operation: Operation) -> OperationStatus:
        if operation.action == "count_points":
            return OperationStatus(done=True, status="counted", progress=1.0,
                                   outputs={"points_count": int(operation.data["points_count"])})
        if operation.action == "delete_collection":
            return self._poll_delete(operation)
        return self._poll_restore(operation)

    def verify(self, *, action: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
        if self._name(action) != "count_points":
            return []
        minimum = int(params.get("min_count") or 1)
        count = int(outputs.get("points_count", 0))
        if count >= minimum:
            return []
        return [f"Collection `{params['collection']}` has {count:,} points, below the minimum {minimum:,}; the "
                "snapshot may be older or smaller than expected — check it before sending traffic."]

    # ---- restore_snapshot

    def _key(self, collection: str, run_id: str) -> str:
        return f"{self.environment}/{collection}/{run_id}"

    def _start_restore(self, params: Params, run_id: str) -> Operation:
        collection = str(params["collection"])
        key = self._key(collection, run_id)
        record = self.state.load_state(kind=OPS_KIND, key=key)
        if record is None:
            snapshot, problem = self._snapshot(params)
            if snapshot is None:
                raise PermanentError(f"Bad request: {problem}", provider=KIND, code="SnapshotNotFound")
            problems = self._problems(params, snapshot)
            if problems:
                raise PermanentError(f"Bad request: {problems[0]}", provider=KIND, code="InvalidParameter")
            taken = snapshot_time(snapshot)
            op_id = "qdrant-" + hashlib.sha256(key.encode()).hexdigest()[:16]
            source = self._source(params)
            record = {"id": op_id, "key": key, "collection": collection, "source_collection": source,
                      "run_id": run_id, "snapshot": snapshot.name, "snapshot_time": iso(taken) if taken else None,
                      "checksum": str(params.get("checksum") or snapshot.checksum or "") or None,
                      "priority": str(params.get("priority") or "snapshot"),
                      "location": self._location(source, snapshot.name),
                      "started_at": iso(self.clock.now()), "submitted": False, "seen_not_ready": False}
            self.state.save_state(kind=OPS_KIND, key=key, value=record)
        if not record["submitted"]:
            self._recover(record)
            record["submitted"] = True
            self.state.save_state(kind=OPS_KIND, key=key, value=record)
        return self._handle(record)

    def _recover(self, record: Mapping[str, Any]) -> None:
        from qdrant_client.http.models import SnapshotPriority

        source = record.get("source_collection") or record["collection"]
        into = f" of `{source}`" if source != record["collection"] else ""
        self._call(f"recovering `{record['collection']}` from snapshot `{record['snapshot']}`{into}",
                   lambda: self.client.recover_snapshot(
                       collection_name=record["collection"], location=record["location"],
                       api_key=self._api_key, checksum=record["checksum"],
                       priority=SnapshotPriority(record["priority"]), wait=False))

    def _handle(self, record: Mapping[str, Any]) -> Operation:
        return Operation(provider=KIND, action="restore_snapshot", id=str(record["id"]),
                         target=str(record["collection"]),
                         data={"key": record["key"], "run_id": record["run_id"], "snapshot": record["snapshot"],
                               "snapshot_time": record["snapshot_time"], "started_at": record["started_at"]})

    def _poll_restore(self, operation: Operation) -> OperationStatus:
        collection = operation.target
        key = str(operation.data.get("key", ""))
        record = self.state.load_state(kind=OPS_KIND, key=key) if key else None
        snapshot = str(operation.data.get("snapshot", ""))
        info = self._read_collection(collection, doing=f"following the recovery of `{collection}`")
        if info is None:
            return OperationStatus(done=False, status="recovering",
                                   message=f"`{collection}` is being re-created from snapshot `{snapshot}`.")
        status = str(getattr(info.status, "value", info.status))
        if status == "red":
            return OperationStatus(done=True, failed=True, status=status,
                                   message=(f"Qdrant reports `{collection}` red after recovery from `{snapshot}`: "
                                            "an optimiser failed; read the server log before retrying."))
        if status not in READY:
            if record is not None and not record.get("seen_not_ready"):
                record["seen_not_ready"] = True
                self.state.save_state(kind=OPS_KIND, key=key, value=record)
            return OperationStatus(done=False, status=status,
                                   message=f"`{collection}` is {status}: recovering from snapshot `{snapshot}`.")
        if not self._settled(str(operation.data["started_at"]), record):
            return OperationStatus(done=False, status=status,
                                   message=f"`{collection}` is {status}; waiting for the recovery to show.")
        outputs = {"snapshot": snapshot, "points_count": self._points(collection),
                   "snapshot_time": operation.data.get("snapshot_time")}
        if record is not None and not record.get("finished"):
            record["finished"] = True  # a clean-up's delete need not wait for it (`_recovery_running`)
            self.state.save_state(kind=OPS_KIND, key=key, value=record)
        return OperationStatus(done=True, status=status, progress=1.0, outputs=outputs,
                               message=f"`{collection}` recovered from `{snapshot}`: "
                                       f"{outputs['points_count']:,} points.")

    def _settled(self, started_at: str, record: Mapping[str, Any] | None) -> bool:
        """A ready collection counts as recovered once drbot saw it not ready, or `settle_seconds` after the request."""
        started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
        settled = (self.clock.now() - started).total_seconds() >= self.settle_seconds
        return settled or bool(record is not None and record.get("seen_not_ready"))

    # ---- delete_collection (a drill's scratch collection)

    def _protected(self, collection: str) -> str:
        """Why `collection` may not be deleted ("" when it may): only a drill's scratch collection is."""
        if DRILL_MARK in collection and collection != str(self.settings.get("collection") or ""):
            return ""
        return (f"Refusing to delete collection `{collection}` on Qdrant at {display_url(self.url)}: "
                f"delete_collection only removes a drill's scratch collection (named `<collection>{DRILL_MARK}<run>`)"
                "; live collections are never deleted.")

    def _plan_delete(self, collection: str) -> dict[str, Any]:
        details: dict[str, Any] = {"collection": collection, "server": display_url(self.url),
                                   "warning": "Deletion is final; the scratch collection's points are not kept."}
        protected = self._protected(collection)
        if protected:
            details["problem"] = protected
            return details
        exists = self._exists(collection)
        details.update(exists=exists, points_now=self._points(collection) if exists else None)
        return details

    def _recovery_running(self, collection: str, run_id: str) -> bool:
        """Whether this run's own recovery into `collection` may still be running (it would re-create it)."""
        record = self.state.load_state(kind=OPS_KIND, key=self._key(collection, run_id))
        if record is None or record.get("finished") or record.get("deleted"):
            return False
        started = parse_iso(str(record["started_at"]))
        if (self.clock.now() - started).total_seconds() >= RECOVERY_GRACE_SECONDS:
            return False
        info = self._read_collection(collection, doing=f"reading collection `{collection}` before deleting it")
        if info is None:
            return True
        status = str(getattr(info.status, "value", info.status))
        if status == "red":
            return False
        return status not in READY or not self._settled(str(record["started_at"]), record)

    def _start_delete(self, params: Params, run_id: str) -> Operation:
        collection = str(params["collection"])
        protected = self._protected(collection)
        if protected:
            raise PermanentError(protected, provider=KIND, code="InvalidParameter")
        if self._recovery_running(collection, run_id):
            raise TransientError(f"Collection `{collection}` is still being recovered from a snapshot by {run_id}; "
                                 "it is deleted once the recovery finishes.", provider=KIND,
                                 code="CollectionNotReady")
        doing = f"deleting collection `{collection}`"
        try:
            existed = bool(self.client.delete_collection(collection_name=collection, timeout=self.timeout))
        except Exception as exc:
            if getattr(exc, "status_code", None) != 404:
                raise translate(exc, doing=doing, url=self.url, api_key=self._api_key,
                                api_key_env=self.api_key_env) from exc
            existed = False
        record = self.state.load_state(kind=OPS_KIND, key=self._key(collection, run_id))
        if record is not None and not record.get("deleted"):
            record["deleted"] = True  # a re-run of this delete finds it absent, not "still being recovered"
            self.state.save_state(kind=OPS_KIND, key=self._key(collection, run_id), value=record)
        now = iso(self.clock.now())
        op_id = "qdrant-delete-" + hashlib.sha256(self._key(collection, run_id).encode()).hexdigest()[:16]
        return Operation(provider=KIND, action="delete_collection", id=op_id, target=collection,
                         data={"existed": existed, "deleted_at": now, "run_id": run_id})

    def _poll_delete(self, operation: Operation) -> OperationStatus:
        """Qdrant deletes synchronously: the collection must be gone now; present means something re-created it."""
        collection = operation.target
        if self._exists(collection):
            return OperationStatus(done=True, failed=True, status="present",
                                   message=(f"Collection `{collection}` still exists on Qdrant at "
                                            f"{display_url(self.url)} after it was deleted (a recovery may have "
                                            "re-created it); delete it by hand."))
        existed = bool(operation.data.get("existed"))
        return OperationStatus(done=True, status="deleted", progress=1.0, outputs={"deleted": True},
                               message=(f"Deleted collection `{collection}`." if existed else
                                        f"Collection `{collection}` was already absent."))

    # ---- count_points

    def _start_count(self, params: Params) -> Operation:
        """Read-only, so a fresh count every time: a retried check must see the collection as it is now."""
        collection = str(params["collection"])
        if not self._exists(collection):
            raise PermanentError(f"Not found: {self._no_collection(collection)}", provider=KIND, code="NotFound")
        count = self._points(collection)
        now = iso(self.clock.now())
        return Operation(provider=KIND, action="count_points", id=f"qdrant-count-{collection}-{now}",
                         target=collection, data={"points_count": count, "counted_at": now})
