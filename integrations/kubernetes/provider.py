"""The `kubernetes` provider: Velero restores, Deployment rollouts and a drill's scratch namespace deletion through
the official client.

Why one client per kube context: a step may name another `context` than drbot.yml's (a DR cluster), and each
context has its own credentials. Clients are built on first use, so `drbot --help` never imports the SDK and a
provider for an unreachable cluster can still be constructed (and `drbot check` can report it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from integrations.kubernetes import rollout, velero
from integrations.kubernetes.client import PROVIDER_KIND, KubeApi, build_api_client, not_found
from runbooks.actions import ACTIONS
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Clock, Operation, OperationStatus, RecoveryPoint, StateStore, SystemClock

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

RESOURCE = "kubernetes"
_OUTPUTS = {"set_env": ("generation", "replicas"), "scale": ("generation", "replicas"), "set_secret": ("generation",)}


class KubernetesProvider:
    """`runbooks.ports.Provider` for a Kubernetes cluster with Velero."""

    kind = PROVIDER_KIND

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any],
                 client: ApiClient | Callable[[str], ApiClient] | None = None, state: StateStore | None = None,
                 clock: Clock | None = None) -> None:
        self.environment = environment
        self.resource_name = resource
        self.settings = dict(settings)
        self.state = state
        self.clock: Clock = clock or SystemClock()
        self._client = client
        self._apis: dict[str, KubeApi] = {}

    @property
    def where(self) -> str:
        return f"environments.{self.environment}.{self.resource_name}"

    # ---- Provider protocol

    def actions(self) -> frozenset[str]:
        return frozenset(a.name for a in ACTIONS.values() if a.resource == RESOURCE)

    def plan(self, *, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        name = self._check(action, params)
        kube, context = self._api(params)
        if name == "velero_restore":
            return {**velero.plan(kube, params=params, namespace=self._velero_ns(params)), "context": context}
        if name == "delete_namespace":
            return self._plan_delete_namespace(kube, params, context=context)
        details: dict[str, Any] = {"deployment": params["deployment"], "namespace": params["namespace"],
                                   "context": context}
        deployment = self._deployment_or_none(kube, params)
        if deployment is None:
            details["problem"] = rollout.missing_deployment(str(params["deployment"]), str(params["namespace"]))
            return details
        details.update(replicas_now=deployment["spec"].get("replicas"),
                       generation_now=deployment["metadata"]["generation"])
        if name == "set_env":
            container = rollout.pick_container(deployment, params.get("container"))
            if isinstance(container, str):
                details["problem"] = container
            else:
                details.update(container=container["name"], env=rollout.env_plan(container, params["env"]))
        elif name == "check_deployment":
            container = rollout.pick_container(deployment, params.get("container"))
            if isinstance(container, str):
                details["problem"] = container
            else:
                env: Mapping[str, Any] = params["env"] if isinstance(params.get("env"), Mapping) else {}
                outputs = rollout.check_outputs(deployment, container, env)
                details.update(container=container["name"], image=outputs["image"],
                               ready_replicas=outputs["ready_replicas"], would_change=outputs["would_change"],
                               env=rollout.env_plan(container, env),
                               note="Read-only: reads the Deployment and changes nothing.")
        elif name == "scale":
            details["replicas"] = params["replicas"]
            if params["replicas"] == 0:
                details["warning"] = "Scaling to 0 stops every pod: the service stops answering."
        else:
            existing = rollout.read_secret(kube, name=str(params["secret"]), namespace=str(params["namespace"]))
            details.update(secret=params["secret"], secret_keys=rollout.secret_plan(existing, params["data"]),
                           note="Secret values are hidden; the Deployment restarts to pick them up.")
        return details

    def preflight(self, *, action: str, params: Mapping[str, Any]) -> list[str]:
        name = self._impl_name(action)
        missing = self._missing(name, params)
        if missing:
            return missing
        if name == "delete_namespace":  # an absent namespace is fine: the clean-up attaches to "already gone"
            refusal = velero.scratch_refusal(str(params["namespace"]), live=self._live_namespace())
            return [refusal] if refusal else []
        kube, _ = self._api(params)
        if name == "velero_restore":
            return velero.preflight(kube, params=params, namespace=self._velero_ns(params))
        problems = self._param_problems(name, params)
        try:
            deployment = self._deployment_or_none(kube, params)
        except PermanentError as exc:
            return [*problems, exc.message]
        if deployment is None:
            return [*problems, rollout.missing_deployment(str(params["deployment"]), str(params["namespace"]))]
        if name in {"set_env", "check_deployment"}:
            container = rollout.pick_container(deployment, params.get("container"))
            problems += [container] if isinstance(container, str) else []
        if name == "set_secret" and isinstance(params.get("data"), Mapping) and rollout.read_secret(
                kube, name=str(params["secret"]), namespace=str(params["namespace"])) is None:
            problems.append(f"Secret `{params['secret']}` does not exist in namespace `{params['namespace']}`; "
                            f"create it first (`kubectl create secret generic {params['secret']} "
                            f"-n {params['namespace']}`).")
        return problems

    def start(self, *, action: str, params: Mapping[str, Any], run_id: str) -> Operation:
        name = self._check(action, params)
        if name == "delete_namespace":  # refused before any client is built or any request is made
            refusal = velero.scratch_refusal(str(params["namespace"]), live=self._live_namespace())
            if refusal:
                raise PermanentError(refusal, provider=self.kind, code="InvalidParameter")
        problems = [] if name in {"velero_restore", "delete_namespace"} else self._param_problems(name, params)
        if problems:
            raise PermanentError(problems[0], provider=self.kind, code="InvalidParameter")
        kube, context = self._api(params)
        if name == "velero_restore":
            return velero.start(kube, params=params, namespace=self._velero_ns(params), run_id=run_id,
                                context=context)
        if name == "delete_namespace":
            return velero.delete_namespace(kube, name=str(params["namespace"]), context=context,
                                           live=self._live_namespace())
        deployment = self._deployment_or_none(kube, params)
        if deployment is None:
            raise PermanentError(rollout.missing_deployment(str(params["deployment"]), str(params["namespace"])),
                                 provider=self.kind, code="NotFound")
        if name == "check_deployment":
            return self._start_check(deployment, params, context=context, run_id=run_id)
        patch: dict[str, Any] | None
        if name == "set_env":
            container = rollout.pick_container(deployment, params.get("container"))
            if isinstance(container, str):
                raise PermanentError(container, provider=self.kind, code="NotFound")
            patch = rollout.env_patch(deployment, container, params["env"])
        elif name == "scale":
            wanted = int(params["replicas"])
            patch = None if deployment["spec"].get("replicas") == wanted else {"spec": {"replicas": wanted}}
        else:
            rollout.patch_secret(kube, name=str(params["secret"]), namespace=str(params["namespace"]),
                                 data=params["data"])
            patch = rollout.restart_patch(deployment, run_id=run_id, now=self.clock.now())
        return rollout.start_patch(kube, action=name, deployment=deployment, patch=patch, context=context)

    def poll(self, *, operation: Operation) -> OperationStatus:
        if operation.action == "check_deployment":  # finished inside start: the outputs travel in the handle
            data = operation.data
            return OperationStatus(done=True, status=str(data.get("status", "checked")), progress=1.0,
                                   message=str(data.get("message", "")), outputs=dict(data.get("outputs", {})))
        kube, _ = self._api({"context": operation.data.get("context")})
        if operation.action == "velero_restore":
            return velero.poll(kube, operation=operation)
        if operation.action == "delete_namespace":
            return velero.poll_namespace(kube, operation=operation)
        return rollout.poll(kube, operation=operation, outputs_of=_OUTPUTS.get(operation.action, ()))

    def verify(self, *, action: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[str]:
        name = self._impl_name(action)
        if name == "velero_restore":
            phase = outputs.get("phase")
            return [] if phase == "Completed" else [f"Velero restore `{outputs.get('restore')}` is {phase}, "
                                                    f"not Completed."]
        if name == "check_deployment":  # judges the read it was given, like count_points and health_check
            ready, want = int(outputs.get("ready_replicas") or 0), int(outputs.get("replicas") or 0)
            return [] if ready >= want else [rollout.not_ready(str(params["deployment"]),
                                                               str(params["namespace"]), ready, want)]
        kube, _ = self._api(params)
        if name == "delete_namespace":
            found = velero.read_namespace(kube, str(params["namespace"]))
            return [] if found is None else [f"Namespace `{params['namespace']}` still exists "
                                             f"({velero.namespace_phase(found)}) after its deletion."]
        deployment = self._deployment_or_none(kube, params)
        if deployment is None:
            return [rollout.missing_deployment(str(params["deployment"]), str(params["namespace"]))]
        if name == "scale" and deployment["spec"].get("replicas") != params["replicas"]:
            return [f"Deployment `{params['deployment']}` has {deployment['spec'].get('replicas')} replicas, "
                    f"not {params['replicas']}; someone or an autoscaler changed it."]
        if name == "set_env":
            container = rollout.pick_container(deployment, params.get("container"))
            if isinstance(container, str):
                return [container]
            now = rollout.current_env(container)
            wrong = sorted(k for k, v in params["env"].items() if now.get(k) != str(v))
            if wrong:
                return [f"Deployment `{params['deployment']}` env {', '.join(wrong)} no longer has the value set "
                        f"by this step; someone changed it since."]
        return []

    def probe(self) -> list[str]:
        """Read-only reachability check for `drbot check`: read the deployment and list the Velero backups.
        An unreachable cluster is reported, never raised."""
        namespace, deployment = self.settings.get("namespace"), self.settings.get("deployment")
        problems: list[str] = []
        try:
            kube, _ = self._api({})
            if namespace and deployment:
                found = self._deployment_or_none(kube, {"deployment": deployment, "namespace": namespace})
                if found is None:
                    problems.append(f"Deployment `{deployment}` does not exist in namespace `{namespace}`; check "
                                    f"{self.where}.deployment and {self.where}.namespace in drbot.yml.")
            velero.list_backups(kube, self._velero_ns({}))
        except ProviderError as exc:
            problems.append(exc.message)
        return problems

    # ---- the RPO monitor's read (`runbooks.ports.RecoveryPointReader`): one list of backups.velero.io

    def recovery_point(self) -> RecoveryPoint:
        """The newest Completed Velero backup in `velero_namespace` (the listing `latest` restores use); failed
        backups and a failed newest backup are reported. One call, nothing written."""
        namespace = self._velero_ns({})
        kube, _ = self._api({})
        try:
            backups = velero.list_backups(kube, namespace)
        except PermanentError as exc:
            if not_found(exc):
                raise PermanentError(velero.not_installed(namespace), provider=self.kind, code=exc.code) from exc
            raise
        return velero.recovery_point(backups, namespace)

    # ---- helpers

    def _impl_name(self, action: str) -> str:
        name = action.removeprefix(f"{RESOURCE}.")
        if f"{RESOURCE}.{name}" not in ACTIONS:
            raise PermanentError(f"The kubernetes provider has no action `{action}`; supported: "
                                 f"{', '.join(sorted(self.actions()))}.", provider=self.kind, code="UnknownAction")
        return name

    def _missing(self, name: str, params: Mapping[str, Any]) -> list[str]:
        info = ACTIONS[f"{RESOURCE}.{name}"]
        return [f"Missing parameter `{p}` for {RESOURCE}.{name}; the step needs {', '.join(sorted(info.required))}."
                for p in sorted(info.required) if params.get(p) is None]

    def _check(self, action: str, params: Mapping[str, Any]) -> str:
        name = self._impl_name(action)
        missing = self._missing(name, params)
        if missing:
            raise PermanentError(missing[0], provider=self.kind, code="MissingParameter")
        return name

    def _param_problems(self, name: str, params: Mapping[str, Any]) -> list[str]:
        if name == "scale":
            replicas = params.get("replicas")
            ok = isinstance(replicas, int) and not isinstance(replicas, bool) and 0 <= replicas <= 1000
            return [] if ok else [f"`replicas` must be a whole number from 0 to 1000; got {replicas!r}."]
        if name == "check_deployment":
            env = params.get("env")
            if env is None or isinstance(env, Mapping) and all(isinstance(k, str) and k for k in env):
                return []
            return [f"`env` must be a mapping of NAME: value (what the cut-over would set), e.g. "
                    f"{{LOG_LEVEL: debug}}; got {env!r}."]
        key = "env" if name == "set_env" else "data"
        value = params.get(key)
        if isinstance(value, Mapping) and value and all(isinstance(k, str) and k for k in value):
            return []
        shown = "a mapping with hidden values" if key == "data" and isinstance(value, Mapping) else repr(value)
        return [f"`{key}` must be a non-empty mapping of NAME: value, e.g. {{LOG_LEVEL: debug}}; got {shown}."]

    def _start_check(self, deployment: Mapping[str, Any], params: Mapping[str, Any], *, context: str,
                     run_id: str) -> Operation:
        """Read-only, so a fresh read every time (a retried check must see the Deployment as it is now) and
        nothing to follow: the operation is finished when it is handed back."""
        container = rollout.pick_container(deployment, params.get("container"))
        if isinstance(container, str):
            raise PermanentError(container, provider=self.kind, code="NotFound")
        outputs = rollout.check_outputs(deployment, container, params.get("env") or {})
        name, namespace = str(params["deployment"]), str(params["namespace"])
        ready, want = outputs["ready_replicas"], outputs["replicas"]
        healthy = ready >= want
        changing = ", ".join(outputs["would_change"]) or "none"
        message = (f'deployment "{name}" has {ready}/{want} replicas ready, image {outputs["image"]}; '
                   f"env a cut-over would change: {changing}" if healthy
                   else rollout.not_ready(name, namespace, ready, want))
        return Operation(provider=self.kind, action="check_deployment",
                         id=f"{namespace}/{name}@check:{run_id}:{self.clock.now().isoformat()}", target=name,
                         data={"context": context, "namespace": namespace, "deployment": name,
                               "status": "healthy" if healthy else "unhealthy", "message": message,
                               "outputs": outputs})

    def _plan_delete_namespace(self, kube: KubeApi, params: Mapping[str, Any], *, context: str) -> dict[str, Any]:
        name = str(params["namespace"])
        details: dict[str, Any] = {"namespace": name, "context": context,
                                   "warning": "Deletes the namespace and everything in it; there is no undo."}
        refusal = velero.scratch_refusal(name, live=self._live_namespace())
        if refusal:
            details["problem"] = refusal
            return details
        details["status"] = velero.namespace_phase(velero.read_namespace(kube, name))
        return details

    def _live_namespace(self) -> str:
        """The application's namespace (drbot.yml `namespace`): never deleted, whatever its name."""
        return str(self.settings.get("namespace") or "")

    def _velero_ns(self, params: Mapping[str, Any]) -> str:
        return str(params.get("velero_namespace") or self.settings.get("velero_namespace") or "velero")

    def _deployment_or_none(self, kube: KubeApi, params: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            return rollout.read_deployment(kube, name=str(params["deployment"]), namespace=str(params["namespace"]))
        except ProviderError as exc:
            if not_found(exc):
                return None
            raise

    def _api(self, params: Mapping[str, Any]) -> tuple[KubeApi, str]:
        context = str(params.get("context") or self.settings.get("context") or "")
        if context not in self._apis:
            if self._client is None:
                api_client = build_api_client(settings=self.settings, context=context)
            elif callable(self._client) and not hasattr(self._client, "call_api"):
                api_client = self._client(context)
            else:
                api_client = self._client  # type: ignore[assignment]
            self._apis[context] = KubeApi(api_client, timeout=float(self.settings.get("request_timeout", 30)))
        return self._apis[context], context
