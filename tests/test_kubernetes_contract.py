"""Contract: the real kubernetes provider (against the fake kube-apiserver) and its sandbox twin behave alike —
same outputs, `latest` = newest Completed backup, a repeated start attaches, same refusal sentences."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from integrations.kubernetes import KubernetesProvider
from integrations.sandbox import build_sandbox_provider
from runbooks.actions import ACTIONS
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.fake_kube import FakeKube
from tests.test_kubernetes import SETTINGS, TARGET, seed
from tests.test_sandbox import T0, FakeClock, MemoryState


@dataclass
class Twin:
    name: str
    provider: Provider
    tick: Callable[[], None]

    def finish(self, op: Operation) -> OperationStatus:
        status = self.provider.poll(operation=op)
        for _ in range(500):
            if status.done:
                return status
            self.tick()
            status = self.provider.poll(operation=op)
        raise AssertionError(f"{self.name}: {op.action} never finished")

    def run(self, action: str, params: dict[str, Any], run_id: str = "R-1") -> OperationStatus:
        assert self.provider.preflight(action=action, params=params) == []
        return self.finish(self.provider.start(action=action, params=params, run_id=run_id))


@pytest.fixture(params=["sandbox", "kubernetes"])
def twin(request: pytest.FixtureRequest) -> Iterator[Twin]:
    if request.param == "sandbox":
        clock = FakeClock(T0)
        provider = build_sandbox_provider(environment="prod", resource="kubernetes", settings=SETTINGS,
                                          state=MemoryState(), clock=clock, speed=1e4)
        yield Twin("sandbox", provider, lambda: clock.advance(0.5))
        return
    with FakeKube() as kube:
        seed(kube)
        provider = KubernetesProvider(environment="prod", resource="kubernetes", settings=SETTINGS,
                                      client=kube.api_client())
        yield Twin("kubernetes", provider, lambda: None)


def test_latest_is_the_newest_completed_backup_with_the_declared_outputs(twin: Twin) -> None:
    plan = twin.provider.plan(action="velero_restore", params={"backup": "latest"})
    assert plan["backup"] == "daily-20261124020000" and plan["phase"] == "Completed"
    done = twin.run("velero_restore", {"backup": "latest", "include_namespaces": ["rag-engine"]})
    assert not done.failed and done.status == "Completed"
    assert set(done.outputs) == ACTIONS["kubernetes.velero_restore"].outputs
    assert done.outputs["backup"] == "daily-20261124020000" and done.outputs["phase"] == "Completed"
    assert done.outputs["items_restored"] == done.outputs["total_items"] == 142
    assert done.outputs["backup_time"].startswith("2026-11-24T02:0") and done.outputs["backup_time"].endswith("Z")
    assert done.outputs["restore"].startswith("daily-20261124020000-")


def test_a_repeated_start_attaches_to_the_same_restore(twin: Twin) -> None:
    first = twin.provider.start(action="velero_restore", params={"backup": "latest"}, run_id="R-5")
    again = twin.provider.start(action="velero_restore", params={"backup": "latest"}, run_id="R-5")
    assert again.id == first.id
    assert twin.finish(again).outputs["restore"] == twin.finish(first).outputs["restore"]


@pytest.mark.parametrize(("action", "params", "sentence"), [
    ("velero_restore", {"backup": "nightly-1"}, "Velero backup `nightly-1` does not exist; Completed backups: "),
    ("velero_restore", {"backup": "hourly-20261124113000"},
     "Velero backup `hourly-20261124113000` is `PartiallyFailed`, not Completed, so a restore would be incomplete"),
    ("velero_restore", {"backup": "latest", "include_namespaces": ["billing"]},
     "Backup `daily-20261124020000` does not contain namespace(s) billing (it has rag-engine); fix "),
    ("scale", {"deployment": "web", "namespace": "rag-engine", "replicas": 2},
     'deployments.apps "web" not found in namespace `rag-engine`'),
    ("scale", {**TARGET, "replicas": -1}, "`replicas` must be a whole number from 0 to "),
    ("set_env", {**TARGET, "env": {"A": "1"}, "container": "web"},
     "Deployment `rag-engine-api` has no container `web` (containers: "),
    ("set_env", {**TARGET, "env": {}}, "`env` must be a non-empty mapping of NAME: value"),
])
def test_preflight_refusals_read_the_same(twin: Twin, action: str, params: dict[str, Any], sentence: str) -> None:
    problems = twin.provider.preflight(action=action, params=params)
    assert problems and problems[0].startswith(sentence), problems


@pytest.mark.parametrize(("action", "params"), [
    ("set_env", {**TARGET, "env": {"LOG_LEVEL": "debug"}}),
    ("scale", {**TARGET, "replicas": 5}),
    ("set_secret", {**TARGET, "secret": "api-keys", "data": {"OPENAI_API_KEY": "sk-x"}}),
])
def test_rollouts_end_complete_with_the_same_outputs(twin: Twin, action: str, params: dict[str, Any]) -> None:
    sandbox_keys = {"set_env": {"generation", "replicas"}, "scale": {"generation", "replicas"},
                    "set_secret": {"generation"}}
    done = twin.run(action, params)
    assert done.status == "complete" and set(done.outputs) == sandbox_keys[action]
    assert ACTIONS[f"kubernetes.{action}"].outputs <= set(done.outputs)
    if action == "scale":
        assert done.outputs["replicas"] == 5
    again = twin.provider.start(action=action, params=params, run_id="R-1")
    assert twin.finish(again).outputs == done.outputs
