"""The k8s-restore drill: a Velero restore of the application's namespace into a scratch namespace
(`<namespace>-drill-<run>`, Velero's `spec.namespaceMapping`), then the scratch namespace's deletion.

(a) the whole drill through the engine on the sandbox; (b) the real kubernetes provider against the fake
kube-apiserver: the Restore it creates carries the mapping, and `delete_namespace` deletes only a drill's namespace."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from bot.config import SANDBOX_CONFIG
from integrations.kubernetes import KubernetesProvider
from integrations.sandbox import build_sandbox_provider
from integrations.sandbox.kubernetes import NAMESPACE_KIND
from runbooks.catalog import load_catalog
from runbooks.drills import Ledger, drill_variant
from runbooks.errors import PermanentError
from runbooks.models import EventKind, IncidentStatus, RunStatus
from runbooks.ports import Operation, OperationStatus, Provider
from runbooks.templating import render
from tests.doubles.fake_kube import TOKEN, FakeKube
from tests.engine_harness import Harness, harness_fixture, sandbox_config
from tests.test_kubernetes import NS, SETTINGS, VELERO, seed
from tests.test_sandbox import T0, FakeClock, MemoryState

LIVE = "rag-engine-staging"
SCRATCH = f"{LIVE}-drill-r1"
MAPPING = [f"{LIVE}:{SCRATCH}"]

harness = pytest.fixture(harness_fixture)


def sandbox_world(h: Harness) -> dict[str, dict[str, Any]]:
    return {kind: h.engine.store.list_state(kind=kind) for kind in ("sandbox.k8s", NAMESPACE_KIND)}


def materialise(h: Harness) -> None:
    """The sandbox makes its world (the live namespace and deployment, the backups) on first sight."""
    resources = h.engine.settings.environment("staging").resources
    k8s = h.engine.providers(environment="staging", resource="kubernetes",
                             config=resources["kubernetes"].settings() | {"provider": "sandbox"})
    k8s.plan(action="check_deployment", params={"deployment": "rag-engine-api", "namespace": LIVE})


# --------------------------------------------------------------------------------------------- (a) the sandbox drill


def test_the_catalog_drill_maps_the_namespace_and_deletes_the_scratch_one() -> None:
    variant = drill_variant(load_catalog().runbooks["k8s-restore"])
    restore = next(s for s in variant.steps if s.id == "velero_restore")
    assert restore.creates is not None and restore.creates.kind == "namespace"
    assert not restore.marks_restored and not variant.recovery
    assert [(c.id, c.action, c.guarded, c.removes) for c in variant.cleanup] == [
        ("delete_drill_namespace", "kubernetes.delete_namespace", True, ("velero_restore",))]
    ctx = {"env": {"kubernetes": {"namespace": LIVE}}, "run": {"short": "r1"}}
    assert render(restore.params["namespace_mapping"], ctx) == MAPPING
    assert render(variant.cleanup[0].params, ctx) == {"namespace": SCRATCH}
    # why a list of "source:target" strings: templates are rendered in values, never in mapping keys
    assert render({"{{ env.kubernetes.namespace }}": "x"}, ctx) == {"{{ env.kubernetes.namespace }}": "x"}


def test_a_k8s_drill_restores_into_a_scratch_namespace_and_deletes_it(harness: Callable[..., Harness]) -> None:
    h = harness()
    materialise(h)
    before = sandbox_world(h)
    live_key = f"staging/{LIVE}"
    assert before[NAMESPACE_KIND][live_key]["run_id"] is None and before["sandbox.k8s"]
    reply = h.say("/dr drill k8s-restore staging backup=latest")
    assert "Drill INC-1 opened" in reply.text
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED, run

    planned = h.recorder.last(EventKind.RUN_PLANNED)
    assert "DRILL — no live resource is changed." in planned.text
    assert f"Creates: namespace {SCRATCH}." in planned.text
    assert "Delete the drill's scratch namespace" in planned.text
    restore = planned.data["plan"]["steps"][0]
    assert restore["action"] == "kubernetes.velero_restore"
    assert restore["params"]["namespace_mapping"] == MAPPING and restore["params"]["include_namespaces"] == [LIVE]
    assert restore["details"]["namespace_mapping"] == {LIVE: SCRATCH}
    [cleanup] = planned.data["plan"]["cleanup"]
    assert (cleanup["id"], cleanup["params"]) == ("delete_drill_namespace", {"namespace": SCRATCH})

    after = sandbox_world(h)
    scratch = after[NAMESPACE_KIND][f"staging/{SCRATCH}"]
    assert scratch["run_id"] == "R-1" and scratch["from"] == LIVE, "the restore created the scratch namespace"
    assert scratch.get("deletion") and scratch["phase"] == "Terminating", "and the clean-up deleted it"
    velero = h.engine.store.load_state(kind="sandbox.velero", key="staging/velero")
    assert velero is not None and velero["restores"][-1]["namespace_mapping"] == {LIVE: SCRATCH}
    assert after["sandbox.k8s"] == before["sandbox.k8s"], "the live deployment is untouched"
    assert after[NAMESPACE_KIND][live_key] == before[NAMESPACE_KIND][live_key], "the live namespace is untouched"

    report = h.recorder.last(EventKind.RUN_REPORT)
    assert report.text.startswith("Drill: Velero restore ") and f"into the scratch namespace {SCRATCH}" in report.text
    cleaned = h.recorder.wait_for(EventKind.RUN_CLEANUP)
    assert cleaned.text.startswith("Clean-up of R-1: everything it made is gone.")
    assert f"• namespace `{SCRATCH}` (sandbox): deleted" in cleaned.text
    assert cleaned.data["left"] == 0 and [r["name"] for r in cleaned.data["resources"]] == [SCRATCH]
    kinds = h.recorder.kinds()
    assert EventKind.INCIDENT_RESTORED not in kinds, "a drill never marks anything restored"
    assert kinds.index(EventKind.RUN_SUCCEEDED) < kinds.index(EventKind.RUN_CLEANUP)
    incident = h.engine.store.get_incident("INC-1")
    assert incident is not None and incident.status is IncidentStatus.RESOLVED
    assert Ledger(h.engine.store).leaks(now=h.engine.clock.now(), ttl=timedelta(0)) == []


def test_a_k8s_drill_whose_restore_fails_still_deletes_the_scratch_namespace(
        harness: Callable[..., Harness]) -> None:
    data = copy.deepcopy(SANDBOX_CONFIG)
    data["environments"]["staging"]["kubernetes"]["failures"] = {
        "velero_restore": {"message": "injected velero_restore failure", "at": "start", "times": 5}}
    h = harness(config=data)
    h.say("/dr drill k8s-restore staging")
    paused = h.recorder.wait_for(EventKind.RUN_PAUSED, timeout=60)
    assert paused.data["step_id"] == "velero_restore"
    h.settle()
    h.press(EventKind.RUN_PAUSED, "Abort", actor="bob")
    cleaned = h.recorder.wait_for(EventKind.RUN_CLEANUP, timeout=60)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.FAILED  # type: ignore[union-attr]
    assert cleaned.data["left"] == 0, "never made, so already gone: the clean-up succeeds"
    assert f"staging/{SCRATCH}" not in h.engine.store.list_state(kind=NAMESPACE_KIND)


# --------------------------------------------------------------------------------------------- (b) the real provider


DRILL_NS = f"{NS}-drill-r1"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        seed(fake)
        fake.add_namespace(NS)
        fake.add_namespace("kube-system")
        yield fake


@pytest.fixture
def k8s(kube: FakeKube) -> KubernetesProvider:
    return KubernetesProvider(environment="prod", resource="kubernetes", settings=SETTINGS, client=kube.api_client())


def finish(provider: Provider, op: Operation) -> list[OperationStatus]:
    seen = [provider.poll(operation=op)]
    while not seen[-1].done:
        seen.append(provider.poll(operation=op))
        assert len(seen) < 50
    return seen


def test_the_restore_carries_the_namespace_mapping_and_velero_fills_the_scratch_namespace(
        kube: FakeKube, k8s: KubernetesProvider) -> None:
    params = {"backup": "latest", "include_namespaces": [NS], "namespace_mapping": [f"{NS}:{DRILL_NS}"]}
    plan = k8s.plan(action="velero_restore", params=params)
    assert plan["restore_spec"] == {"backupName": "daily-20261124020000", "includedNamespaces": [NS],
                                    "namespaceMapping": {NS: DRILL_NS}}
    assert plan["namespace_mapping"] == {NS: DRILL_NS}
    assert k8s.preflight(action="velero_restore", params=params) == []
    live_before = kube.get("deployments", NS, "rag-engine-api")
    op = k8s.start(action="velero_restore", params=params, run_id="R-1")
    created = kube.get("restores", VELERO, op.data["restore"])
    assert created is not None and created["spec"]["namespaceMapping"] == {NS: DRILL_NS}
    assert created["spec"]["includedNamespaces"] == [NS]
    assert finish(k8s, op)[-1].status == "Completed"
    assert kube.get("namespaces", "", DRILL_NS) is not None, "Velero made the scratch namespace"
    assert kube.get("deployments", DRILL_NS, "rag-engine-api") is not None
    assert kube.get("deployments", NS, "rag-engine-api") == live_before, "the live namespace is untouched"
    # a mapping given as a mapping reads the same; one Restore per run
    again = k8s.start(action="velero_restore", params={**params, "namespace_mapping": {NS: DRILL_NS}}, run_id="R-1")
    assert again.id == op.id and len([r for r in kube.requests if r.method == "POST"]) == 1


@pytest.mark.parametrize(("mapping", "sentence"), [
    (["rag-engine"], "`namespace_mapping` entry 'rag-engine' is not \"source:target\""),
    ({NS: "Rag_Engine"}, "`namespace_mapping` names 'Rag_Engine', which is not a namespace name"),
    ({NS: NS}, f"`namespace_mapping` maps `{NS}` onto itself"),
    ({"billing": "billing-drill-r1"}, "`namespace_mapping` maps `billing`, which include_namespaces leaves out"),
])
def test_a_bad_mapping_is_refused_before_anything_is_created(kube: FakeKube, k8s: KubernetesProvider,
                                                              mapping: Any, sentence: str) -> None:
    params = {"backup": "latest", "include_namespaces": [NS], "namespace_mapping": mapping}
    problems = k8s.preflight(action="velero_restore", params=params)
    assert problems and problems[0].startswith(sentence), problems
    if "include_namespaces" not in sentence:
        with pytest.raises(PermanentError, match="namespace_mapping"):
            k8s.start(action="velero_restore", params=params, run_id="R-1")
    assert [r for r in kube.requests if r.method == "POST"] == []


def test_delete_namespace_refuses_anything_but_a_drill_namespace_and_sends_nothing(
        kube: FakeKube, k8s: KubernetesProvider) -> None:
    sent = len(kube.requests)
    for name in (NS, "kube-system", "rag-engine-pitr-r1"):
        [problem] = k8s.preflight(action="delete_namespace", params={"namespace": name})
        assert problem.startswith(f"Refusing to delete namespace `{name}`: it is not a drill's scratch namespace")
        with pytest.raises(PermanentError, match="Refusing to delete namespace") as refused:
            k8s.start(action="delete_namespace", params={"namespace": name}, run_id="R-1")
        assert refused.value.code == "InvalidParameter"
    assert len(kube.requests) == sent, "a refusal reaches no apiserver"
    drilled_live = KubernetesProvider(environment="prod", resource="kubernetes",
                                      settings={**SETTINGS, "namespace": DRILL_NS}, client=kube.api_client())
    assert drilled_live.preflight(action="delete_namespace", params={"namespace": DRILL_NS}) != [], \
        "the configured namespace is never deleted, even with a drill-like name"
    assert kube.get("namespaces", "", NS) is not None and kube.get("namespaces", "", "kube-system") is not None


def test_delete_namespace_deletes_a_drill_namespace_and_follows_it_until_it_is_gone(
        kube: FakeKube, k8s: KubernetesProvider) -> None:
    kube.add_namespace(DRILL_NS)
    kube.add_deployment(DRILL_NS, "rag-engine-api")
    kube.state.namespace_terminating_reads = 1  # one GET still sees it Terminating
    params = {"namespace": DRILL_NS}
    assert k8s.preflight(action="delete_namespace", params=params) == []
    assert k8s.plan(action="delete_namespace", params=params)["status"] == "Active"
    sent = len(kube.requests)
    op = k8s.start(action="delete_namespace", params=params, run_id="R-1")
    again = k8s.start(action="delete_namespace", params=params, run_id="R-1")  # 409 while terminating: attach
    assert again == op
    seen = finish(k8s, op)
    assert [s.status for s in seen] == ["Terminating", "deleted"]
    assert seen[-1].outputs == {"deleted": True, "namespace": DRILL_NS}
    assert k8s.verify(action="delete_namespace", params=params, outputs=seen[-1].outputs) == []
    deletes = [(r.path, r.status) for r in kube.requests[sent:] if r.method == "DELETE"]
    assert deletes == [(f"/api/v1/namespaces/{DRILL_NS}", 200), (f"/api/v1/namespaces/{DRILL_NS}", 409)]
    assert {r.method for r in kube.requests[sent:]} == {"DELETE", "GET"}, "only the DELETE changed anything"
    assert kube.get("namespaces", "", DRILL_NS) is None and kube.get("deployments", DRILL_NS, "rag-engine-api") is None
    assert kube.get("namespaces", "", NS) is not None and kube.get("deployments", NS, "rag-engine-api") is not None


def test_an_absent_drill_namespace_is_already_deleted(kube: FakeKube, k8s: KubernetesProvider) -> None:
    name = f"{NS}-drill-r9"
    assert k8s.preflight(action="delete_namespace", params={"namespace": name}) == []
    op = k8s.start(action="delete_namespace", params={"namespace": name}, run_id="R-9")
    assert finish(k8s, op)[-1].outputs == {"deleted": True, "namespace": name}
    assert [(r.path, r.status) for r in kube.requests if r.method == "DELETE"] == [(f"/api/v1/namespaces/{name}", 404)]


def test_a_forbidden_delete_is_a_permanent_error(kube: FakeKube, k8s: KubernetesProvider) -> None:
    kube.add_namespace(DRILL_NS)
    kube.fail("DELETE", f"/namespaces/{DRILL_NS}", 403, message="namespaces is forbidden")
    with pytest.raises(PermanentError, match="refused to delete Namespace"):
        k8s.start(action="delete_namespace", params={"namespace": DRILL_NS}, run_id="R-1")
    assert kube.get("namespaces", "", DRILL_NS) is not None


def test_the_drill_through_the_engine_on_the_real_provider(harness: Callable[..., Harness],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRBOT_TEST_KUBE_TOKEN", TOKEN)
    with FakeKube() as kube:
        kube.add_backup("velero", "daily-20261124", completed="2026-11-24T02:00:00Z", namespaces=[LIVE])
        kube.add_namespace(LIVE)
        kube.add_deployment(LIVE, "rag-engine-api")
        live_before = kube.get("deployments", LIVE, "rag-engine-api")

        def real(data: dict[str, Any]) -> None:
            data["environments"]["staging"]["kubernetes"] = {
                "provider": "kubernetes", "api_url": kube.url, "token_env": "DRBOT_TEST_KUBE_TOKEN",
                "context": "staging", "namespace": LIVE, "deployment": "rag-engine-api", "velero_namespace": "velero"}

        h = harness(config=sandbox_config(real=real))
        h.say("/dr drill k8s-restore staging backup=latest")
        h.settle()
        assert h.engine.store.get_run("R-1").status is RunStatus.SUCCEEDED, h.recorder.kinds()  # type: ignore
        [restore] = kube.names("restores", "velero")
        created = kube.get("restores", "velero", restore)
        assert created is not None and created["spec"]["namespaceMapping"] == {LIVE: SCRATCH}
        assert [r.path for r in kube.requests if r.method == "DELETE"] == [f"/api/v1/namespaces/{SCRATCH}"]
        assert [r.method for r in kube.requests if r.method not in {"GET", "DELETE"}] == ["POST"], "one Restore"
        assert kube.get("namespaces", "", SCRATCH) is None, "made by the restore, deleted by the clean-up"
        assert kube.get("namespaces", "", LIVE) is not None
        assert kube.get("deployments", LIVE, "rag-engine-api") == live_before
        cleaned = h.recorder.wait_for(EventKind.RUN_CLEANUP)
        assert cleaned.data["left"] == 0 and f"• namespace `{SCRATCH}` (kubernetes): deleted" in cleaned.text


# --------------------------------------------------------------------------------------------- the sandbox twin


def test_the_sandbox_twin_makes_and_deletes_the_scratch_namespace_with_the_same_sentences() -> None:
    clock, state = FakeClock(T0), MemoryState()
    sandbox = build_sandbox_provider(environment="prod", resource="kubernetes", settings=SETTINGS, state=state,
                                     clock=clock, speed=1e4)

    def run(action: str, params: dict[str, Any], run_id: str = "R-1") -> OperationStatus:
        assert sandbox.preflight(action=action, params=params) == []
        op = sandbox.start(action=action, params=params, run_id=run_id)
        status = sandbox.poll(operation=op)
        while not status.done:
            clock.advance(0.5)
            status = sandbox.poll(operation=op)
        return status

    [problem] = sandbox.preflight(action="delete_namespace", params={"namespace": NS})
    assert problem.startswith(f"Refusing to delete namespace `{NS}`: it is not a drill's scratch namespace")
    assert run("velero_restore", {"backup": "latest", "include_namespaces": [NS],
                                  "namespace_mapping": [f"{NS}:{DRILL_NS}"]}).status == "Completed"
    made = state.load_state(kind=NAMESPACE_KIND, key=f"prod/{DRILL_NS}")
    assert made is not None and made["run_id"] == "R-1" and not made.get("deletion")
    assert sandbox.plan(action="delete_namespace", params={"namespace": DRILL_NS})["status"] == "Active"
    done = run("delete_namespace", {"namespace": DRILL_NS})
    assert done.outputs == {"deleted": True, "namespace": DRILL_NS}
    gone = state.load_state(kind=NAMESPACE_KIND, key=f"prod/{DRILL_NS}")
    assert gone is not None and gone.get("deletion")
    assert sandbox.plan(action="delete_namespace", params={"namespace": DRILL_NS})["status"] == "not found"
    live = state.load_state(kind=NAMESPACE_KIND, key=f"prod/{NS}")
    assert live is not None and not live.get("deletion")
    bad = sandbox.preflight(action="velero_restore", params={"backup": "latest", "namespace_mapping": {NS: NS}})
    assert bad == [f"`namespace_mapping` maps `{NS}` onto itself; leave it out to restore in place."]
