"""`kubernetes.check_deployment`, the read-only stand-in drills use for the cut-over's `set_env`: the Deployment is
available, its image, and which env names a cut-over would change — on the real provider (against the fake
kube-apiserver) and on its sandbox twin, never writing anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from integrations.kubernetes import KubernetesProvider
from integrations.sandbox import build_sandbox_provider
from integrations.sandbox.kubernetes import DEPLOY_KIND
from runbooks.actions import ACTIONS
from runbooks.errors import PermanentError
from tests.doubles.fake_kube import FakeKube
from tests.test_kubernetes import DEPLOY, NS, SETTINGS, TARGET, seed
from tests.test_kubernetes_contract import Twin
from tests.test_sandbox import T0, FakeClock, MemoryState

ACTION = "kubernetes.check_deployment"
OUTPUTS = ACTIONS[ACTION].outputs
MISSING = 'deployments.apps "web" not found in namespace `rag-engine`'
NO_CONTAINER = f"Deployment `{DEPLOY}` has no container `web` (containers: "


def not_ready(ready: int, want: int) -> str:
    return (f"deployment `{DEPLOY}` in namespace `{NS}` has {ready} of {want} replicas ready: the cut-over target "
            f"is not healthy (see `kubectl describe deployment {DEPLOY} -n {NS}`).")


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        seed(fake)
        yield fake


@pytest.fixture
def k8s(kube: FakeKube) -> KubernetesProvider:
    return KubernetesProvider(environment="prod", resource="kubernetes", settings=SETTINGS, client=kube.api_client())


def only_reads(kube: FakeKube) -> None:
    methods = {r.method for r in kube.requests}
    assert methods <= {"GET"}, [(r.method, r.path) for r in kube.requests if r.method != "GET"]


def set_status(kube: FakeKube, **status: Any) -> None:
    with kube.lock:
        kube.state.objects[("deployments", NS, DEPLOY)]["status"].update(status)


# --------------------------------------------------------------------------------------------- vocabulary


def test_the_action_is_declared_read_only_with_its_outputs() -> None:
    info = ACTIONS[ACTION]
    assert not info.mutates and info.required == {"deployment", "namespace"}
    assert info.optional == {"env", "container", "context"}
    assert info.outputs == {"ready_replicas", "replicas", "image", "would_change"}
    assert list(ACTIONS).index(ACTION) == list(ACTIONS).index("kubernetes.set_env") + 1


# --------------------------------------------------------------------------------------------- real provider


def test_a_healthy_deployment_passes_and_lists_what_the_cut_over_would_change(kube: FakeKube,
                                                                                 k8s: KubernetesProvider) -> None:
    params = {**TARGET, "env": {"LOG_LEVEL": "debug", "DB_PASSWORD": "hunter2-old", "NEW_FLAG": "on"}}
    assert k8s.preflight(action=ACTION, params=params) == []
    plan = k8s.plan(action=ACTION, params=params)
    assert plan["would_change"] == ["LOG_LEVEL", "NEW_FLAG"] and plan["ready_replicas"] == 3
    assert plan["env"]["DB_PASSWORD"] == {"current": "(hidden)", "new": "(hidden)"} and "hunter2" not in str(plan)
    op = k8s.start(action=ACTION, params=params, run_id="R-1")
    done = k8s.poll(operation=op)
    assert done.done and not done.failed and done.status == "healthy" and done.progress == 1.0
    assert done.outputs == {"ready_replicas": 3, "replicas": 3, "image": f"registry.example/{DEPLOY}:1",
                            "would_change": ["LOG_LEVEL", "NEW_FLAG"]}
    assert set(done.outputs) == OUTPUTS
    assert k8s.verify(action=ACTION, params=params, outputs=done.outputs) == []
    assert "hunter2" not in op.model_dump_json() + done.model_dump_json()
    only_reads(kube)
    deployment = kube.get("deployments", NS, DEPLOY)
    assert deployment is not None and deployment["metadata"]["generation"] == 1


def test_a_named_container_no_env_and_a_value_from_reference(kube: FakeKube, k8s: KubernetesProvider) -> None:
    done = k8s.poll(operation=k8s.start(action=ACTION, params={**TARGET, "container": "sidecar",
                                                               "env": {"MODE": "proxy"}}, run_id="R-1"))
    assert done.outputs["image"] == "registry.example/sidecar:1" and done.outputs["would_change"] == []
    assert k8s.poll(operation=k8s.start(action=ACTION, params=TARGET, run_id="R-2")).outputs["would_change"] == []
    with kube.lock:  # a variable from a Secret: the cut-over's plain value would replace the reference
        container = kube.state.objects[("deployments", NS, DEPLOY)]["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    done = k8s.poll(operation=k8s.start(action=ACTION, params={**TARGET, "env": {"DB_PASSWORD": "pw"}},
                                        run_id="R-3"))
    assert done.outputs["would_change"] == ["DB_PASSWORD"]
    only_reads(kube)


def test_a_missing_deployment_or_container_is_refused_with_a_sentence(kube: FakeKube,
                                                                      k8s: KubernetesProvider) -> None:
    missing = {"deployment": "web", "namespace": NS, "env": {"A": "1"}}
    problems = k8s.preflight(action=ACTION, params=missing)
    assert len(problems) == 1 and problems[0].startswith(MISSING)
    assert k8s.plan(action=ACTION, params=missing)["problem"].startswith(MISSING)
    with pytest.raises(PermanentError) as caught:
        k8s.start(action=ACTION, params=missing, run_id="R-1")
    assert caught.value.message.startswith(MISSING) and caught.value.code == "NotFound"
    wrong = {**TARGET, "container": "web"}
    assert k8s.preflight(action=ACTION, params=wrong)[0].startswith(NO_CONTAINER)
    with pytest.raises(PermanentError, match="has no container `web`"):
        k8s.start(action=ACTION, params=wrong, run_id="R-1")
    assert k8s.preflight(action=ACTION, params={**TARGET, "env": ["LOG_LEVEL"]}) == [
        "`env` must be a mapping of NAME: value (what the cut-over would set), e.g. {LOG_LEVEL: debug}; "
        "got ['LOG_LEVEL']."]
    assert k8s.preflight(action=ACTION, params={"deployment": DEPLOY})[0].startswith("Missing parameter `namespace`")
    only_reads(kube)


@pytest.mark.parametrize(("ready", "shown"), [(1, 1), (None, 0)])
def test_replicas_not_all_ready_fail_the_check_naming_the_counts(kube: FakeKube, k8s: KubernetesProvider,
                                                                 ready: int | None, shown: int) -> None:
    set_status(kube, readyReplicas=ready, availableReplicas=ready)
    params = {**TARGET, "env": {"LOG_LEVEL": "debug"}}
    assert k8s.preflight(action=ACTION, params=params) == []
    done = k8s.poll(operation=k8s.start(action=ACTION, params=params, run_id="R-1"))
    assert done.done and done.status == "unhealthy" and done.message == not_ready(shown, 3)
    assert (done.outputs["ready_replicas"], done.outputs["replicas"]) == (shown, 3)
    assert k8s.verify(action=ACTION, params=params, outputs=done.outputs) == [not_ready(shown, 3)]
    only_reads(kube)


def test_a_retried_check_reads_again(kube: FakeKube, k8s: KubernetesProvider) -> None:
    set_status(kube, readyReplicas=2)
    first = k8s.poll(operation=k8s.start(action=ACTION, params=TARGET, run_id="R-1"))
    set_status(kube, readyReplicas=3)
    again = k8s.poll(operation=k8s.start(action=ACTION, params=TARGET, run_id="R-1"))
    assert (first.outputs["ready_replicas"], again.outputs["ready_replicas"]) == (2, 3)
    assert k8s.verify(action=ACTION, params=TARGET, outputs=again.outputs) == []
    only_reads(kube)


# --------------------------------------------------------------------------------------------- sandbox


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


def sandbox(state: MemoryState, clock: FakeClock) -> Any:
    return build_sandbox_provider(environment="prod", resource="kubernetes", settings=SETTINGS, state=state,
                                  clock=clock, speed=60)


def test_sandbox_check_is_healthy_lists_changes_and_changes_nothing(state: MemoryState, clock: FakeClock) -> None:
    k8s = sandbox(state, clock)
    params = {**TARGET, "env": {"LOG_LEVEL": "debug", "QDRANT_URL": "http://qdrant:6333", "NEW_FLAG": "on"}}
    assert k8s.preflight(action=ACTION, params=params) == []
    before = state.list_state(kind=DEPLOY_KIND)
    plan = k8s.plan(action=ACTION, params=params)
    assert plan["would_change"] == ["LOG_LEVEL", "NEW_FLAG"] and plan["ready_replicas"] == 3
    done = k8s.poll(operation=k8s.start(action=ACTION, params=params, run_id="R-1"))
    assert done.done and not done.failed and done.status == "healthy"
    assert done.outputs == {"ready_replicas": 3, "replicas": 3, "image": f"registry.sandbox/{DEPLOY}:1",
                            "would_change": ["LOG_LEVEL", "NEW_FLAG"]}
    assert done.message.startswith(f'deployment "{DEPLOY}" has 3/3 replicas ready')
    assert k8s.verify(action=ACTION, params=params, outputs=done.outputs) == []
    assert state.list_state(kind=DEPLOY_KIND) == before


def test_sandbox_refuses_a_missing_deployment(state: MemoryState, clock: FakeClock) -> None:
    k8s = sandbox(state, clock)
    missing = {"deployment": "web", "namespace": NS}
    assert k8s.preflight(action=ACTION, params=missing)[0].startswith(MISSING)
    assert k8s.plan(action=ACTION, params=missing)["problem"].startswith(MISSING)
    with pytest.raises(PermanentError, match="deployments.apps \"web\" not found"):
        k8s.start(action=ACTION, params=missing, run_id="R-1")
    assert k8s.preflight(action=ACTION, params={**TARGET, "container": "web"})[0].startswith(NO_CONTAINER)


def test_sandbox_check_during_a_rollout_fails_naming_the_counts(state: MemoryState, clock: FakeClock) -> None:
    k8s = sandbox(state, clock)
    k8s.start(action="scale", params={**TARGET, "replicas": 4}, run_id="R-1")
    clock.advance(1)  # halfway through the 2-minute rollout (2 s at speed 60)
    done = k8s.poll(operation=k8s.start(action=ACTION, params=TARGET, run_id="R-2"))
    assert done.status == "unhealthy" and (done.outputs["ready_replicas"], done.outputs["replicas"]) == (2, 4)
    assert k8s.verify(action=ACTION, params=TARGET, outputs=done.outputs) == [not_ready(2, 4)]
    clock.advance(5)
    done = k8s.poll(operation=k8s.start(action=ACTION, params=TARGET, run_id="R-2"))
    assert done.status == "healthy" and done.outputs["ready_replicas"] == 4
    assert k8s.verify(action=ACTION, params=TARGET, outputs=done.outputs) == []


# --------------------------------------------------------------------------------------------- contract


@pytest.fixture(params=["sandbox", "kubernetes"])
def twin(request: pytest.FixtureRequest) -> Iterator[Twin]:
    if request.param == "sandbox":
        clock = FakeClock(T0)
        yield Twin("sandbox", sandbox(MemoryState(), clock), lambda: clock.advance(0.5))
        return
    with FakeKube() as fake:
        seed(fake)
        provider = KubernetesProvider(environment="prod", resource="kubernetes", settings=SETTINGS,
                                      client=fake.api_client())
        yield Twin("kubernetes", provider, lambda: None)
        only_reads(fake)


@pytest.mark.parametrize(("env", "changes"), [
    ({"LOG_LEVEL": "debug", "NEW_FLAG": "on"}, ["LOG_LEVEL", "NEW_FLAG"]),
    ({"LOG_LEVEL": "info"}, []),
    (None, []),
])
def test_both_providers_answer_alike(twin: Twin, env: dict[str, str] | None, changes: list[str]) -> None:
    params: dict[str, Any] = {**TARGET} if env is None else {**TARGET, "env": env}
    done = twin.run(ACTION, params)
    assert done.status == "healthy" and not done.failed and set(done.outputs) == OUTPUTS
    assert done.outputs["would_change"] == changes
    assert (done.outputs["ready_replicas"], done.outputs["replicas"]) == (3, 3)
    assert isinstance(done.outputs["image"], str) and done.outputs["image"].endswith(f"/{DEPLOY}:1")
    assert twin.provider.verify(action=ACTION, params=params, outputs=done.outputs) == []
    with pytest.raises(PermanentError, match=MISSING.replace('"', '.').replace("`", ".")):
        twin.provider.start(action=ACTION, params={**params, "deployment": "web"}, run_id="R-1")
