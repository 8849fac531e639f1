"""A fake kube-apiserver over HTTP that speaks the REST paths the official `kubernetes` client calls.

Why a server and not a mocked client: no kube-apiserver can run here (see APIS.md §4), and the provider is only
trustworthy if the real client's requests (paths, query strings, patch content types, bodies) are exercised.
It serves Velero Restores (validated against the real CRD schema, moving New → InProgress → a terminal phase over
successive GETs; a `namespaceMapping` target namespace is created, with copies of the source's Deployments, when
it completes), Velero Backups, Deployments (strategic merge patches, generation bumps and a rollout that advances
over successive status reads), Secrets and Namespaces (a DELETE makes one `Terminating` for
`namespace_terminating_reads` GETs, 409 Conflict to a second DELETE meanwhile, then it and everything in it is
gone: 404), answering errors with `Status` objects like the apiserver.

    with FakeKube() as kube:
        kube.add_deployment("rag-engine", "api", replicas=3, env={"LOG_LEVEL": "info"})
        api = kube.api_client()

Timed mode (`FakeKube(timer=OperationTimer(...))`, see timing.py): a Restore is InProgress until T = its creation +
`timer.duration`, and a rollout surges until T = its patch + `timer.duration`; T is in `kube.finished_at` under the
Restore's name, or `namespace/deployment` for a rollout.
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.fake_kube_schema import restore_causes, strategic_merge
from tests.doubles.timing import OperationTimer

TOKEN = "fake-kube-token"
VALIDATION_MESSAGE = "Either a backup or schedule must be specified as a source for the restore, but not both"
PATCH_TYPES = {"application/strategic-merge-patch+json", "application/merge-patch+json"}
_ROUTES = [
    ("restores", re.compile(r"^/apis/velero\.io/v1/namespaces/([^/]+)/restores(?:/([^/]+))?$")),
    ("backups", re.compile(r"^/apis/velero\.io/v1/namespaces/([^/]+)/backups(?:/([^/]+))?$")),
    ("deployments", re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+?)(/status)?$")),
    ("secrets", re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")),
]
_NAMESPACE = re.compile(r"^/api/v1/namespaces/([^/]+)$")
_GROUPS = {"restores": "velero.io", "backups": "velero.io", "deployments": "apps", "secrets": "", "namespaces": ""}
TERMINATING_MESSAGE = ("Operation cannot be fulfilled on namespaces \"{name}\": The system is ensuring all content is "
                       "removed from this namespace.  Upon completion, this namespace will automatically be purged by "
                       "the system.")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any
    status: int


@dataclass
class RestoreOutcome:
    """How created Restores end: `phase` plus what Velero writes for it."""

    phase: str = "Completed"
    in_progress_reads: int = 2
    errors: int = 0
    warnings: int = 0
    failure_reason: str = ""


@dataclass
class Fault:
    """Answer the next `times` matching requests with `code` (e.g. 500, 429, 403)."""

    method: str
    path_contains: str
    code: int
    times: int = 1
    message: str = ""


@dataclass
class FakeKubeState:
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    reads: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rollout_step: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    outcome: RestoreOutcome = field(default_factory=RestoreOutcome)
    rollout_reads: int = 2
    namespace_terminating_reads: int = 1
    """GETs that still see a deleted namespace `Terminating` before it is gone."""
    terminating: dict[str, int] = field(default_factory=dict)
    uid: int = 0


def status_body(code: int, reason: str, message: str, *, kind: str = "", name: str = "",
                causes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": kind}
    if causes:
        details["causes"] = causes
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


class FakeKube:
    """The server and its world. Seed with `add_*`; inspect with `get`, `requests`; inject with `fail`."""

    def __init__(self, *, timer: OperationTimer | None = None) -> None:
        self.state = FakeKubeState()
        self.timer = timer
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    # ---- lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"authorization": TOKEN}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)

    # ---- seeding and inspection

    def _meta(self, namespace: str, name: str, **extra: Any) -> dict[str, Any]:
        self.state.uid += 1
        return {"name": name, "namespace": namespace, "uid": f"uid-{self.state.uid}", "generation": 1,
                "resourceVersion": str(self.state.uid), "creationTimestamp": now_iso(), **extra}

    def add_backup(self, namespace: str, name: str, *, phase: str = "Completed", completed: str | None = None,
                   namespaces: list[str] | None = None, total_items: int = 142) -> None:
        body = {"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": self._meta(namespace, name),
                "spec": {"includedNamespaces": namespaces or ["*"], "ttl": "720h0m0s"},
                "status": {"phase": phase, "startTimestamp": completed or now_iso(),
                           "completionTimestamp": completed or now_iso(),
                           "progress": {"itemsBackedUp": total_items, "totalItems": total_items}}}
        with self.lock:
            self.state.objects[("backups", namespace, name)] = body

    def add_deployment(self, namespace: str, name: str, *, replicas: int = 3,
                       containers: dict[str, dict[str, str]] | None = None) -> None:
        specs = containers or {name: {}}
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": self._meta(namespace, name),
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [
                                          {"name": c, "image": f"registry.example/{c}:1",
                                           "env": [{"name": k, "value": v} for k, v in env.items()]}
                                          for c, env in specs.items()]}}},
                "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                           "readyReplicas": replicas, "availableReplicas": replicas}}
        with self.lock:
            self.state.objects[("deployments", namespace, name)] = body

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with self.lock:
            self.state.objects[("secrets", namespace, name)] = {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": self._meta(namespace, name),
                "data": dict(data)}

    def add_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        """A cluster-scoped Namespace (stored under namespace ""), `Active`."""
        with self.lock:
            self._put_namespace(name, labels=labels)

    def _put_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        meta = self._meta("", name, labels={"kubernetes.io/metadata.name": name, **(labels or {})})
        del meta["namespace"], meta["generation"]
        self.state.objects[("namespaces", "", name)] = {
            "apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.state.objects.get((kind, namespace, name))
            return copy.deepcopy(found)

    def names(self, kind: str, namespace: str) -> list[str]:
        with self.lock:
            return sorted(n for (k, ns, n) in self.state.objects if k == kind and ns == namespace)

    @property
    def finished_at(self) -> dict[str, float]:
        return self.timer.finished_at if self.timer is not None else {}

    @property
    def requests(self) -> list[Request]:
        with self.lock:
            return list(self.state.requests)

    def fail(self, method: str, path_contains: str, code: int, *, times: int = 1, message: str = "") -> None:
        with self.lock:
            self.state.faults.append(Fault(method, path_contains, code, times, message))

    # ---- behaviour

    def handle(self, method: str, path: str, query: dict[str, list[str]], content_type: str,
               body: Any) -> tuple[int, Any]:
        with self.lock:
            code, answer = self._route(method, path, query, content_type, body)
            self.state.requests.append(Request(method, path, query, content_type, body, code))
            return code, answer

    def _route(self, method: str, path: str, query: dict[str, list[str]], content_type: str,
               body: Any) -> tuple[int, Any]:
        for fault in self.state.faults:
            if fault.times > 0 and fault.method == method and fault.path_contains in path:
                fault.times -= 1
                reason = {404: "NotFound", 422: "Invalid", 429: "TooManyRequests", 403: "Forbidden",
                          500: "InternalError"}.get(fault.code, "Unknown")
                return fault.code, status_body(fault.code, reason, fault.message or f"injected {fault.code}")
        whole = _NAMESPACE.match(path)
        if whole is not None:
            return self._namespace(method, whole.group(1))
        for kind, pattern in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            namespace, name = match.group(1), match.group(2)
            if kind == "restores" and method == "POST" and name is None:
                return self._create_restore(namespace, body)
            if kind in {"restores", "backups"} and method == "GET" and name is None:
                return 200, self._list(kind, namespace, query)
            if kind == "deployments" and method == "PATCH" or kind == "secrets" and method == "PATCH":
                return self._patch(kind, namespace, str(name), content_type, body)
            if method == "GET" and name is not None:
                return self._read(kind, namespace, name, status=bool(kind == "deployments" and match.group(3)))
            return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported on {path}")
        return 404, status_body(404, "NotFound", "the server could not find the requested resource")

    def _namespace(self, method: str, name: str) -> tuple[int, Any]:
        """GET and DELETE of a Namespace, with its `Terminating` phase and the purge of what it holds."""
        key = ("namespaces", "", name)
        obj = self.state.objects.get(key)
        if obj is not None and name in self.state.terminating and self.state.terminating[name] <= 0:
            self._purge(name)
            obj = None
        if obj is None:
            return self._missing("namespaces", name) if method in {"GET", "DELETE"} else \
                (405, status_body(405, "MethodNotAllowed", f"{method} is not supported on namespaces"))
        if method == "GET":
            if name in self.state.terminating:
                self.state.terminating[name] -= 1
            return 200, copy.deepcopy(obj)
        if method != "DELETE":
            return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported on namespaces")
        if name in self.state.terminating:
            return 409, status_body(409, "Conflict", TERMINATING_MESSAGE.format(name=name), kind="namespaces",
                                    name=name)
        self.state.terminating[name] = self.state.namespace_terminating_reads
        obj["metadata"]["deletionTimestamp"] = now_iso()
        obj["status"] = {"phase": "Terminating"}
        return 200, copy.deepcopy(obj)

    def _purge(self, name: str) -> None:
        """The namespace controller's end: every object in the namespace, then the namespace itself."""
        for key in [k for k in self.state.objects if k[1] == name or k == ("namespaces", "", name)]:
            del self.state.objects[key]
        del self.state.terminating[name]

    def _missing(self, kind: str, name: str) -> tuple[int, Any]:
        qualified = f"{kind}.{_GROUPS[kind]}" if _GROUPS[kind] else kind
        return 404, status_body(404, "NotFound", f'{qualified} "{name}" not found', kind=kind, name=name)

    def _list(self, kind: str, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = dict(p.split("=", 1) for p in query.get("labelSelector", [""])[0].split(",") if "=" in p)
        items = [copy.deepcopy(obj) for (k, ns, _), obj in sorted(self.state.objects.items())
                 if k == kind and ns == namespace
                 and all(obj["metadata"].get("labels", {}).get(a) == b for a, b in wanted.items())]
        kind_name = "Restore" if kind == "restores" else "Backup"
        return {"apiVersion": "velero.io/v1", "kind": f"{kind_name}List",
                "metadata": {"resourceVersion": str(self.state.uid)}, "items": items}

    def _create_restore(self, namespace: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, status_body(400, "BadRequest", "the request body is not a JSON object")
        name = str(body.get("metadata", {}).get("name", ""))
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name) \
                or len(name) > 253:
            return 422, status_body(422, "Invalid", f'Restore.velero.io "{name}" is invalid: metadata.name: '
                                    "Invalid value: a lowercase RFC 1123 subdomain must consist of lower case "
                                    "alphanumeric characters, '-' or '.'", kind="Restore", name=name)
        causes = restore_causes(body)
        if causes:
            return 422, status_body(422, "Invalid", f'Restore.velero.io "{name}" is invalid: '
                                    + "; ".join(c["message"] for c in causes), kind="Restore", name=name,
                                    causes=causes)
        key = ("restores", namespace, name)
        if key in self.state.objects:
            return 409, status_body(409, "AlreadyExists", f'restores.velero.io "{name}" already exists',
                                    kind="restores", name=name)
        stored = copy.deepcopy(body)
        stored["metadata"] = {**self._meta(namespace, name), **{k: v for k, v in body["metadata"].items()
                                                                if k in {"labels", "annotations"}}}
        self.state.objects[key] = stored
        self.state.reads[key] = 0
        if self.timer is not None:
            self.timer.begin(name)
        return 201, copy.deepcopy(stored)

    def _read(self, kind: str, namespace: str, name: str, *, status: bool) -> tuple[int, Any]:
        key = (kind, namespace, name)
        obj = self.state.objects.get(key)
        if obj is None:
            return self._missing(kind, name)
        if kind == "restores":
            self._advance_restore(key, obj)
        if kind == "deployments" and status:
            self._advance_rollout(namespace, name, obj)
        return 200, copy.deepcopy(obj)

    def _advance_restore(self, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        """Each GET moves the Restore one step, like successive reconciles of the Velero controller."""
        reads = self.state.reads[key] = self.state.reads.get(key, 0) + 1
        spec, status = obj.get("spec", {}), obj.setdefault("status", {})
        if status.get("phase") in {"Completed", "PartiallyFailed", "Failed", "FailedValidation"}:
            return
        if reads == 1 and self.timer is None:
            status["phase"] = "New"
            return
        backup = self.state.objects.get(("backups", key[1], str(spec.get("backupName"))))
        problems = [VALIDATION_MESSAGE] if bool(spec.get("backupName")) == bool(spec.get("scheduleName")) else []
        if not problems and backup is None:
            problems = [f'Error retrieving backup: backups.velero.io "{spec.get("backupName")}" not found']
        if problems:
            status.update(phase="FailedValidation", validationErrors=problems, completionTimestamp=now_iso())
            return
        assert backup is not None
        total = int(backup["status"]["progress"]["totalItems"])
        outcome = self.state.outcome
        step = reads - 1
        status.setdefault("startTimestamp", now_iso())
        timed = self.timer is not None and not self.timer.done(key[2])
        if timed or self.timer is None and step <= outcome.in_progress_reads:
            share = self.timer.fraction(key[2]) if self.timer else (step - 1) / max(outcome.in_progress_reads, 1)
            done = math.floor(total * share)
            status.update(phase="InProgress", progress={"itemsRestored": done, "totalItems": total})
            return
        restored = total if outcome.phase == "Completed" else total - max(outcome.errors, 1)
        status.update(phase=outcome.phase, completionTimestamp=now_iso(),
                      progress={"itemsRestored": restored, "totalItems": total})
        if outcome.phase in {"Completed", "PartiallyFailed"}:
            self._restore_into(dict(spec.get("namespaceMapping") or {}))
        if outcome.errors:
            status["errors"] = outcome.errors
        if outcome.warnings:
            status["warnings"] = outcome.warnings
        if outcome.failure_reason:
            status["failureReason"] = outcome.failure_reason

    def _restore_into(self, mapping: dict[str, str]) -> None:
        """What Velero does for `namespaceMapping`: create each target namespace and restore the source's objects
        (here its Deployments) into it; the source is not touched."""
        for source, target in mapping.items():
            if ("namespaces", "", target) not in self.state.objects:
                self._put_namespace(target, labels={"velero.io/restore-from": source})
            for (kind, ns, name), obj in list(self.state.objects.items()):
                if kind == "deployments" and ns == source and (kind, target, name) not in self.state.objects:
                    copied = copy.deepcopy(obj)
                    copied["metadata"] = self._meta(target, name)
                    self.state.objects[(kind, target, name)] = copied

    def _advance_rollout(self, namespace: str, name: str, obj: dict[str, Any]) -> None:
        """Each status read moves a pending rollout one step: surge, then all new replicas available."""
        generation = int(obj["metadata"]["generation"])
        status, want = obj["status"], int(obj["spec"].get("replicas", 1))
        if status.get("observedGeneration") == generation and status.get("updatedReplicas") == want \
                and status.get("availableReplicas") == want and status.get("replicas") == want:
            return
        step = self.state.rollout_step[(namespace, name)] = self.state.rollout_step.get((namespace, name), 0) + 1
        timed = self.timer is not None and not self.timer.done(f"{namespace}/{name}")
        if timed or self.timer is None and step < self.state.rollout_reads:
            share = self.timer.fraction(f"{namespace}/{name}") if self.timer else step / self.state.rollout_reads
            updated = max(1, math.ceil(want * share)) if want else 0
            status.update(observedGeneration=generation, updatedReplicas=updated, replicas=want + 1,
                          availableReplicas=max(want - 1, 0), readyReplicas=max(want - 1, 0))
            return
        status.update(observedGeneration=generation, updatedReplicas=want, replicas=want,
                      availableReplicas=want, readyReplicas=want)

    def _patch(self, kind: str, namespace: str, name: str, content_type: str, body: Any) -> tuple[int, Any]:
        if content_type not in PATCH_TYPES:
            return 415, status_body(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                    f"format - accepted media types include: {', '.join(sorted(PATCH_TYPES))}")
        key = (kind, namespace, name)
        obj = self.state.objects.get(key)
        if obj is None:
            return self._missing(kind, name)
        merged = strategic_merge(obj, {k: v for k, v in body.items() if k not in {"status", "metadata"}})
        if kind == "secrets":
            merged["metadata"] = obj["metadata"]
        if kind == "deployments":
            for container in merged["spec"]["template"]["spec"]["containers"]:
                for env in container.get("env", []):
                    if env.get("value") and env.get("valueFrom"):
                        return 422, status_body(422, "Invalid", f'Deployment.apps "{name}" is invalid: '
                                                "env.valueFrom: Invalid value: may not be specified when `value` "
                                                "is not empty", kind="Deployment", name=name)
            if merged["spec"] != obj["spec"]:
                merged["metadata"]["generation"] = int(obj["metadata"]["generation"]) + 1
                self.state.rollout_step[(namespace, name)] = 0
                if self.timer is not None:
                    self.timer.begin(f"{namespace}/{name}")
        self.state.uid += 1
        merged["metadata"]["resourceVersion"] = str(self.state.uid)
        self.state.objects[key] = merged
        return 200, copy.deepcopy(merged)


def _handler(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, status_body(401, "Unauthorized", "Unauthorized"))
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                self._reply(400, status_body(400, "BadRequest", "the request body is not valid JSON"))
                return
            code, answer = fake.handle(method, parts.path, parse_qs(parts.query), content_type, body)
            self._reply(code, answer)

        def _reply(self, code: int, answer: Any) -> None:
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

    return Handler
