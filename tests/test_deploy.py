"""deploy/kubernetes, the kustomize base operators copy. Rendered as `kubectl apply -k` renders it (or, without
kubectl, assembled from kustomization.yaml the same way), every object is checked offline against the Kubernetes
schemas that `kubernetes-validate` bundles, and the properties high availability rests on are asserted: a broken
manifest fails here, not in an operator's cluster during a disaster."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.config import Settings, load_config
from tests.shellrun import ROOT, shell_env

BASE = ROOT / "deploy" / "kubernetes"
KINDS = {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"}
# The oldest Kubernetes the base promises to work on, and the newest schemas the package bundles.
SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# What the fallback assembly understands; a kustomization that grows past it must teach `assemble` first.
ASSEMBLED_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator"}
SECRET_KEYS = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "DRBOT_DATABASE_URL", "PAGERDUTY_WEBHOOK_SECRETS",
               "PAGERDUTY_API_TOKEN", "PAGERDUTY_FROM_EMAIL"}

Obj = dict[str, Any]


def assemble() -> list[Obj]:
    """What `kubectl kustomize` renders, without kubectl: the listed resources plus the generated ConfigMap (its
    name without the content hash)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    unknown = set(kustomization) - ASSEMBLED_KEYS
    assert not unknown, f"kustomization.yaml uses {sorted(unknown)}: teach assemble() to apply them"
    objects = [doc for name in kustomization["resources"]
               for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (BASE / path).read_text()
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                        "data": data})
    return objects


def kustomize(kubectl: str) -> list[Obj]:
    out = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    kubectl = shutil.which("kubectl")
    return kustomize(kubectl) if kubectl else assemble()


def one(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["drbot"]
    return containers[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def image_uid() -> int:
    """The numeric uid of the Dockerfile's last USER: what runAsUser must be for runAsNonRoot to hold."""
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert users, "the Dockerfile sets no USER: the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"USER {users[-1]} is not numeric: Kubernetes cannot verify runAsNonRoot"
    return int(uid)


def documented_env() -> set[str]:
    """The variables drbot both reads (bot.config.Settings) and documents (README.md)."""
    readme = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "README.md").read_text()))
    return {name.upper() for name in Settings.model_fields} & readme


def secret_values(secret: Obj) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def test_kubectl_kustomize_renders_what_the_assembly_does() -> None:
    """The other tests read kubectl's rendering when kubectl exists, else the assembly: both must agree."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the base was checked as assembled from kustomization.yaml, "
                    "not as `kubectl kustomize` renders it")
    by_kubectl = kustomize(kubectl)
    config = one(by_kubectl, "ConfigMap")
    hashed = config["metadata"]["name"]
    assert re.fullmatch(r"drbot-config-[a-z0-9]{10}", hashed), hashed
    volumes = pod_spec(by_kubectl)["volumes"]
    assert {"name": "config", "configMap": {"name": hashed}} in volumes, "the Deployment must mount the hashed name"
    config["metadata"]["name"] = "drbot-config"
    for volume in volumes:
        if "configMap" in volume:
            volume["configMap"]["name"] = "drbot-config"
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(by_kubectl, key=key) == sorted(assemble(), key=key)


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    assert {o["kind"] for o in rendered} == KINDS
    assert len(rendered) == len(KINDS)
    errors = []
    for obj in rendered:
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.caught}")
    assert not errors, "\n".join(errors)


def test_two_replicas_spread_across_zones_and_hosts(rendered: list[Obj]) -> None:
    deployment = one(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    terms = pod_spec(rendered)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    spread = {t["podAffinityTerm"]["topologyKey"] for t in terms
              if selects(t["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)}
    assert spread == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_the_disruption_budget_and_the_service_select_drbot_pods(rendered: list[Obj]) -> None:
    labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    service = one(rendered, "Service")
    assert selects(service["spec"]["selector"], labels)
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    assert port["targetPort"] in ("http", 8080)


def test_the_container_runs_drbot_serve_over_http_from_the_image(rendered: list[Obj]) -> None:
    c = container(rendered)
    assert c["image"].rpartition(":")[0] == "drbot", "kustomize `images:` sets name and tag by the name drbot"
    assert c["command"] + c["args"] == ["drbot", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_probes_ask_drbot_on_its_container_port(rendered: list[Obj]) -> None:
    c = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert ports.get(get["port"], get["port"]) == 8080, f"{probe} asks port {get['port']}, not 8080"
        paths[probe] = get["path"]
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "DBOS's launch needs a minute's slack"


def test_a_leader_has_time_to_hand_over(rendered: list[Obj]) -> None:
    pause = container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = pod_spec(rendered)["terminationGracePeriodSeconds"]
    assert grace >= 30
    assert grace - int(pause[1]) >= 10, "after the preStop pause, SIGTERM needs its 2 s hand-over and some margin"


def test_the_pod_runs_as_the_images_non_root_user_without_privileges(rendered: list[Obj]) -> None:
    pod = pod_spec(rendered)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == image_uid() != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(rendered)
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert "privileged" not in c["securityContext"]
    scratch = {v["name"] for v in pod_spec(rendered)["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in scratch}
    assert "/tmp" in writable
    assert {"requests", "limits"} <= set(c["resources"])
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]


def test_the_deployment_sets_only_documented_variables(rendered: list[Obj]) -> None:
    documented = documented_env()
    c = container(rendered)
    env = {e["name"]: e for e in c["env"]}
    secret = one(rendered, "Secret")
    assert c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    undocumented = (set(env) | set(secret_values(secret))) - documented
    assert not undocumented, f"drbot does not document {sorted(undocumented)}"
    assert pod_spec(rendered)["enableServiceLinks"] is False, "service links inject undocumented DRBOT_* variables"
    assert env["DRBOT_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_secret_holds_the_documented_placeholders(rendered: list[Obj]) -> None:
    values = secret_values(one(rendered, "Secret"))
    assert set(values) == SECRET_KEYS
    assert not SECRET_KEYS - documented_env(), "the Secret's keys must be variables drbot documents"
    assert "SLACK_APP_TOKEN" not in values, "the Service carries Slack over HTTP; an app token means Socket Mode"
    assert values["DRBOT_DATABASE_URL"].startswith("postgresql+psycopg://"), "replicas share one PostgreSQL"
    for key in SECRET_KEYS - {"PAGERDUTY_FROM_EMAIL"}:
        assert "REPLACE_ME" in values[key], f"{key} must be an obvious placeholder"


def test_drbot_config_points_at_the_mounted_configmap(rendered: list[Obj], tmp_path: Path) -> None:
    c = container(rendered)
    config_map = one(rendered, "ConfigMap")
    [volume] = [v for v in pod_spec(rendered)["volumes"]
                if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    path = {e["name"]: e.get("value") for e in c["env"]}["DRBOT_CONFIG"]
    assert path == f"{mount['mountPath']}/drbot.yml"
    assert set(config_map["data"]) == {"drbot.yml"}
    written = tmp_path / "drbot.yml"
    written.write_text(config_map["data"]["drbot.yml"], encoding="utf-8")
    config = load_config(written)
    assert config.environments


@pytest.mark.slow
def test_drbot_check_passes_on_the_shipped_config(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(BASE / "drbot.yml")],
                            capture_output=True, text=True, cwd=tmp_path, env=shell_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout, result.stdout
