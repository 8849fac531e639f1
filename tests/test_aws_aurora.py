"""The aws-aurora provider against moto in server mode: real boto3 clients, real HTTP, moto's RDS cluster backend;
plus the contract with the sandbox twin and registration in wiring.

moto makes a restored cluster `available` on its second read and a writer `available` at once, does not check
the restore time against the window, and has no throttling; test_aws_aurora_stubbed.py covers those.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.wiring import ProviderRegistry
from integrations.aws.aurora import AuroraProvider
from integrations.sandbox import build_sandbox_provider
from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, PermanentError
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.clock import FakeClock
from tests.doubles.fake_kube import TOKEN, FakeKube
from tests.doubles.moto_server import MotoServer, moto_server
from tests.engine_harness import Harness, harness_fixture, sandbox_config
from tests.pg import PgServer
from tests.test_sandbox import MemoryState
from tests.test_sql_integrity import URL_ENV, make_restored_db

SRC = "rag-engine-prod"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SETTINGS = {"cluster": SRC, "instance": SRC, "region": "us-east-1"}


def seed_aurora_source(moto: MotoServer, name: str) -> dict[str, Any]:
    """An encrypted Aurora PostgreSQL cluster in its own VPC, subnet group, security group and cluster parameter
    group, with a writer (db.r6g.xlarge) and a reader — the settings a cluster PITR must copy."""
    ec2, rds = moto.client("ec2"), moto.client("rds")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")
               ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    group = ec2.create_security_group(GroupName=f"{name}-db", Description="db", VpcId=vpc)["GroupId"]
    rds.create_db_subnet_group(DBSubnetGroupName=f"{name}-subnets", DBSubnetGroupDescription="db",
                               SubnetIds=subnets)
    rds.create_db_cluster_parameter_group(DBClusterParameterGroupName=f"{name}-params",
                                          DBParameterGroupFamily="aurora-postgresql16", Description="db")
    rds.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", EngineVersion="16.1",
                          MasterUsername="app", MasterUserPassword="not-a-secret-1", Port=5433,
                          DBSubnetGroupName=f"{name}-subnets", VpcSecurityGroupIds=[group],
                          DBClusterParameterGroupName=f"{name}-params", BackupRetentionPeriod=7,
                          StorageEncrypted=True, KmsKeyId=KMS)
    for suffix, klass in (("a", "db.r6g.xlarge"), ("b", "db.r6g.large")):
        rds.create_db_instance(DBInstanceIdentifier=f"{name}-{suffix}", DBClusterIdentifier=name,
                               Engine="aurora-postgresql", DBInstanceClass=klass, PromotionTier=1 if suffix == "a"
                               else 2)
    return {"security_group": group, "subnet_group": f"{name}-subnets", "parameter_group": f"{name}-params"}


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


@pytest.fixture
def world(moto: MotoServer) -> dict[str, Any]:
    seeded = seed_aurora_source(moto, SRC)
    time.sleep(1.1)  # moto's window begins at the cluster's creation instant: let one whole second pass
    return seeded


def provider(moto: MotoServer, **settings: Any) -> AuroraProvider:
    return AuroraProvider(environment="prod", resource="database", settings={**SETTINGS, **settings},
                          client=moto.client("rds"))


def finish(p: Provider, op: Operation) -> tuple[OperationStatus, list[str]]:
    seen: list[str] = []
    for _ in range(20):
        status = p.poll(operation=op)
        seen.append(status.status)
        if status.done:
            return status, seen
    raise AssertionError(f"{op.id} never finished; saw {seen}")


def clusters(moto: MotoServer) -> dict[str, dict[str, Any]]:
    return {c["DBClusterIdentifier"]: c for c in moto.client("rds").describe_db_clusters()["DBClusters"]}


def members(moto: MotoServer, cluster: str) -> list[dict[str, Any]]:
    return [i for i in moto.client("rds").describe_db_instances()["DBInstances"]
            if i.get("DBClusterIdentifier") == cluster]


def latest(moto: MotoServer) -> datetime:
    found = moto.client("rds").describe_db_clusters(DBClusterIdentifier=SRC)["DBClusters"][0]
    return found["LatestRestorableTime"].astimezone(UTC).replace(microsecond=0)  # type: ignore[no-any-return]


def test_restore_pitr_plans_checks_restores_adds_a_writer_and_verifies(moto: MotoServer,
                                                                       world: dict[str, Any]) -> None:
    aurora = provider(moto)
    target = f"{SRC}-pitr-r7"
    moment = latest(moto)
    params = {"source": SRC, "target": target, "restore_time": moment}
    plan = aurora.plan(action="database.restore_pitr", params=params)
    assert "problem" not in plan and plan["restore_time"] == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert set(plan["restorable_window"]) == {"earliest", "latest"}
    assert plan["writer"] == f"{target}-writer" and plan["writer_class"] == "db.r6g.xlarge"
    assert plan["engine"] == "aurora-postgresql"
    assert plan["copied_settings"] == {"DBSubnetGroupName": world["subnet_group"],
                                       "VpcSecurityGroupIds": [world["security_group"]],
                                       "DBClusterParameterGroupName": world["parameter_group"], "Port": 5433,
                                       "KmsKeyId": KMS, "EngineMode": "provisioned"}
    assert aurora.preflight(action="database.restore_pitr", params=params) == []
    assert clusters(moto).keys() == {SRC}, "plan and preflight change nothing"

    op = aurora.start(action="database.restore_pitr", params=params, run_id="R-7")
    status, seen = finish(aurora, op)
    assert not status.failed and status.status == "available"
    restored = clusters(moto)[target]
    assert status.outputs == {"instance": target, "endpoint": restored["Endpoint"], "port": 5433,
                              "restore_time": plan["restore_time"], "writer": f"{target}-writer"}
    assert set(ACTIONS["database.restore_pitr"].outputs) <= set(status.outputs)
    assert restored["DBSubnetGroup"] == world["subnet_group"] and restored["KmsKeyId"] == KMS
    assert restored["DBClusterParameterGroup"] == world["parameter_group"]
    assert [g["VpcSecurityGroupId"] for g in restored["VpcSecurityGroups"]] == [world["security_group"]]
    writer = members(moto, target)
    assert [(w["DBInstanceIdentifier"], w["DBInstanceClass"], w["Engine"]) for w in writer] == [
        (f"{target}-writer", "db.r6g.xlarge", "aurora-postgresql")]
    assert aurora.verify(action="database.restore_pitr", params=params, outputs=status.outputs) == []
    assert len(members(moto, SRC)) == 2, "the source is not touched"


def test_writer_class_from_settings_wins_over_the_sources_writer(moto: MotoServer, world: dict[str, Any]) -> None:
    aurora = provider(moto, writer_class="db.r7g.2xlarge")
    target = f"{SRC}-pitr-r3"
    params = {"source": SRC, "target": target, "restore_time": None}
    assert aurora.plan(action="database.restore_pitr", params=params)["writer_class"] == "db.r7g.2xlarge"
    finish(aurora, aurora.start(action="database.restore_pitr", params=params, run_id="R-3"))
    assert [w["DBInstanceClass"] for w in members(moto, target)] == ["db.r7g.2xlarge"]


def test_start_twice_makes_one_cluster_and_one_writer(moto: MotoServer, world: dict[str, Any]) -> None:
    aurora = provider(moto)
    target = f"{SRC}-pitr-r8"
    params = {"source": SRC, "target": target, "restore_time": None}
    first = aurora.start(action="database.restore_pitr", params=params, run_id="R-8")
    second = aurora.start(action="database.restore_pitr", params=params, run_id="R-8")
    assert first == second
    finish(aurora, second)
    third = aurora.start(action="database.restore_pitr", params=params, run_id="R-8")  # after the writer exists
    status, _ = finish(aurora, third)
    assert third.id == first.id and status.outputs["restore_time"] == first.data["restore_time"]
    assert sorted(clusters(moto)) == [SRC, target]
    assert [w["DBInstanceIdentifier"] for w in members(moto, target)] == [f"{target}-writer"]
    assert aurora.preflight(action="database.restore_pitr", params=params) == []  # our own restore: attach
    with pytest.raises(PermanentError, match="was not created by this restore"):
        aurora.start(action="database.restore_pitr", params=params, run_id="R-9")


def test_preflight_refuses_a_target_taken_by_an_unrelated_cluster(moto: MotoServer, world: dict[str, Any]) -> None:
    aurora = provider(moto)
    taken = f"{SRC}-pitr-r1"
    moto.client("rds").create_db_cluster(DBClusterIdentifier=taken, Engine="aurora-postgresql",
                                         MasterUsername="app", MasterUserPassword="not-a-secret-1")
    params = {"source": SRC, "target": taken, "restore_time": None}
    problems = aurora.preflight(action="database.restore_pitr", params=params)
    assert problems == [f"Target cluster `{taken}` already exists and was not created by drbot for this run; "
                        "choose another name (drbot uses `<source>-pitr-<run id>`) or delete it first."]
    with pytest.raises(PermanentError, match="DBClusterAlreadyExistsFault: .* was not created by this restore"):
        aurora.start(action="database.restore_pitr", params=params, run_id="R-1")
    assert members(moto, taken) == [], "no writer was added to someone else's cluster"


def test_missing_source_is_one_sentence_naming_the_setting(moto: MotoServer) -> None:
    aurora = provider(moto)
    params = {"source": "nope", "target": "nope-pitr-r1", "restore_time": None}
    assert aurora.preflight(action="database.restore_pitr", params=params) == [
        "Aurora cluster `nope` does not exist in us-east-1 (DBClusterNotFoundFault); check "
        "environments.prod.database.cluster in drbot.yml or the step's parameters."]
    assert aurora.plan(action="database.restore_pitr", params=params)["problem"].startswith(
        "Aurora cluster `nope` does not exist")
    with pytest.raises(PermanentError, match="Aurora cluster `nope` does not exist"):
        aurora.start(action="database.restore_pitr", params=params, run_id="R-1")


def test_backup_age_reads_the_newest_automated_cluster_snapshot(moto: MotoServer, world: dict[str, Any]) -> None:
    aurora = provider(moto)
    status, _ = finish(aurora, aurora.start(action="database.backup_age", params={"source": SRC}, run_id="R-1"))
    taken = datetime.fromisoformat(status.outputs["newest_backup_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - taken).total_seconds()) < 120 and 0 <= status.outputs["age_seconds"] < 120
    assert status.outputs["backup_id"].startswith(f"rds:{SRC}-")
    assert status.outputs["latest_restorable_time"].endswith("Z")
    assert aurora.preflight(action="database.backup_age", params={"source": "nope"})[0].startswith(
        "Aurora cluster `nope` does not exist")


def test_delete_instance_removes_only_scratch_clusters_with_their_writer(moto: MotoServer,
                                                                         world: dict[str, Any]) -> None:
    aurora = provider(moto)
    for name in (SRC, "billing-db"):
        assert aurora.preflight(action="database.delete_instance", params={"instance": name, "source": SRC})[
            0].startswith(f"Refusing to delete `{name}`")
        with pytest.raises(PermanentError, match="not a scratch cluster"):
            aurora.start(action="database.delete_instance", params={"instance": name}, run_id="R-6")
    scratch = f"{SRC}-pitr-r6"
    finish(aurora, aurora.start(action="database.restore_pitr",
                                params={"source": SRC, "target": scratch, "restore_time": None}, run_id="R-6"))
    params = {"instance": scratch, "source": SRC}
    assert aurora.plan(action="database.delete_instance", params=params)["instances"] == [f"{scratch}-writer"]
    status, _ = finish(aurora, aurora.start(action="database.delete_instance", params=params, run_id="R-6"))
    assert status.outputs["deleted"] is True
    assert sorted(clusters(moto)) == [SRC] and members(moto, scratch) == [] and len(members(moto, SRC)) == 2
    again, _ = finish(aurora, aurora.start(action="database.delete_instance", params=params, run_id="R-6"))
    assert again.outputs["deleted"] is True  # already gone: attach, not fail


def test_probe_names_the_drbot_yml_keys(moto: MotoServer, world: dict[str, Any]) -> None:
    assert provider(moto).probe() == []
    assert provider(moto, cluster="gone").probe()[0] == (
        "Aurora cluster `gone` does not exist in us-east-1 (DBClusterNotFoundFault); check "
        "environments.prod.database.cluster in drbot.yml or the step's parameters.")
    only_cluster = AuroraProvider(environment="prod", resource="database", settings={"cluster": SRC},
                                  client=moto.client("rds"))
    assert only_cluster.probe() == [
        "environments.prod.database.instance is missing; the catalog's runbooks pass "
        f"`{{{{ env.database.instance }}}}` as the cluster to restore, so add `instance: {SRC}` next to "
        f"`cluster: {SRC}`."]
    only_instance = AuroraProvider(environment="prod", resource="database", settings={"instance": SRC},
                                   client=moto.client("rds"))
    assert only_instance.probe() == [] and only_instance.cluster_id == SRC
    none = AuroraProvider(environment="prod", resource="database", settings={}, client=moto.client("rds"))
    assert none.probe()[0].startswith("environments.prod.database.cluster is missing")


def test_wiring_builds_aws_aurora_for_the_database_only() -> None:
    registry = ProviderRegistry(state=MemoryState(), clock=FakeClock(), speed=1.0)
    built = registry(environment="prod", resource="database",
                     config={"provider": "aws-aurora", "cluster": SRC, "instance": SRC, "region": "us-west-2"})
    assert isinstance(built, AuroraProvider) and built.kind == "aws-aurora"
    assert built.actions() == {"restore_pitr", "delete_instance", "backup_age", "integrity_check"}
    with pytest.raises(ConfigError, match="'aws-aurora' serves `database`, not `dns`"):
        registry(environment="prod", resource="dns", config={"provider": "aws-aurora"})
    with pytest.raises(ConfigError, match="available: sandbox, aws-rds, aws-aurora"):
        registry(environment="staging", resource="database", config={"provider": "aurora"})


# ---- contract: the same behaviour from the sandbox twin

RUN = "r1"  # the sandbox matches the run id verbatim, the real providers its short id: this one is both


class Twin:
    def __init__(self, moto: MotoServer | None) -> None:
        self.moto = moto
        self.state, self.clock = MemoryState(), FakeClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))

    def provider(self) -> Provider:
        if self.moto is None:
            return build_sandbox_provider(environment="prod", resource="database",
                                          settings={"instance": SRC, "region": "us-east-1"}, state=self.state,
                                          clock=self.clock, speed=1e5)
        return provider(self.moto)

    def restore_time(self) -> datetime:
        return self.clock.now() - timedelta(hours=2) if self.moto is None else latest(self.moto)

    def finish(self, p: Provider, op: Operation) -> OperationStatus:
        for _ in range(200):
            status = p.poll(operation=op)
            if status.done:
                return status
            self.clock.advance(30)
        raise AssertionError(f"{op.id} never finished")


@pytest.fixture(params=["aws-aurora", "sandbox"])
def twin(request: pytest.FixtureRequest, server: MotoServer) -> Twin:
    server.reset()
    if request.param == "sandbox":
        return Twin(None)
    seed_aurora_source(server, SRC)
    time.sleep(1.1)
    return Twin(server)


def test_contract_restore_pitr(twin: Twin) -> None:
    db = twin.provider()
    params = {"source": SRC, "target": f"{SRC}-pitr-{RUN}", "restore_time": twin.restore_time()}
    plan = db.plan(action="database.restore_pitr", params=params)
    assert {"source", "target", "restorable_window", "restore_time"} <= set(plan) and "problem" not in plan
    assert db.preflight(action="database.restore_pitr", params=params) == []
    first = db.start(action="database.restore_pitr", params=params, run_id=RUN)
    again = db.start(action="database.restore_pitr", params=params, run_id=RUN)
    assert again.id == first.id
    outputs = twin.finish(db, again).outputs
    assert ACTIONS["database.restore_pitr"].outputs <= set(outputs)
    assert outputs["instance"] == f"{SRC}-pitr-{RUN}" and outputs["restore_time"] == plan["restore_time"]


def test_contract_restore_pitr_refusals(twin: Twin) -> None:
    db = twin.provider()
    missing = db.preflight(action="database.restore_pitr",
                           params={"source": "nope", "target": "nope-pitr-r1", "restore_time": None})
    assert len(missing) == 1 and "`nope` does not exist" in missing[0] and "environments.prod.database" in missing[0]
    late = db.preflight(action="database.restore_pitr", params={
        "source": SRC, "target": f"{SRC}-pitr-r2", "restore_time": twin.restore_time() + timedelta(days=3)})
    assert len(late) == 1 and "outside the restorable window" in late[0] and "pick a time between" in late[0]


def test_contract_backup_age(twin: Twin) -> None:
    db = twin.provider()
    op = db.start(action="database.backup_age", params={"source": SRC}, run_id=RUN)
    outputs = twin.finish(db, op).outputs
    assert ACTIONS["database.backup_age"].outputs <= set(outputs) and outputs["age_seconds"] >= 0


# ---- the catalog's database-pitr through the engine, unchanged, on aws-aurora + kubernetes


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_database_pitr_end_to_end_on_aurora_and_kubernetes(harness: Callable[..., Harness], pg_server: PgServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore (cluster + writer), cut the Deployment over to the cluster endpoint, count rows read-only on a
    PostgreSQL standing in for the restored writer (integrity.host/port, as through a tunnel), report."""
    restored_db = make_restored_db(pg_server)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "DRBOT_TEST_KUBE_TOKEN": TOKEN,
                       URL_ENV: restored_db.readonly_url()}.items():
        monkeypatch.setenv(key, value)
    with moto_server() as moto, FakeKube() as kube:
        seed_aurora_source(moto, SRC)
        kube.add_deployment("rag-engine", "rag-engine-api", replicas=2)
        time.sleep(2.1)  # a whole second inside moto's window, which starts at the cluster's creation
        wanted = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def real(data: dict[str, Any]) -> None:
            prod = data["environments"]["prod"]
            prod["database"] = {"provider": "aws-aurora", "cluster": SRC, "instance": SRC, "region": "us-east-1",
                                "endpoint_url": moto.url, "integrity": restored_db.integrity()}
            prod["kubernetes"] = {"provider": "kubernetes", "api_url": kube.url, "token_env": "DRBOT_TEST_KUBE_TOKEN",
                                  "context": "prod", "namespace": "rag-engine", "deployment": "rag-engine-api",
                                  "velero_namespace": "velero"}

        h = harness(config=sandbox_config(real=real))
        h.say(f"/dr restore database prod {wanted}")
        plan = h.recorder.wait_for("run.planned")
        assert wanted in plan.text or wanted in str(plan.data)
        h.recorder.wait_for("approval.requested")
        assert h.press("approval.requested", "Approve", actor="bob").public
        h.settle()
        run = h.engine.store.get_run("R-1")
        assert run is not None and run.status.value == "succeeded", [e.text for e in h.recorder.events][-6:]

        target = f"{SRC}-pitr-r1"
        restored = clusters(moto)[target]
        assert [w["DBInstanceIdentifier"] for w in members(moto, target)] == [f"{target}-writer"]
        deployment = kube.get("deployments", "rag-engine", "rag-engine-api")
        assert deployment is not None
        env = {e["name"]: e.get("value") for c in deployment["spec"]["template"]["spec"]["containers"]
               for e in c.get("env", [])}
        assert env["DB_HOST"] == restored["Endpoint"]
        steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
        assert steps["integrity"].status.value == "succeeded" and steps["integrity"].outputs["count"] == 7
        record = h.engine.record("INC-1")
        assert record.restore_point is not None and record.restore_point.strftime("%Y-%m-%dT%H:%M:%SZ") == wanted
