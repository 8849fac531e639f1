"""Deployment actions against the fake kube-apiserver: env merged by name, scale, Secret keys plus a restart,
each followed by kubectl's rollout rule; idempotent starts; secret values never shown."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.kubernetes import KubernetesProvider
from runbooks.errors import PermanentError
from tests.doubles.fake_kube import FakeKube
from tests.test_kubernetes import DEPLOY, NS, SETTINGS, TARGET, finish, seed, writes


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        seed(fake)
        yield fake


@pytest.fixture
def k8s(kube: FakeKube) -> KubernetesProvider:
    return KubernetesProvider(environment="prod", resource="kubernetes", settings=SETTINGS, client=kube.api_client())


def deployment(kube: FakeKube) -> dict[str, Any]:
    found = kube.get("deployments", NS, DEPLOY)
    assert found is not None
    return found


def env_of(kube: FakeKube, container: str) -> dict[str, Any]:
    spec = deployment(kube)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for c in spec if c["name"] == container for e in c.get("env", [])}


def test_set_env_merges_by_name_rolls_out_and_hides_secret_looking_values(kube: FakeKube,
                                                                          k8s: KubernetesProvider) -> None:
    params = {**TARGET, "env": {"LOG_LEVEL": "debug", "DB_PASSWORD": "hunter2-new"}}
    plan = k8s.plan(action="set_env", params=params)
    assert plan["container"] == DEPLOY and plan["generation_now"] == 1
    assert plan["env"] == {"DB_PASSWORD": {"current": "(hidden)", "new": "(hidden)"},
                           "LOG_LEVEL": {"current": "info", "new": "debug"}}
    assert "hunter2" not in json.dumps(plan)
    op = k8s.start(action="set_env", params=params, run_id="R-1")
    assert env_of(kube, DEPLOY) == {"LOG_LEVEL": "debug", "DB_PASSWORD": "hunter2-new"}
    assert env_of(kube, "sidecar") == {"MODE": "proxy"}
    assert [r.content_type for r in kube.requests if r.method == "PATCH"] == ["application/strategic-merge-patch+json"]
    seen = finish(k8s, op)
    assert [s.status for s in seen] == ["progressing", "complete"]
    assert seen[0].message == f'Waiting for deployment "{DEPLOY}" rollout to finish: 2 out of 3 new replicas ' \
                              "have been updated..."
    assert seen[-1].outputs == {"generation": 2, "replicas": 3}
    assert k8s.verify(action="set_env", params=params, outputs=seen[-1].outputs) == []
    assert k8s.start(action="set_env", params=params, run_id="R-1") == op and len(writes(kube, "PATCH")) == 1


def test_set_env_targets_a_named_container_and_refuses_an_unknown_one(kube: FakeKube,
                                                                      k8s: KubernetesProvider) -> None:
    k8s.start(action="set_env", params={**TARGET, "env": {"MODE": "direct"}, "container": "sidecar"}, run_id="R-1")
    assert env_of(kube, "sidecar") == {"MODE": "direct"} and "MODE" not in env_of(kube, DEPLOY)
    problems = k8s.preflight(action="set_env", params={**TARGET, "env": {"A": "1"}, "container": "web"})
    assert problems == [f"Deployment `{DEPLOY}` has no container `web` (containers: {DEPLOY}, sidecar); leave "
                        "`container` out to patch the first one."]
    assert k8s.preflight(action="set_env", params={**TARGET, "env": {}}) == [
        "`env` must be a non-empty mapping of NAME: value, e.g. {LOG_LEVEL: debug}; got {}."]


def test_scale_rolls_out_and_is_idempotent(kube: FakeKube, k8s: KubernetesProvider) -> None:
    op = k8s.start(action="scale", params={**TARGET, "replicas": 5}, run_id="R-1")
    seen = finish(k8s, op)
    assert [s.status for s in seen] == ["progressing", "complete"]
    assert seen[0].message.endswith("rollout to finish: 3 out of 5 new replicas have been updated...")
    assert seen[-1].outputs == {"generation": 2, "replicas": 5} and deployment(kube)["spec"]["replicas"] == 5
    assert k8s.start(action="scale", params={**TARGET, "replicas": 5}, run_id="R-1") == op
    assert len(writes(kube, "PATCH")) == 1
    assert k8s.preflight(action="scale", params={**TARGET, "replicas": -1})[0].startswith("`replicas` must be")
    assert k8s.preflight(action="scale", params={"deployment": "web", "namespace": NS, "replicas": 1})[0] \
        .startswith('deployments.apps "web" not found in namespace `rag-engine`')


def test_set_secret_patches_base64_restarts_once_and_never_shows_values(kube: FakeKube,
                                                                        k8s: KubernetesProvider) -> None:
    params = {**TARGET, "secret": "api-keys", "data": {"OPENAI_API_KEY": "sk-new-value", "EXTRA_TOKEN": "tok-123"}}
    plan = k8s.plan(action="set_secret", params=params)
    assert plan["secret_keys"] == {"EXTRA_TOKEN": "new", "OPENAI_API_KEY": "changed"}
    op = k8s.start(action="set_secret", params=params, run_id="R-4")
    secret = kube.get("secrets", NS, "api-keys")
    assert secret is not None and base64.b64decode(secret["data"]["OPENAI_API_KEY"]) == b"sk-new-value"
    annotations = deployment(kube)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["drbot.io/restarted-for"] == "r-4" and "kubectl.kubernetes.io/restartedAt" in annotations
    seen = finish(k8s, op)
    assert seen[-1].outputs == {"generation": 2}
    assert k8s.start(action="set_secret", params=params, run_id="R-4") == op and len(writes(kube, "PATCH")) == 2
    shown = json.dumps([plan, op.model_dump(), [s.model_dump() for s in seen]])
    for value in ("sk-new-value", "tok-123", base64.b64encode(b"sk-new-value").decode()):
        assert value not in shown
    assert k8s.preflight(action="set_secret", params={**params, "secret": "nope"}) == [
        "Secret `nope` does not exist in namespace `rag-engine`; create it first "
        "(`kubectl create secret generic nope -n rag-engine`)."]


def test_a_refused_secret_patch_does_not_echo_the_value(kube: FakeKube, k8s: KubernetesProvider) -> None:
    echo = f'Secret "api-keys" is invalid: data[K]: Invalid value: "{base64.b64encode(b"sk-zzz").decode()}" (sk-zzz)'
    kube.fail("PATCH", "/secrets/api-keys", 422, message=echo)
    with pytest.raises(PermanentError) as caught:
        k8s.start(action="set_secret", params={**TARGET, "secret": "api-keys", "data": {"K": "sk-zzz"}},
                  run_id="R-1")
    assert "HTTP 422" in caught.value.message and "data[K]: Invalid value" in caught.value.message
    assert "sk-zzz" not in caught.value.message and "c2stenp6" not in caught.value.message
