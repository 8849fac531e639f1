"""The kubernetes provider drives the official client against a fake kube-apiserver: Velero restores validated
against the real CRD, Deployment patches merged by name with kubectl's rollout rule, and errors translated
into drbot's exception tree without tokens or Secret values."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.kubernetes import KubernetesProvider, build_kubernetes_provider
from integrations.kubernetes.velero import restore_name
from runbooks.errors import PermanentError, TransientError
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.fake_kube import TOKEN, VALIDATION_MESSAGE, FakeKube, RestoreOutcome

NS, DEPLOY, VELERO = "rag-engine", "rag-engine-api", "velero"
SETTINGS = {"context": "prod", "namespace": NS, "deployment": DEPLOY, "velero_namespace": VELERO}
TARGET = {"deployment": DEPLOY, "namespace": NS}


def seed(kube: FakeKube) -> None:
    for day in (22, 23, 24):
        kube.add_backup(VELERO, f"daily-202611{day}020000", completed=f"2026-11-{day}T02:04:00Z",
                        namespaces=[NS], total_items=140 + day - 22)
    kube.add_backup(VELERO, "hourly-20261124113000", phase="PartiallyFailed", completed="2026-11-24T11:32:00Z",
                    namespaces=[NS])
    kube.add_deployment(NS, DEPLOY, replicas=3, containers={
        DEPLOY: {"LOG_LEVEL": "info", "DB_PASSWORD": "hunter2-old"}, "sidecar": {"MODE": "proxy"}})
    kube.add_secret(NS, "api-keys", {"OPENAI_API_KEY": base64.b64encode(b"sk-old").decode()})


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        seed(fake)
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


def writes(kube: FakeKube, method: str) -> list[str]:
    return [r.path for r in kube.requests if r.method == method]


# --------------------------------------------------------------------------------------------- velero


def test_latest_restore_runs_to_completed_with_progress_and_outputs(kube: FakeKube, k8s: KubernetesProvider) -> None:
    plan = k8s.plan(action="velero_restore", params={"backup": "latest", "include_namespaces": [NS]})
    assert (plan["backup"], plan["backup_time"], plan["phase"]) == ("daily-20261124020000", "2026-11-24T02:04:00Z",
                                                                   "Completed")
    assert plan["restore_spec"] == {"backupName": "daily-20261124020000", "includedNamespaces": [NS]}
    assert k8s.preflight(action="kubernetes.velero_restore", params={"backup": "latest"}) == []
    op = k8s.start(action="velero_restore", params={"backup": "latest", "include_namespaces": [NS]}, run_id="R-7")
    assert op.data["restore"] == "daily-20261124020000-r-7"
    created = kube.get("restores", VELERO, "daily-20261124020000-r-7")
    assert created is not None and created["spec"] == {"backupName": "daily-20261124020000",
                                                       "includedNamespaces": [NS]}
    seen = finish(k8s, op)
    assert [s.status for s in seen] == ["New", "InProgress", "InProgress", "Completed"]
    assert seen[2].message == "InProgress: itemsRestored 71/142" and seen[2].progress == pytest.approx(0.5)
    assert seen[-1].outputs == {"restore": "daily-20261124020000-r-7", "backup": "daily-20261124020000",
                                "phase": "Completed", "items_restored": 142, "total_items": 142,
                                "backup_time": "2026-11-24T02:04:00Z"}
    assert k8s.verify(action="velero_restore", params={"backup": "latest"}, outputs=seen[-1].outputs) == []


def test_start_twice_attaches_and_a_lost_race_409_attaches_too(kube: FakeKube, k8s: KubernetesProvider) -> None:
    first = k8s.start(action="velero_restore", params={"backup": "daily-20261123020000"}, run_id="R-1")
    again = k8s.start(action="velero_restore", params={"backup": "daily-20261123020000"}, run_id="R-1")
    assert first == again and len(writes(kube, "POST")) == 1
    kube.add_backup(VELERO, "daily-20261125020000", completed="2026-11-25T02:04:00Z", namespaces=[NS])
    latest = k8s.start(action="velero_restore", params={"backup": "latest"}, run_id="R-2")
    kube.add_backup(VELERO, "daily-20261126020000", completed="2026-11-26T02:04:00Z", namespaces=[NS])
    assert k8s.start(action="velero_restore", params={"backup": "latest"}, run_id="R-2") == latest
    assert latest.data["backup"] == "daily-20261125020000" and len(writes(kube, "POST")) == 2
    from kubernetes import client

    rival = {"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "daily-20261124020000-r-3"},
             "spec": {"backupName": "daily-20261124020000"}}
    client.CustomObjectsApi(kube.api_client()).create_namespaced_custom_object("velero.io", "v1", VELERO,
                                                                               "restores", rival)
    kube.fail("GET", "/restores/daily-20261124020000-r-3", 404)  # created between our read and our create
    op = k8s.start(action="velero_restore", params={"backup": "daily-20261124020000"}, run_id="R-3")
    assert kube.requests[-1].method == "POST" and kube.requests[-1].status == 409
    assert op.data["restore"] == "daily-20261124020000-r-3" and finish(k8s, op)[-1].status == "Completed"


@pytest.mark.parametrize(("backup", "expected"), [
    ("nightly-1", "Velero backup `nightly-1` does not exist; Completed backups: daily-20261122020000, "),
    ("hourly-20261124113000", "Velero backup `hourly-20261124113000` is `PartiallyFailed`, not Completed"),
])
def test_preflight_refuses_missing_or_unfinished_backups(k8s: KubernetesProvider, backup: str, expected: str) -> None:
    problems = k8s.preflight(action="velero_restore", params={"backup": backup})
    assert len(problems) == 1 and problems[0].startswith(expected)
    with pytest.raises(PermanentError, match=re.escape(expected)):
        k8s.start(action="velero_restore", params={"backup": backup}, run_id="R-1")


def test_preflight_refuses_a_namespace_the_backup_lacks(k8s: KubernetesProvider) -> None:
    problems = k8s.preflight(action="velero_restore", params={"backup": "latest", "include_namespaces": ["billing"]})
    assert problems == ["Backup `daily-20261124020000` does not contain namespace(s) billing (it has rag-engine); "
                        "fix include_namespaces."]


@pytest.mark.parametrize(("outcome", "words"), [
    (RestoreOutcome(phase="PartiallyFailed", errors=3, warnings=1), "ended PartiallyFailed, 3 errors, 1 warnings"),
    (RestoreOutcome(phase="Failed", failure_reason="error downloading backup: timeout"),
     "ended Failed, reason: error downloading backup: timeout"),
])
def test_failed_phases_fail_the_step_with_velero_words(kube: FakeKube, k8s: KubernetesProvider,
                                                        outcome: RestoreOutcome, words: str) -> None:
    kube.state.outcome = outcome
    last = finish(k8s, k8s.start(action="velero_restore", params={"backup": "latest"}, run_id="R-1"))[-1]
    assert last.failed and last.status == outcome.phase and words in last.message
    assert "velero restore logs daily-20261124020000-r-1" in last.message
    assert k8s.verify(action="velero_restore", params={}, outputs=last.outputs) != []


def test_a_restore_naming_both_backup_and_schedule_fails_validation(kube: FakeKube, k8s: KubernetesProvider) -> None:
    from kubernetes import client

    body = {"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "both"},
            "spec": {"backupName": "daily-20261124020000", "scheduleName": "daily"}}
    client.CustomObjectsApi(kube.api_client()).create_namespaced_custom_object("velero.io", "v1", VELERO,
                                                                               "restores", body)
    op = Operation(provider="kubernetes", action="velero_restore", id="velero/both", target="x",
                   data={"context": "prod", "namespace": VELERO, "restore": "both", "backup": "x", "backup_time": ""})
    last = finish(k8s, op)[-1]
    assert last.failed and last.status == "FailedValidation" and VALIDATION_MESSAGE in last.message


def test_the_fake_holds_restores_to_the_crd_schema(kube: FakeKube) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(kube.api_client())
    body = {"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "typo"},
            "spec": {"backupNmae": "daily-20261124020000", "restorePVs": "yes", "existingResourcePolicy": 1}}
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object("velero.io", "v1", VELERO, "restores", body)
    status = json.loads(caught.value.body or "{}")
    assert caught.value.status == 422 and status["reason"] == "Invalid"
    assert {c["field"] for c in status["details"]["causes"]} == {"spec", "spec.restorePVs",
                                                                 "spec.existingResourcePolicy"}


@pytest.mark.parametrize("backup", ["daily-20261124020000", "x" * 80, "Weekly.Backup-" + "y" * 60])
def test_restore_names_are_dns_1123_labels(backup: str) -> None:
    name = restore_name(backup, "R-12345")
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and name.endswith("-r-12345")
    assert restore_name(backup, "R-12345") == name != restore_name(backup, "R-12346")


# --------------------------------------------------------------------------------------------- errors


def test_throttling_and_5xx_are_transient_and_forbidden_is_a_sentence(kube: FakeKube, k8s: KubernetesProvider) -> None:
    kube.fail("GET", "/backups", 429)
    with pytest.raises(TransientError, match="HTTP 429"):
        k8s.start(action="velero_restore", params={"backup": "latest"}, run_id="R-1")
    kube.fail("GET", "/deployments/", 503)
    with pytest.raises(TransientError, match="drbot retries with backoff"):
        k8s.start(action="scale", params={**TARGET, "replicas": 4}, run_id="R-1")
    kube.fail("GET", "/deployments/", 403)
    problems = k8s.preflight(action="scale", params={**TARGET, "replicas": 4})
    assert problems and "HTTP 403" in problems[0] and "RBAC" in problems[0] and TOKEN not in problems[0]
    kube.fail("POST", "/restores", 422)
    with pytest.raises(PermanentError, match="refused to create Velero restore .*HTTP 422 Invalid"):
        k8s.start(action="velero_restore", params={"backup": "latest"}, run_id="R-1")


def test_unreachable_api_is_transient() -> None:
    with FakeKube() as gone:
        api = gone.api_client()
    api.configuration.retries = 0
    k8s = KubernetesProvider(environment="prod", resource="kubernetes", settings=SETTINGS, client=api)
    with pytest.raises(TransientError, match="unreachable"):
        k8s.poll(operation=Operation(provider="kubernetes", action="scale", id="x", data={
            "context": "prod", "namespace": NS, "deployment": DEPLOY, "generation": 2}))


def test_factory_builds_from_api_url_and_token_env_or_kubeconfig(kube: FakeKube, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {**SETTINGS, "api_url": kube.url, "token_env": "TEST_KUBE_TOKEN"}
    no_token = build_kubernetes_provider(environment="prod", resource="kubernetes", settings=settings,
                                         state=None, clock=None)
    with pytest.raises(PermanentError, match="credentials were refused"):
        no_token.plan(action="scale", params={**TARGET, "replicas": 2})
    monkeypatch.setenv("TEST_KUBE_TOKEN", TOKEN)
    provider = build_kubernetes_provider(environment="prod", resource="kubernetes", settings=settings,
                                         state=None, clock=None)
    assert provider.plan(action="scale", params={**TARGET, "replicas": 2})["replicas_now"] == 3
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "c", "cluster": {"server": kube.url}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c", "user": "nobody"}}]}))
    from_file = build_kubernetes_provider(environment="prod", resource="kubernetes", state=None, clock=None,
                                          settings={**SETTINGS, "kubeconfig": str(kubeconfig)})
    assert from_file.preflight(action="velero_restore", params={"backup": "latest"}) == []
    with pytest.raises(PermanentError, match="Cannot load Kubernetes credentials for context `staging`"):
        from_file.plan(action="velero_restore", params={"backup": "latest", "context": "staging"})

