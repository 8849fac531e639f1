"""Deployment changes that end in a rollout: container env, replica count, Secret keys plus a restart.

Why "already has the values" means attach: a patch that changes nothing does not bump `metadata.generation`,
so a restarted start simply follows the rollout of the generation that is there. A Secret restart is marked
with the run on the pod template (`drbot.io/restarted-for`), so a retried start never restarts twice.
Rollout completion is `kubectl rollout status`'s rule, so drbot and the engineer's terminal agree.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.kubernetes.client import PROVIDER_KIND, KubeApi, not_found
from integrations.kubernetes.velero import short_run_id
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Operation, OperationStatus

SECRETISH = re.compile(r"(?i)(secret|passw|pwd|token|key|credential|private|auth|cert|dsn|session|cookie|salt)")
HIDDEN = "(hidden)"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTARTED_FOR = "drbot.io/restarted-for"


def _as_dict(obj: Any) -> dict[str, Any]:
    """Models in kubernetes ≥ 35 are pydantic; `to_dict()` (snake_case) exists in every version."""
    return dict(obj.to_dict())


def read_deployment(kube: KubeApi, *, name: str, namespace: str) -> dict[str, Any]:
    return _as_dict(kube.call(f"read Deployment {namespace}/{name}", kube.apps.read_namespaced_deployment,
                              name, namespace))


def missing_deployment(name: str, namespace: str) -> str:
    return (f'deployments.apps "{name}" not found in namespace `{namespace}`; check the deployment and namespace '
            f"(drbot.yml `kubernetes.deployment` / `.namespace`, or the step's parameters).")


def _containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def pick_container(deployment: Mapping[str, Any], wanted: str | None) -> dict[str, Any] | str:
    """The named container (default: the first), or the sentence that lists the ones there are."""
    containers = _containers(deployment)
    if not wanted:
        return containers[0]
    found = next((c for c in containers if c["name"] == wanted), None)
    if found is None:
        names = ", ".join(c["name"] for c in containers)
        return (f"Deployment `{deployment['metadata']['name']}` has no container `{wanted}` (containers: {names}); "
                f"leave `container` out to patch the first one.")
    return found


def shown(name: str, value: Any) -> Any:
    return HIDDEN if value is not None and SECRETISH.search(name) else value


def current_env(container: Mapping[str, Any]) -> dict[str, str | None]:
    """Plain values; a `valueFrom` reference shows as where it comes from (never the referenced value)."""
    out: dict[str, str | None] = {}
    for item in container.get("env") or []:
        source = item.get("value_from")
        if source:
            ref = source.get("secret_key_ref") or source.get("config_map_key_ref") or {}
            out[item["name"]] = f"(from {ref.get('name', 'a reference')}/{ref.get('key', '?')})"
        else:
            out[item["name"]] = item.get("value")
    return out


def env_plan(container: Mapping[str, Any], env: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    now = current_env(container)
    return {k: {"current": shown(k, now.get(k)), "new": shown(k, str(v))} for k, v in sorted(env.items())}


def env_patch(deployment: Mapping[str, Any], container: Mapping[str, Any],
              env: Mapping[str, Any]) -> dict[str, Any] | None:
    """The strategic merge patch for `env` (merged by name), or None when every value is already there.
    A variable that came from `valueFrom` gets `valueFrom: null`, as the API refuses both at once."""
    existing = {e["name"]: e for e in container.get("env") or []}
    items = []
    for name, value in sorted(env.items()):
        old = existing.get(name)
        if old is not None and old.get("value") == str(value) and not old.get("value_from"):
            continue
        item: dict[str, Any] = {"name": name, "value": str(value)}
        if old is not None and old.get("value_from"):
            item["valueFrom"] = None
        items.append(item)
    if not items:
        return None
    return {"spec": {"template": {"spec": {"containers": [{"name": container["name"], "env": items}]}}}}


def would_change(container: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    """The names `env_patch` would touch: absent, another value, or a `valueFrom` the patch would replace."""
    existing = {e["name"]: e for e in container.get("env") or []}
    return sorted(name for name, value in env.items()
                  if name not in existing or existing[name].get("value_from")
                  or existing[name].get("value") != str(value))


def check_outputs(deployment: Mapping[str, Any], container: Mapping[str, Any],
                  env: Mapping[str, Any]) -> dict[str, Any]:
    """`check_deployment`'s outputs from one read: replicas ready of desired, the container's image, and the
    env names a cut-over would change. Reads only; nothing is patched."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    return {"ready_replicas": int(status.get("ready_replicas") or 0),
            "replicas": int(spec.get("replicas") if spec.get("replicas") is not None else 1),
            "image": str(container.get("image") or ""), "would_change": would_change(container, env)}


def not_ready(name: str, namespace: str, ready: int, want: int) -> str:
    return (f"deployment `{name}` in namespace `{namespace}` has {ready} of {want} replicas ready: the cut-over "
            f"target is not healthy (see `kubectl describe deployment {name} -n {namespace}`).")


def encode(data: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64encode(str(v).encode()).decode() for k, v in data.items()}


def secret_values(data: Mapping[str, Any]) -> list[str]:
    """Every form a value could take in an error message, for redaction."""
    raw = [str(v) for v in data.values()]
    return raw + list(encode(data).values())


def read_secret(kube: KubeApi, *, name: str, namespace: str) -> dict[str, str] | None:
    try:
        secret = kube.call(f"read Secret {namespace}/{name}", kube.core.read_namespaced_secret, name, namespace)
    except ProviderError as exc:
        if not_found(exc):
            return None
        raise
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (secret.data or {}).items()}


def secret_plan(existing: Mapping[str, str] | None, data: Mapping[str, Any]) -> dict[str, str]:
    """Per key: `new`, `changed` or `unchanged` — enough for the approver, without any value."""
    encoded = encode(data)
    old = existing or {}
    return {k: "new" if k not in old else ("unchanged" if old[k] == encoded[k] else "changed")
            for k in sorted(encoded)}


def handle(deployment: Mapping[str, Any], *, action: str, context: str, generation: int) -> Operation:
    meta = deployment["metadata"]
    return Operation(provider=PROVIDER_KIND, action=action, id=f"{meta['namespace']}/{meta['name']}@{generation}",
                     target=str(meta["name"]),
                     data={"context": context, "namespace": meta["namespace"], "deployment": meta["name"],
                           "generation": generation})


def start_patch(kube: KubeApi, *, action: str, deployment: dict[str, Any], patch: dict[str, Any] | None,
                context: str) -> Operation:
    """Apply the patch (if any) and hand back the generation whose rollout `poll` follows."""
    meta = deployment["metadata"]
    if patch is not None:
        deployment = _as_dict(kube.call(f"patch Deployment {meta['namespace']}/{meta['name']}",
                                        kube.apps.patch_namespaced_deployment, meta["name"], meta["namespace"],
                                        patch))
    return handle(deployment, action=action, context=context, generation=int(deployment["metadata"]["generation"]))


def restart_patch(deployment: Mapping[str, Any], *, run_id: str, now: datetime) -> dict[str, Any] | None:
    """`kubectl rollout restart`'s annotation, once per run."""
    annotations = (deployment["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    if annotations.get(RESTARTED_FOR) == short_run_id(run_id):
        return None
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp,
                                                               RESTARTED_FOR: short_run_id(run_id)}}}}}


def patch_secret(kube: KubeApi, *, name: str, namespace: str, data: Mapping[str, Any]) -> None:
    existing = read_secret(kube, name=name, namespace=namespace)
    if existing is None:
        raise PermanentError(f"Secret `{name}` does not exist in namespace `{namespace}`; create it first "
                             f"(`kubectl create secret generic {name} -n {namespace}`).",
                             provider=PROVIDER_KIND, code="NotFound")
    encoded = encode(data)
    if all(existing.get(k) == v for k, v in encoded.items()):
        return
    kube.call(f"patch Secret {namespace}/{name}", kube.core.patch_namespaced_secret, name, namespace,
              {"data": encoded}, secrets=secret_values(data))


def poll(kube: KubeApi, *, operation: Operation, outputs_of: tuple[str, ...]) -> OperationStatus:
    """`kubectl rollout status`: observed generation caught up, every replica updated and available, and no
    old replicas left. A Progressing=False/ProgressDeadlineExceeded condition fails the step."""
    data = operation.data
    name, namespace = str(data["deployment"]), str(data["namespace"])
    deployment = _as_dict(kube.call(f"read Deployment {namespace}/{name} status",
                                    kube.apps.read_namespaced_deployment_status, name, namespace))
    status, spec = deployment.get("status") or {}, deployment["spec"]
    generation = int(deployment["metadata"]["generation"])
    want = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
    updated, available = int(status.get("updated_replicas") or 0), int(status.get("available_replicas") or 0)
    total = int(status.get("replicas") or 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return OperationStatus(done=True, failed=True, status="ProgressDeadlineExceeded",
                                   message=f'deployment "{name}" exceeded its progress deadline: '
                                           f"{condition.get('message') or ''} (see `kubectl describe deployment "
                                           f"{name} -n {namespace}`).")
    fraction = (updated + available) / (2 * want) if want else None
    if int(status.get("observed_generation") or 0) < generation:
        return OperationStatus(done=False, status="progressing", progress=0.0,
                               message=f'Waiting for deployment spec update to be observed for "{name}"...')
    if updated < want:
        message = f'Waiting for deployment "{name}" rollout to finish: {updated} out of {want} new replicas have ' \
                  f"been updated..."
    elif total > updated:
        message = f'Waiting for deployment "{name}" rollout to finish: {total - updated} old replicas are ' \
                  f"pending termination..."
    elif available < updated:
        message = f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated ' \
                  f"replicas are available..."
    else:
        outputs = {"generation": generation, "replicas": want}
        return OperationStatus(done=True, status="complete", progress=1.0,
                               message=f'deployment "{name}" successfully rolled out ({want}/{want} available)',
                               outputs={k: v for k, v in outputs.items() if k in outputs_of})
    return OperationStatus(done=False, status="progressing", progress=min(fraction or 0.0, 0.99), message=message)
