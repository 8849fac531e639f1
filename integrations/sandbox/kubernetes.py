"""Sandbox twin of a Kubernetes cluster with Velero: Deployment env/Secret patches and scaling with kubectl-like
rollouts, Velero restores that go `New` → `InProgress` (items restored / total) → `Completed`, and the deletion of
a drill's scratch namespace (`Terminating` → gone).

The world starts with the configured Deployment (3 replicas) in its namespace and a Velero namespace holding three
daily `Completed` backups plus a newer hourly backup that `PartiallyFailed` — so `latest` visibly means "newest
Completed", as an SRE would want. A restore with `namespace_mapping` (a drill's) creates each target namespace;
`delete_namespace` removes only such a namespace (named `*-drill-*`, made by a run), never the seeded one. Secret
values are never stored or echoed: only key names and fingerprints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from integrations.common import ActionImpl, Params
from integrations.kubernetes.velero import mapping_note, mapping_problems, scratch_refusal
from integrations.kubernetes.velero import parse_namespace_mapping as _namespace_mapping
from integrations.sandbox.phases import stamp, whole_seconds
from integrations.sandbox.records import OPS_KIND, TARGETS_KIND, Write, digest
from integrations.sandbox.world import SandboxProvider, refuse
from runbooks.actions import ACTIONS
from runbooks.ports import Operation, RecoveryPoint
from runbooks.timeline import parse_iso

DEPLOY_KIND = "sandbox.k8s"
SECRET_KIND = "sandbox.k8s.secrets"
VELERO_KIND = "sandbox.velero"
NAMESPACE_KIND = "sandbox.k8s.namespaces"
"""`<context>/<namespace>` → {name, phase, run_id (None for the seeded one), restore, backup, from, created_at};
a deleted namespace keeps its record with `deletion` (the operation) and `deleted_at`, like a deleted instance."""
ROLLOUT_SECONDS = ACTIONS["kubernetes.set_env"].typical  # real-world seconds, shared with plans' forecasts
VELERO_SECONDS = ACTIONS["kubernetes.velero_restore"].typical  # real-world seconds, shared with plans' forecasts
DELETE_NS_SECONDS = ACTIONS["kubernetes.delete_namespace"].typical
SEED_REPLICAS = 3
SEED_ENV = {"LOG_LEVEL": "info", "QDRANT_URL": "http://qdrant:6333"}
_ROLLOUT_PHASES = [("progressing", 0.0), ("complete", 1.0)]


class SandboxKubernetes(SandboxProvider):
    resource = "kubernetes"
    required_settings = {"deployment": "rag-engine-api"}

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "set_env": ActionImpl(self._plan_rollout, self._preflight_set_env, self._start_set_env),
            "check_deployment": ActionImpl(self._plan_check, self._preflight_check, self._start_check,
                                           verify=self._verify_check),
            "set_secret": ActionImpl(self._plan_rollout, self._preflight_set_secret, self._start_set_secret),
            "scale": ActionImpl(self._plan_rollout, self._preflight_scale, self._start_scale),
            "velero_restore": ActionImpl(self._plan_velero, self._preflight_velero, self._start_velero),
            "delete_namespace": ActionImpl(self._plan_delete_ns, self._preflight_delete_ns, self._start_delete_ns),
        }

    # ---- the world

    @property
    def _context(self) -> str:
        return str(self.settings.get("context") or self.environment)

    def _seed(self) -> None:
        deployment = self.settings.get("deployment")
        namespace = str(self.settings.get("namespace", "default"))
        now = self.clock.now()
        key = f"{self._context}/{namespace}/{deployment}"
        if self._load(NAMESPACE_KIND, f"{self._context}/{namespace}") is None:
            self._save(NAMESPACE_KIND, f"{self._context}/{namespace}", {
                "name": namespace, "phase": "Active", "run_id": None, "created_at": stamp(now)})
        if self._load(DEPLOY_KIND, key) is None:
            self._save(DEPLOY_KIND, key, {
                "name": str(deployment), "namespace": namespace, "replicas": SEED_REPLICAS, "generation": 7,
                "containers": {str(deployment): {"env": dict(SEED_ENV)}}, "restarted_at": None})
        vkey = f"{self._context}/{self.settings.get('velero_namespace', 'velero')}"
        if self._load(VELERO_KIND, vkey) is None:
            daily = now.replace(hour=2, minute=0, second=0, microsecond=0)
            if daily > now:
                daily -= timedelta(days=1)
            backups = [{"name": f"daily-{daily - timedelta(days=d):%Y%m%d%H%M%S}", "phase": "Completed",
                        "created_at": stamp(daily - timedelta(days=d)), "total_items": 142 - d,
                        "namespaces": [namespace]} for d in (2, 1, 0)]
            hourly = whole_seconds(now - timedelta(minutes=30))
            backups.append({"name": f"hourly-{hourly:%Y%m%d%H%M%S}", "phase": "PartiallyFailed",
                            "created_at": stamp(hourly), "total_items": 143, "namespaces": [namespace]})
            self._save(VELERO_KIND, vkey, {"backups": backups, "restores": []})

    def _recovery_point(self) -> RecoveryPoint:
        namespace = self.settings.get("velero_namespace", "velero")
        velero = self._load(VELERO_KIND, f"{self._context}/{namespace}") or {"backups": []}
        backups = sorted(velero["backups"], key=lambda b: parse_iso(b["created_at"]))
        failed = tuple(b["name"] for b in backups if b["phase"] in ("Failed", "PartiallyFailed"))
        done = [b for b in backups if b["phase"] == "Completed"]
        cause = ""
        if backups and backups[-1]["phase"] != "Completed":
            cause = f"the newest Velero backup {backups[-1]['name']} {backups[-1]['phase']}"
        if not done:
            return RecoveryPoint(newest=None, what="no Completed Velero backup", failed=failed, calls=1,
                                 cause=cause or f"no Completed Velero backup in namespace {namespace}")
        newest = done[-1]
        return RecoveryPoint(newest=parse_iso(newest["created_at"]), failed=failed, cause=cause, calls=1,
                             what=f"Velero backup {newest['name']} (Completed)")

    def _deployment(self, params: Params) -> tuple[str, dict[str, Any] | None]:
        key = f"{params.get('context') or self._context}/{params['namespace']}/{params['deployment']}"
        return key, self._load(DEPLOY_KIND, key)

    def _missing_deployment(self, params: Params) -> str:
        known = ", ".join(sorted(self.state.list_state(kind=DEPLOY_KIND))) or "none"
        return (f'deployments.apps "{params["deployment"]}" not found in namespace `{params["namespace"]}` '
                f"(known: {known}); check {self.where}.deployment and .namespace in drbot.yml.")

    def _progress_message(self, record: Mapping[str, Any], fraction: float, status: str) -> str:
        detail = record.get("detail", {})
        if record["action"] == "velero_restore":
            total = int(detail.get("total_items", 0))
            restored = total if fraction >= 1 else int(total * fraction)
            return f"{status}: itemsRestored {restored}/{total}"
        if record["action"] == "delete_namespace":
            return f'namespace `{record["target"]}` is gone' if fraction >= 1 else \
                f'namespace `{record["target"]}` is {status}'
        if record["action"] == "check_deployment":
            out = record["outputs"]
            if out["ready_replicas"] < out["replicas"]:
                return (f'deployment "{record["target"]}" has {out["ready_replicas"]} of {out["replicas"]} '
                        f"replicas ready: the cut-over target is not healthy")
            return (f'deployment "{record["target"]}" has {out["ready_replicas"]}/{out["replicas"]} replicas ready, '
                    f"image {out['image']}; env a cut-over would change: {', '.join(out['would_change']) or 'none'}")
        replicas = int(detail.get("replicas", 0))
        if fraction >= 1:
            return f'deployment "{record["target"]}" successfully rolled out ({replicas}/{replicas} available)'
        updated, available = math.ceil(replicas * fraction), math.floor(replicas * fraction)
        return (f'Waiting for deployment "{record["target"]}" rollout to finish: {updated} of {replicas} updated '
                f"replicas, {available} available")

    # ---- rollouts

    def _plan_rollout(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"deployment": params["deployment"], "namespace": params["namespace"],
                                   "context": params.get("context") or self._context,
                                   "expected_duration": self._expected(ROLLOUT_SECONDS)}
        _, record = self._deployment(params)
        if record is not None:
            details["replicas_now"] = record["replicas"]
            details["generation_now"] = record["generation"]
        if isinstance(params.get("env"), Mapping):
            details["env"] = dict(params["env"])
        if isinstance(params.get("data"), Mapping):
            details["secret"] = params.get("secret")
            details["secret_keys"] = sorted(params["data"])
            details["note"] = "Secret values are hidden; the Deployment restarts to pick them up."
        if "replicas" in params:
            details["replicas"] = params["replicas"]
            if params["replicas"] == 0:
                details["warning"] = "Scaling to 0 stops every pod: the service stops answering."
        return details

    def _deployment_problems(self, params: Params) -> list[str]:
        _, record = self._deployment(params)
        if record is None:
            return [self._missing_deployment(params)]
        container = params.get("container")
        if container and container not in record["containers"]:
            return [f"Deployment `{record['name']}` has no container `{container}` (containers: "
                    f"{', '.join(record['containers'])}); leave `container` out to patch the first one."]
        return []

    def _mapping_problem(self, params: Params, name: str) -> list[str]:
        value = params.get(name)
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            return []
        return [f"`{name}` must be a non-empty mapping of NAME: value, e.g. {{LOG_LEVEL: debug}}; got {value!r}."]

    def _preflight_set_env(self, params: Params) -> list[str]:
        return self._mapping_problem(params, "env") + self._deployment_problems(params)

    def _preflight_set_secret(self, params: Params) -> list[str]:
        return self._mapping_problem(params, "data") + self._deployment_problems(params)

    def _preflight_scale(self, params: Params) -> list[str]:
        replicas = params.get("replicas")
        problems = [] if isinstance(replicas, int) and not isinstance(replicas, bool) and 0 <= replicas <= 100 \
            else [f"`replicas` must be a whole number from 0 to 100; got {replicas!r}."]
        return problems + self._deployment_problems(params)

    def _checked(self, params: Params, problems: list[str]) -> tuple[str, dict[str, Any]]:
        key, record = self._deployment(params)
        if problems or record is None:
            raise refuse(problems[0] if problems else self._missing_deployment(params), code="NotFound")
        return key, record

    def _rollout(self, *, action: str, params: Params, run_id: str, key: str, record: dict[str, Any],
                 outputs_of: str, fingerprint: str, extra_writes: list[Write] | None = None) -> Operation:
        timeline = self._timeline(ROLLOUT_SECONDS, _ROLLOUT_PHASES)
        record = {**record, "generation": int(record["generation"]) + 1}
        outputs: dict[str, Any] = {"generation": record["generation"]}
        if outputs_of == "replicas":
            outputs["replicas"] = record["replicas"]
        return self._begin(action=action, target=str(record["name"]), run_id=run_id, timeline=timeline,
                           outputs=outputs, writes=[*(extra_writes or []), Write(DEPLOY_KIND, key, record)],
                           detail={"replicas": record["replicas"]}, inflight_key=fingerprint)

    def _start_set_env(self, params: Params, run_id: str) -> Operation:
        key, record = self._checked(params, self._preflight_set_env(params))
        container = str(params.get("container") or next(iter(record["containers"])))
        containers = {**record["containers"]}
        containers[container] = {"env": {**containers[container]["env"],
                                         **{k: str(v) for k, v in params["env"].items()}}}
        return self._rollout(action="set_env", params=params, run_id=run_id, key=key,
                             record={**record, "containers": containers}, outputs_of="replicas",
                             fingerprint=digest(json.dumps(params["env"], sort_keys=True, default=str)))

    def _start_set_secret(self, params: Params, run_id: str) -> Operation:
        key, record = self._checked(params, self._preflight_set_secret(params))
        secret_key = f"{params.get('context') or self._context}/{params['namespace']}/{params['secret']}"
        prints = {k: digest(str(v))[:12] for k, v in params["data"].items()}
        secret = {**(self._load(SECRET_KIND, secret_key) or {"name": params["secret"], "keys": {}})}
        secret["keys"] = {**secret["keys"], **prints}
        return self._rollout(action="set_secret", params=params, run_id=run_id, key=key,
                             record={**record, "restarted_at": stamp(self.clock.now())}, outputs_of="",
                             fingerprint=digest(json.dumps(prints, sort_keys=True)),
                             extra_writes=[Write(SECRET_KIND, secret_key, secret)])

    def _start_scale(self, params: Params, run_id: str) -> Operation:
        key, record = self._checked(params, self._preflight_scale(params))
        return self._rollout(action="scale", params=params, run_id=run_id, key=key,
                             record={**record, "replicas": int(params["replicas"])}, outputs_of="replicas",
                             fingerprint=str(params["replicas"]))

    # ---- check_deployment (read-only)

    def _env_problem(self, params: Params) -> list[str]:
        env = params.get("env")
        if env is None or isinstance(env, Mapping) and all(isinstance(k, str) and k for k in env):
            return []
        return [f"`env` must be a mapping of NAME: value (what the cut-over would set), e.g. {{LOG_LEVEL: debug}}; "
                f"got {env!r}."]

    def _preflight_check(self, params: Params) -> list[str]:
        return self._env_problem(params) + self._deployment_problems(params)

    def _ready(self, record: Mapping[str, Any]) -> int:
        """All replicas, unless a rollout of this Deployment is still running: then the available ones its
        progress message shows."""
        replicas, now = int(record["replicas"]), self.clock.now()
        ready = replicas
        for action in ("set_env", "set_secret", "scale"):
            index = self._load(TARGETS_KIND, f"{self.resource}.{action}:{record['name']}") or {}
            op = self._load(OPS_KIND, str(index["operation"])) if index.get("operation") else None
            if op is None or op.get("environment") != self.environment or parse_iso(op["finishes_at"]) <= now:
                continue
            started = parse_iso(op["started_at"])
            total = (parse_iso(op["finishes_at"]) - started).total_seconds()
            fraction = min(1.0, max(0.0, (now - started).total_seconds() / total)) if total > 0 else 1.0
            ready = min(ready, math.floor(replicas * fraction))
        return ready

    def _outputs_check(self, params: Params) -> dict[str, Any]:
        _, record = self._checked(params, self._preflight_check(params))
        name = str(params.get("container") or next(iter(record["containers"])))
        container = record["containers"][name]
        now, env = container["env"], params.get("env") or {}
        return {"ready_replicas": self._ready(record), "replicas": int(record["replicas"]),
                "image": str(container.get("image") or f"registry.sandbox/{name}:1"),
                "would_change": sorted(k for k, v in env.items() if now.get(k) != str(v))}

    def _plan_check(self, params: Params) -> dict[str, Any]:
        details: dict[str, Any] = {"deployment": params["deployment"], "namespace": params["namespace"],
                                   "context": params.get("context") or self._context,
                                   "note": "Read-only: reads the Deployment and changes nothing."}
        problems = self._preflight_check(params)
        if problems:
            details["problem"] = problems[0]
            return details
        details.update(self._outputs_check(params))
        return details

    def _start_check(self, params: Params, run_id: str) -> Operation:
        outputs = self._outputs_check(params)
        healthy = outputs["ready_replicas"] >= outputs["replicas"]
        return self._begin(action="check_deployment", target=str(params["deployment"]), run_id=run_id,
                           timeline=self._instant("healthy" if healthy else "unhealthy"), outputs=outputs)

    def _verify_check(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        ready, want = int(outputs.get("ready_replicas") or 0), int(outputs.get("replicas") or 0)
        if ready >= want:
            return []
        name, namespace = params["deployment"], params["namespace"]
        return [f"deployment `{name}` in namespace `{namespace}` has {ready} of {want} replicas ready: the cut-over "
                f"target is not healthy (see `kubectl describe deployment {name} -n {namespace}`)."]

    # ---- velero

    def _velero(self, params: Params) -> tuple[str, dict[str, Any]]:
        namespace = params.get("velero_namespace") or self.settings.get("velero_namespace", "velero")
        key = f"{params.get('context') or self._context}/{namespace}"
        return key, self._load(VELERO_KIND, key) or {"backups": [], "restores": []}

    def _backup(self, params: Params) -> tuple[dict[str, Any] | None, str]:
        _, velero = self._velero(params)
        backups = velero["backups"]
        done = sorted((b for b in backups if b["phase"] == "Completed"), key=lambda b: parse_iso(b["created_at"]))
        name = str(params["backup"])
        if name.lower() == "latest":
            if not done:
                return None, "There is no Completed Velero backup to restore; run `velero backup create` first."
            return done[-1], ""
        found = next((b for b in backups if b["name"] == name), None)
        names = ", ".join(b["name"] for b in done) or "none"
        if found is None:
            return None, f"Velero backup `{name}` does not exist; Completed backups: {names} (or use `latest`)."
        if found["phase"] != "Completed":
            return None, (f"Velero backup `{name}` is `{found['phase']}`, not Completed, so a restore would be "
                          f"incomplete; pick a Completed backup ({names}) or use `latest`.")
        return found, ""

    def _plan_velero(self, params: Params) -> dict[str, Any]:
        backup, problem = self._backup(params)
        mapping, bad = _namespace_mapping(params.get("namespace_mapping"))
        details: dict[str, Any] = {"backup": params["backup"], "expected_duration": self._expected(VELERO_SECONDS)}
        if backup is not None:
            details.update(backup=backup["name"], backup_time=backup["created_at"], phase=backup["phase"],
                           total_items=backup["total_items"], namespaces=backup["namespaces"],
                           note="Velero skips objects that already exist; delete broken ones first to replace them.")
        if mapping:
            details["namespace_mapping"] = mapping
            details["note"] = mapping_note(mapping)
        if problem or bad:
            details["problem"] = bad or problem
        return details

    def _preflight_velero(self, params: Params) -> list[str]:
        mapping, bad = _namespace_mapping(params.get("namespace_mapping"))
        if bad:
            return [bad]
        backup, problem = self._backup(params)
        if backup is None:
            return [problem]
        wanted = params.get("include_namespaces") or []
        wanted = [wanted] if isinstance(wanted, str) else [str(n) for n in wanted]
        has = [str(n) for n in backup["namespaces"]]
        absent = [n for n in wanted if n not in has and n != "*"]
        if absent:
            return [f"Backup `{backup['name']}` does not contain namespace(s) {', '.join(absent)} (it has "
                    f"{', '.join(has)}); fix include_namespaces."]
        return mapping_problems(mapping, included=wanted, has=has)

    def _start_velero(self, params: Params, run_id: str) -> Operation:
        problems = self._preflight_velero(params)
        backup, _ = self._backup(params)
        if problems or backup is None:
            raise refuse(problems[0], code="BackupNotFound")
        vkey, velero = self._velero(params)
        mapping, _ = _namespace_mapping(params.get("namespace_mapping"))
        timeline = self._timeline(VELERO_SECONDS, [("New", 0.0), ("InProgress", 0.05), ("Completed", 1.0)])
        restore = f"{backup['name']}-{timeline.started_at:%Y%m%d%H%M%S}"
        total = int(backup["total_items"])
        made: dict[str, Any] = {"name": restore, "backup": backup["name"], "created_at": stamp(timeline.started_at)}
        if mapping:
            made["namespace_mapping"] = mapping
        velero = {**velero, "restores": [*velero["restores"], made]}
        context = str(params.get("context") or self._context)
        # Velero creates each target namespace as it restores into it (and restores into one that exists, skipping
        # what is already there): a mapped target is a new namespace this run made.
        namespaces = [Write(NAMESPACE_KIND, f"{context}/{target}", {
            "name": target, "phase": "Active", "run_id": run_id, "restore": restore, "backup": backup["name"],
            "from": source, "created_at": stamp(timeline.started_at)}) for source, target in mapping.items()]
        outputs = {"restore": restore, "backup": backup["name"], "phase": "Completed", "items_restored": total,
                   "total_items": total, "backup_time": backup["created_at"]}
        return self._begin(action="velero_restore", target=str(backup["name"]), run_id=run_id, timeline=timeline,
                           outputs=outputs, writes=[Write(VELERO_KIND, vkey, velero), *namespaces],
                           detail={"total_items": total},
                           inflight_key=json.dumps(mapping, sort_keys=True) if mapping else "")

    # ---- delete_namespace (a drill's scratch namespace)

    def _namespace(self, params: Params) -> tuple[str, dict[str, Any] | None]:
        key = f"{params.get('context') or self._context}/{params['namespace']}"
        record = self._load(NAMESPACE_KIND, key)
        return key, None if record is None or record.get("deletion") else record

    def _protected_ns(self, params: Params) -> str:
        """The real provider's rule and sentence, plus what the sandbox knows: a namespace no run made (the seeded
        one) is never a scratch one, whatever its name."""
        name = str(params["namespace"])
        live = str(self.settings.get("namespace") or "")
        _, record = self._namespace(params)
        if record is not None and not record.get("run_id"):
            live = name
        return scratch_refusal(name, live=live)

    def _plan_delete_ns(self, params: Params) -> dict[str, Any]:
        _, record = self._namespace(params)
        details: dict[str, Any] = {"namespace": params["namespace"], "context": params.get("context") or self._context,
                                   "status": str(record["phase"]) if record else "not found",
                                   "expected_duration": self._expected(DELETE_NS_SECONDS),
                                   "warning": "Deletes the namespace and everything in it; there is no undo."}
        protected = self._protected_ns(params)
        if protected:
            details["problem"] = protected
        return details

    def _preflight_delete_ns(self, params: Params) -> list[str]:
        protected = self._protected_ns(params)
        return [protected] if protected else []  # absent is fine: the clean-up attaches to "already gone"

    def _start_delete_ns(self, params: Params, run_id: str) -> Operation:
        protected = self._protected_ns(params)
        if protected:
            raise refuse(protected, code="InvalidParameter")
        name = str(params["namespace"])
        key, record = self._namespace(params)
        outputs = {"deleted": True, "namespace": name}
        if record is None:  # already gone (or never made): done, as the apiserver's 404 is
            return self._begin(action="delete_namespace", target=name, run_id=run_id,
                               timeline=self._instant("deleted"), outputs=outputs)
        timeline = self._timeline(DELETE_NS_SECONDS, [("Terminating", 0.0), ("deleted", 1.0)])
        gone = {**record, "phase": "Terminating", "deletion": self._op_id("delete_namespace", name, run_id),
                "deleted_at": stamp(timeline.finishes_at)}
        return self._begin(action="delete_namespace", target=name, run_id=run_id, timeline=timeline,
                           outputs=outputs, writes=[Write(NAMESPACE_KIND, key, gone)])

