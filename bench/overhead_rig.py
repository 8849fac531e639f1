"""The doubles, runbooks and clock that bench_overhead.py drives drbot's real providers with.

Why a warped clock: an operation that takes 120 s should not cost 120 s of bench time, yet the overhead must
include the real work between T and the completion event (the poll's HTTP round trip, SDK parsing, DBOS
checkpoints, store writes). `WarpClock` is real monotonic time plus every second the engine asked to sleep: a
`sleep` jumps the clock forward at once instead of waiting. The engine and the doubles read the same clock, so
the poll schedule is exactly what production would do, and only the idle waiting is skipped.

Each provider gets its own environment (`aws`, `gcp`, `azure`, `k8s`, `vectors`, approvals 0) and a one-step
runbook, so a run is one `/dr run` through the engine: plan, pre-flight, start, wait, finish.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runbooks.ports import Clock, Provider, ProviderFactory, StateStore
from tests.doubles.fake_azure import FakeAzure
from tests.doubles.timing import OperationTimer

KUBE_TOKEN_ENV = "DRBOT_BENCH_KUBE_TOKEN"
SOURCE = "rag-bench"
RUNBOOKS = {
    "bench-db-pitr": ("database.restore_pitr", {
        "source": "{{ env.database.instance }}", "target": "{{ env.database.instance }}-pitr-{{ run.short }}",
        "restore_time": "{{ cmd.time }}"}),
    "bench-dns-switch": ("dns.switch", {
        "zone_id": "{{ env.dns.zone_id }}", "record": "{{ env.dns.record }}", "type": "{{ env.dns.type }}",
        "target": "{{ env.dns.dr_target }}"}),
    "bench-k8s-restore": ("kubernetes.velero_restore", {
        "backup": "latest", "include_namespaces": ["{{ env.kubernetes.namespace }}"],
        "velero_namespace": "{{ env.kubernetes.velero_namespace }}"}),
    "bench-vectors-restore": ("vectors.restore_snapshot", {
        "collection": "{{ env.vectors.collection }}", "snapshot": "latest"}),
}


class WarpClock:
    """Real time plus skipped sleeps (see the module docstring); a runbooks.ports.Clock."""

    def __init__(self) -> None:
        self._origin = datetime.now(UTC)
        self._real = time.monotonic()
        self._skipped = 0.0
        self._lock = threading.Lock()

    @property
    def skipped(self) -> float:
        with self._lock:
            return self._skipped

    def now(self) -> datetime:
        with self._lock:
            return self._origin + timedelta(seconds=time.monotonic() - self._real + self._skipped)

    def epoch(self) -> float:
        """The same moment as `now()`, in seconds: the doubles' clock."""
        return self.now().timestamp()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._skipped += max(0.0, seconds)
        time.sleep(0)


@dataclass(frozen=True)
class Scenario:
    """One provider's operation: the command that starts it, the timer of the double that finishes it, and what
    to reset before each run so that the run really starts an operation."""

    provider: str
    action: str
    command: Callable[[], str]
    timer: OperationTimer
    prepare: Callable[[], None] = lambda: None


def write_runbooks(directory: Path) -> None:
    """One-step runbooks, loaded as an organisation's extra catalog directory (checked like the built-ins)."""
    import yaml

    for name, (action, params) in RUNBOOKS.items():
        spec: dict[str, Any] = {"name": name, "version": 1, "title": f"Bench: {action}",
                                "description": "One guarded step, for bench_overhead.py.", "recovery": False,
                                "steps": [{"id": "op", "title": f"Bench {action}", "action": action,
                                           "params": params, "guarded": True}]}
        if name == "bench-db-pitr":
            spec["params"] = [{"name": "time", "kind": "time", "required": True, "help": "restore point"}]
        (directory / f"{name}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))


class InjectingProviders:
    """Wiring's provider registry, except Azure, whose client must trust the double's self-signed certificate
    and take a static token (DefaultAzureCredential would reach for Entra ID); the provider class is the real one."""

    def __init__(self, base: ProviderFactory, *, azure: FakeAzure | None, state: StateStore, clock: Clock) -> None:
        self.base, self.fake, self.state, self.clock = base, azure, state, clock
        self._cache: dict[tuple[str, str], Provider] = {}

    def __call__(self, *, environment: str, resource: str, config: Mapping[str, Any]) -> Provider:
        if config.get("provider") != "azure-postgres":
            return self.base(environment=environment, resource=resource, config=config)
        key = (environment, resource)
        if key not in self._cache:
            from integrations.azure.postgres import AzurePostgres

            assert self.fake is not None, "an azure-postgres environment without the Azure double"
            settings = {k: v for k, v in config.items() if k != "provider"}
            self._cache[key] = AzurePostgres(environment=environment, resource=resource, settings=settings,
                                             client=self.fake.client(retry_total=2), state=self.state,
                                             clock=self.clock)
        return self._cache[key]


@dataclass
class Rig:
    environments: dict[str, Any]
    scenarios: list[Scenario]
    azure: FakeAzure | None


def _unguarded() -> dict[str, Any]:
    """An environment needing no second person: the bench measures waiting, not approving."""
    return {"tier": "standard", "approvals": {"required": 0}, "settings": {}}


@contextmanager
def doubles(clock: WarpClock, *, only: frozenset[str] | None = None) -> Iterator[Rig]:
    """Every double in timed mode on `clock`, seeded, and the environments and scenarios that use them."""
    from tests.doubles.fake_azure import fake_azure
    from tests.doubles.fake_cloudsql import fake_cloudsql
    from tests.doubles.fake_kube import TOKEN, FakeKube
    from tests.doubles.fake_qdrant import FakeQdrant
    from tests.doubles.moto_server import moto_server, seed_rds_source, seed_zone
    from tests.doubles.timed_aws_proxy import timed_aws_proxy

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", KUBE_TOKEN_ENV: TOKEN})
    want = only or frozenset({"aws-rds", "route53", "cloudsql", "azure-postgres", "kubernetes", "qdrant"})
    envs: dict[str, Any] = {}
    scenarios: list[Scenario] = []

    def timer() -> OperationTimer:
        return OperationTimer(duration=0.0, clock=clock.epoch)

    with ExitStack() as stack:
        if want & {"aws-rds", "route53"}:
            moto = stack.enter_context(moto_server())
            seed_rds_source(moto, SOURCE)
            zone = seed_zone(moto, domain="rag-bench.com", record="api.rag-bench.com", value="198.51.100.7")
            aws_timer = timer()
            proxy = stack.enter_context(timed_aws_proxy(upstream=moto.url, timer=aws_timer))
            envs["aws"] = {**_unguarded(), "database": {
                "provider": "aws-rds", "instance": SOURCE, "region": "us-east-1", "endpoint_url": proxy.url},
                "dns": {"provider": "route53", "zone_id": zone, "record": "api.rag-bench.com", "type": "A",
                        "dr_target": "203.0.113.10", "endpoint_url": proxy.url}}
            if "aws-rds" in want:
                scenarios.append(Scenario("aws-rds", "restore_pitr", lambda: "/dr run bench-db-pitr aws "
                                          "time=latest", aws_timer))
            if "route53" in want:
                def reset_record() -> None:  # straight to moto: the switch must find the old value each run
                    moto.client("route53").change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
                        "Action": "UPSERT", "ResourceRecordSet": {"Name": "api.rag-bench.com", "Type": "A",
                                                                  "TTL": 60,
                                                                  "ResourceRecords": [{"Value": "198.51.100.7"}]}}]})

                scenarios.append(Scenario("route53", "switch (UPSERT)", lambda: "/dr run bench-dns-switch aws",
                                          aws_timer, reset_record))
        if "cloudsql" in want:
            gcp_timer = timer()
            world, url = stack.enter_context(fake_cloudsql(project="bench", now=clock.now, timer=gcp_timer))
            world.seed(SOURCE)
            envs["gcp"] = {**_unguarded(), "database": {"provider": "cloudsql", "project": "bench",
                                                        "instance": SOURCE, "region": "us-central1",
                                                        "endpoint_url": url, "credentials": "anonymous"}}
            scenarios.append(Scenario("cloudsql", "restore_pitr (clone)", lambda: "/dr run bench-db-pitr gcp "
                                      "time=latest", gcp_timer))
        azure_fake = None
        if "azure-postgres" in want:
            azure_timer = timer()
            azure_fake = stack.enter_context(fake_azure(timer=azure_timer))
            azure_fake.seed_server("dr-rg", SOURCE, earliest=datetime.now(UTC) - timedelta(days=7))
            envs["azure"] = {**_unguarded(), "database": {
                "provider": "azure-postgres", "instance": SOURCE, "server": SOURCE, "resource_group": "dr-rg",
                "subscription": azure_fake.subscription, "location": "eastus", "endpoint_url": azure_fake.url}}
            scenarios.append(Scenario("azure-postgres", "restore_pitr", lambda: "/dr run bench-db-pitr azure "
                                      "time=latest", azure_timer))
        if "kubernetes" in want:
            kube_timer = timer()
            kube = stack.enter_context(FakeKube(timer=kube_timer))
            kube.add_backup("velero", "daily-20261124", completed="2026-11-24T02:00:00Z")
            envs["k8s"] = {**_unguarded(), "kubernetes": {
                "provider": "kubernetes", "api_url": kube.url, "token_env": KUBE_TOKEN_ENV, "context": "bench",
                "namespace": "rag-engine", "deployment": "rag-engine-api", "velero_namespace": "velero"}}
            scenarios.append(Scenario("kubernetes", "velero_restore", lambda: "/dr run bench-k8s-restore k8s",
                                      kube_timer))
        if "qdrant" in want:
            qdrant_timer = timer()
            qdrant = stack.enter_context(FakeQdrant(recovery_polls=1, timer=qdrant_timer))
            qdrant.add_collection("documents", points_count=120_000)
            qdrant.add_snapshot("documents", at=datetime.now(UTC) - timedelta(hours=6), points_count=118_000)
            envs["vectors"] = {**_unguarded(), "vectors": {"provider": "qdrant", "url": qdrant.url,
                                                           "collection": "documents"}}
            scenarios.append(Scenario("qdrant", "restore_snapshot", lambda: "/dr run bench-vectors-restore vectors",
                                      qdrant_timer))

        yield Rig(environments=envs, scenarios=scenarios, azure=azure_fake)
