"""Drills of the failover runbooks: `dns.check_target` (Route53 against moto and botocore's Stubber, a TCP connect to
a socket this test opens, the sandbox twin), then `/dr drill dns-failover` (checks the DR target, never moves the
record), aws-rds `create_replica` against moto (a cross-region `-drill-` replica, promoted and deleted),
`/dr drill replica-promotion` (never promotes the live replica: creates one fresh replica, promotes that and deletes
it) and `/dr drill region-failover` (refused, naming the runbooks to drill instead),
through the engine harness on the sandbox like tests/test_drills.py."""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.config import SANDBOX_CONFIG
from integrations.aws import AwsRds, AwsRoute53
from integrations.sandbox import build_sandbox_provider
from integrations.sandbox.dns import DNS_KIND
from integrations.sandbox.records import OPS_KIND
from runbooks.catalog import load_catalog
from runbooks.drills import drill_variant
from runbooks.errors import PermanentError
from runbooks.models import EventKind, IncidentStatus, RunStatus
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles.moto_server import DUMMY_CREDENTIALS, MotoServer, moto_server, seed_rds_source, seed_zone
from tests.engine_harness import Harness, harness_fixture
from tests.test_sandbox import FakeClock, MemoryState

harness = pytest.fixture(harness_fixture)

RECORD, PRIMARY, DR = "api.rag-engine.com", "198.51.100.10", "203.0.113.10"
STAGING_RECORD, STAGING_DR = "api.staging.rag-engine.com", "203.0.113.20"
LIVE, REPLICA = "rag-engine-staging", "rag-engine-staging-replica"
DRILL_INSTANCE = "rag-engine-staging-drill-r1"
REFUSAL = ("region-failover cannot be drilled safely: it promotes the DR replica, scales the DR cluster and moves "
           "DNS, each a live change with no isolated stand-in; drill its parts instead: replica-promotion and "
           "dns-failover.")


def finish(provider: Provider, op: Operation) -> OperationStatus:
    status = provider.poll(operation=op)
    assert status.done, status
    return status


def check(provider: Provider, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Run dns.check_target as the engine does: pre-flight, start (never raising for an unhealthy target), poll,
    verify. Returns the outputs and what verification says."""
    assert provider.preflight(action="dns.check_target", params=params) == []
    assert isinstance(provider.plan(action="dns.check_target", params=params), dict)
    status = finish(provider, provider.start(action="dns.check_target", params=params, run_id="R-1"))
    assert not status.failed and set(status.outputs) >= {"healthy", "detail"}
    return status.outputs, provider.verify(action="dns.check_target", params=params, outputs=status.outputs)


# --------------------------------------------------------------------------------------------- a TCP target


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel completes them from the backlog)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


@pytest.fixture
def closed() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------------------------- route53


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with moto_server() as moto:
        yield moto


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    server.reset()
    return server


def route53(client: Any, zone: str = "Z0123456789ABC", **settings: Any) -> AwsRoute53:
    return AwsRoute53(environment="prod", resource="dns", client=client, state=MemoryState(),
                      settings={"zone_id": zone, "record": RECORD, "type": "A", "dr_target": DR, **settings})


def health_check(moto: MotoServer) -> str:
    made = moto.client("route53").create_health_check(CallerReference="drbot-test", HealthCheckConfig={
        "IPAddress": DR, "Port": 443, "Type": "HTTPS", "ResourcePath": "/healthz"})
    return str(made["HealthCheck"]["Id"])


def rrsets(moto: MotoServer, zone: str) -> Any:
    return moto.client("route53").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]


def test_route53_check_target_reads_the_health_check_and_leaves_the_record_alone(moto: MotoServer) -> None:
    zone = seed_zone(moto, domain="rag-engine.com", record=RECORD, value=PRIMARY)
    before = rrsets(moto, zone)
    check_id = health_check(moto)
    provider = route53(moto.client("route53"), zone)
    plan = provider.plan(action="dns.check_target", params={"target": DR, "health_check_id": check_id})
    assert plan["target"] == DR and check_id in plan["method"]
    outputs, problems = check(provider, {"target": DR, "health_check_id": check_id})
    assert outputs["healthy"] is True and problems == []
    assert outputs["detail"] == f"The DR target {DR} passes Route53 health check `{check_id}`: 1 of 1 checkers " \
                                f"report success."
    # the resource's dr_health_check_id is used when the step gives none
    configured = route53(moto.client("route53"), zone, dr_health_check_id=check_id)
    assert check(configured, {"target": DR})[0]["healthy"] is True
    assert rrsets(moto, zone) == before, "the record is not changed"


def test_route53_check_target_preflight_names_a_missing_health_check(moto: MotoServer) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    provider = route53(moto.client("route53"), dr_health_check_id=missing)
    assert provider.preflight(action="dns.check_target", params={"target": DR}) == [
        f"Route53 health check `{missing}` does not exist; check environments.prod.dns.dr_health_check_id (the id "
        f"of the DR target's health check, from `aws route53 list-health-checks`)."]
    assert "port" in provider.preflight(action="dns.check_target", params={"target": DR, "port": 70000})[0]


def stubbed_route53() -> tuple[AwsRoute53, Any]:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("route53", region_name="us-east-1", **DUMMY_CREDENTIALS)
    stubber = Stubber(client)
    stubber.activate()
    return route53(client), stubber


def observation(status: str) -> dict[str, Any]:
    return {"Region": "us-east-1", "IPAddress": "15.177.2.10",
            "StatusReport": {"Status": status, "CheckedTime": datetime(2026, 12, 3, 20, 0, tzinfo=UTC)}}


def test_route53_check_target_is_unhealthy_when_the_checkers_report_failure() -> None:
    provider, stubber = stubbed_route53()
    failing = "Failure: Connection timed out. The endpoint or the internet connection is down."
    stubber.add_response("get_health_check", {"HealthCheck": {
        "Id": "hc-dr", "CallerReference": "x", "HealthCheckVersion": 1,
        "HealthCheckConfig": {"IPAddress": DR, "Port": 443, "Type": "HTTPS"}}}, {"HealthCheckId": "hc-dr"})
    stubber.add_response("get_health_check_status", {"HealthCheckObservations": [
        observation(failing), observation(failing), observation(failing), observation(failing),
        observation(failing), observation("Success: HTTP Status Code 200, OK")]}, {"HealthCheckId": "hc-dr"})
    outputs, problems = check(provider, {"target": DR, "health_check_id": "hc-dr"})
    stubber.assert_no_pending_responses()
    assert outputs["healthy"] is False
    assert problems == [f"The DR target {DR} fails Route53 health check `hc-dr`: 1 of 6 checkers report success "
                        f"(a checker says: Failure: Connection timed out. The endpoint or the internet connection "
                        f"is down)."]
    # more than 18% of the checkers reporting success is healthy, as Route53 counts it
    stubber.add_response("get_health_check_status", {"HealthCheckObservations": [
        observation(failing), observation(failing), observation(failing), observation("Success: HTTP 200"),
        observation("Success: HTTP 200")]}, {"HealthCheckId": "hc-dr"})
    status = finish(provider, provider.start(action="dns.check_target",
                                             params={"target": DR, "health_check_id": "hc-dr"}, run_id="R-1"))
    assert status.outputs["healthy"] is True


def test_route53_check_target_connects_over_tcp_without_any_route53_call(listening: int, closed: int) -> None:
    provider, stubber = stubbed_route53()  # no response queued: any Route53 call would fail the test
    outputs, problems = check(provider, {"target": "127.0.0.1", "port": listening})
    assert outputs == {"healthy": True,
                       "detail": f"The DR target 127.0.0.1 accepts TCP connections on port {listening}."}
    assert problems == []
    outputs, problems = check(provider, {"target": "127.0.0.1", "port": closed})
    assert outputs["healthy"] is False
    assert problems == [outputs["detail"]]
    assert problems[0].startswith(f"The DR target 127.0.0.1 does not answer on TCP port {closed}: the connection "
                                  f"failed (")
    plan = provider.plan(action="dns.check_target", params={"target": DR})
    assert plan["port"] == 443 and plan["method"] == f"TCP connect to {DR}:443 within 3 s"
    stubber.assert_no_pending_responses()


# --------------------------------------------------------------------------------------------- the sandbox twin


def sandbox_dns(**settings: Any) -> Provider:
    return build_sandbox_provider(environment="prod", resource="dns", state=MemoryState(), clock=FakeClock(),
                                  speed=1e5, settings={"zone_id": "Z123", "record": RECORD, "type": "A",
                                                       "dr_target": DR, **settings})


def test_sandbox_check_target_is_healthy_unless_listed_in_unhealthy_targets() -> None:
    outputs, problems = check(sandbox_dns(), {"target": DR})
    assert outputs == {"healthy": True, "detail": f"The DR target {DR} accepts TCP connections on port 443 (sandbox)."}
    assert problems == []
    outputs, problems = check(sandbox_dns(unhealthy_targets=[DR]), {"target": DR, "port": 8443})
    assert outputs["healthy"] is False
    assert problems == [f"The DR target {DR} does not answer on TCP port 8443: the connection failed (the sandbox "
                        f"lists it in environments.prod.dns.unhealthy_targets)."]


# --------------------------------------------------------------------------------------------- aws-rds create_replica

SRC, DR_REGION = "rag-engine-prod", "us-west-2"


def rds_provider(moto: MotoServer, clock: FakeClock) -> AwsRds:
    settings = {"instance": SRC, "region": "us-east-1",
                "replica": {"instance": f"{SRC}-replica", "region": DR_REGION, "promote_settle_seconds": 300}}
    return AwsRds(environment="prod", resource="database", settings=settings, client=moto.client("rds"),
                  replica_client=moto.client("rds", region=DR_REGION),
                  cloudwatch=moto.client("cloudwatch", region=DR_REGION), state=MemoryState(), clock=clock)


def test_rds_create_replica_makes_a_cross_region_drill_replica_that_is_promoted_and_deleted(
        moto: MotoServer) -> None:
    seed_rds_source(moto, SRC)
    # moto copies the primary's parameter group name onto the replica, so that group must exist in the DR region
    moto.client("rds", region=DR_REGION).create_db_parameter_group(
        DBParameterGroupName=f"{SRC}-params", DBParameterGroupFamily="postgres16", Description="db")
    clock = FakeClock()
    rds = rds_provider(moto, clock)
    target = f"{SRC}-drill-r1"
    params = {"source": SRC, "target": target}
    assert "create_replica" in rds.actions()
    assert rds.plan(action="database.create_replica", params=params)["region"] == DR_REGION
    assert rds.preflight(action="database.create_replica", params=params) == []
    op = rds.start(action="database.create_replica", params=params, run_id="R-1")
    assert rds.start(action="database.create_replica", params=params, run_id="R-1") == op, "attaches"
    made = finish(rds, op)
    assert made.outputs["instance"] == target and made.outputs["region"] == DR_REGION
    assert made.outputs["replica_lag_seconds"] == 0  # moto has no ReplicaLag metric
    dr = moto.client("rds", region=DR_REGION)
    replica = dr.describe_db_instances(DBInstanceIdentifier=target)["DBInstances"][0]
    assert replica["ReadReplicaSourceDBInstanceIdentifier"].endswith(f":db:{SRC}")
    with pytest.raises(PermanentError, match="DBInstanceAlreadyExists"):
        rds.start(action="database.create_replica", params=params, run_id="R-2")

    assert rds.preflight(action="database.promote_replica", params={"replica": target}) == []
    promote = rds.start(action="database.promote_replica", params={"replica": target}, run_id="R-1")
    assert not rds.poll(operation=promote).done  # moto never clears the source: drbot waits the settle time
    clock.advance(400)
    assert finish(rds, promote).outputs["instance"] == target

    delete = {"instance": target, "source": SRC}
    assert rds.preflight(action="database.delete_instance", params=delete) == []
    assert finish(rds, rds.start(action="database.delete_instance", params=delete, run_id="R-1")).outputs[
        "deleted"] is True
    assert [i["DBInstanceIdentifier"] for i in dr.describe_db_instances()["DBInstances"]] == []
    assert [i["DBInstanceIdentifier"] for i in moto.client("rds").describe_db_instances()["DBInstances"]] == [SRC]


def test_rds_create_replica_refuses_a_target_that_is_not_a_drill_or_not_drbots(moto: MotoServer) -> None:
    seed_rds_source(moto, SRC)
    rds = rds_provider(moto, FakeClock())
    live = {"source": SRC, "target": f"{SRC}-replica"}
    assert "only makes a drill's stand-in replica" in rds.preflight(action="database.create_replica", params=live)[0]
    with pytest.raises(PermanentError, match="only makes a drill's stand-in replica"):
        rds.start(action="database.create_replica", params=live, run_id="R-1")
    dr = moto.client("rds", region=DR_REGION)
    dr.create_db_instance(DBInstanceIdentifier=f"{SRC}-drill-r1", Engine="postgres", DBInstanceClass="db.t3.micro",
                          MasterUsername="app", MasterUserPassword="not-a-secret-1", AllocatedStorage=20)
    theirs = {"source": SRC, "target": f"{SRC}-drill-r1"}
    assert "not created by drbot" in rds.preflight(action="database.create_replica", params=theirs)[0]
    with pytest.raises(PermanentError, match="DBInstanceAlreadyExists"):
        rds.start(action="database.create_replica", params=theirs, run_id="R-1")
    assert [i["DBInstanceIdentifier"] for i in dr.describe_db_instances()["DBInstances"]] == [f"{SRC}-drill-r1"]


# --------------------------------------------------------------------------------------------- drills


def config(**dns: Any) -> dict[str, Any]:
    data = copy.deepcopy(SANDBOX_CONFIG)
    data["environments"]["staging"]["dns"].update(dns)
    return data


def materialise(h: Harness) -> None:
    """The sandbox makes its world on first sight: look at the live database, replica and record (read-only)."""
    resources = h.engine.settings.environment("staging").resources

    def provider(name: str) -> Any:
        return h.engine.providers(environment="staging", resource=name, config=resources[name].settings()
                                  | {"provider": resources[name].provider})

    provider("database").plan(action="backup_age", params={"source": LIVE})
    provider("dns").plan(action="health_check", params={"record": STAGING_RECORD})


def instances(h: Harness) -> dict[str, dict[str, Any]]:
    return h.engine.store.list_state(kind="sandbox.rds")


def live(h: Harness) -> dict[str, Any]:
    """What a drill must never change: DNS and the live database and replica."""
    return {"dns": h.engine.store.list_state(kind=DNS_KIND),
            "database": {k: v for k, v in instances(h).items() if "-drill-" not in k}}


def operations(h: Harness, action: str) -> list[dict[str, Any]]:
    return [op for op in h.engine.store.list_state(kind=OPS_KIND).values() if op["action"] == action]


def test_a_dns_failover_drill_checks_the_dr_target_and_never_moves_the_record(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    materialise(h)
    before = live(h)
    assert before["dns"][STAGING_RECORD]["value"] != STAGING_DR
    reply = h.say("/dr drill dns-failover staging")
    assert "Drill INC-1 opened" in reply.text and "DRILL — no live resource is changed" in reply.text
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED
    plan = h.recorder.last(EventKind.RUN_PLANNED).data["plan"]
    assert [(s["id"], s["action"], s["guarded"]) for s in plan["steps"]] == [
        ("switch", "dns.check_target", False), ("notify", "builtin.notify", False)]
    assert plan["steps"][0]["params"] == {"target": STAGING_DR} and plan["steps"][1]["after"] == ["switch"]
    assert plan["cleanup"] == [] and plan["creates"] == []
    steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
    assert steps["switch"].outputs["healthy"] is True and "health" not in steps
    notice = h.recorder.last(EventKind.RUN_NOTICE).text
    assert notice.startswith(f"Drill of dns-failover: The DR target {STAGING_DR} accepts TCP connections")
    assert f"{STAGING_RECORD} was not moved" in notice
    assert live(h) == before, "the record still points where it did"
    assert operations(h, "switch") == []
    kinds = h.recorder.kinds()
    assert EventKind.INCIDENT_RESTORED not in kinds and EventKind.RUN_CLEANUP not in kinds
    assert h.recorder.last(EventKind.INCIDENT_RESOLVED).text == "Drill over: R-1 succeeded."


def test_a_dns_failover_drill_whose_dr_target_does_not_answer_fails_at_the_check(
        harness: Callable[..., Harness]) -> None:
    h = harness(config=config(unhealthy_targets=[STAGING_DR]))
    materialise(h)
    before = live(h)
    h.say("/dr drill dns-failover staging")
    paused = h.recorder.wait_for(EventKind.RUN_PAUSED, timeout=60)
    assert paused.data["step_id"] == "switch"
    assert f"The DR target {STAGING_DR} does not answer on TCP port 443" in paused.text
    h.settle()
    h.press(EventKind.RUN_PAUSED, "Abort", actor="bob")
    h.recorder.wait_for(EventKind.INCIDENT_RESOLVED, timeout=60)
    h.settle()
    assert h.engine.store.get_run("R-1").status is RunStatus.FAILED  # type: ignore[union-attr]
    assert EventKind.RUN_NOTICE not in h.recorder.kinds(), "the thread is not told the drill passed"
    assert live(h) == before and operations(h, "switch") == []
    assert h.recorder.last(EventKind.INCIDENT_RESOLVED).text == "Drill over: R-1 failed."


def test_a_replica_promotion_drill_promotes_a_fresh_replica_and_never_the_live_one(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    materialise(h)
    before = live(h)
    assert REPLICA in before["database"] and LIVE in before["database"]
    reply = h.say("/dr drill replica-promotion staging")
    assert "Drill INC-1 opened" in reply.text
    h.settle()
    run = h.engine.store.get_run("R-1")
    assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED
    planned = h.recorder.last(EventKind.RUN_PLANNED)
    assert f"Creates: database read replica {DRILL_INSTANCE}" in planned.text
    plan = planned.data["plan"]
    assert [(s["id"], s["action"]) for s in plan["steps"]] == [
        ("check_replica", "database.check_replica"), ("promote", "database.create_replica"),
        ("report", "builtin.report"), ("promote_drill_replica", "database.promote_replica")]
    assert plan["steps"][1]["params"] == {"source": LIVE, "target": DRILL_INSTANCE}
    assert plan["steps"][2]["after"] == ["promote_drill_replica"] and plan["steps"][3]["after"] == ["promote"]
    assert [(s["id"], s["params"]["instance"]) for s in plan["cleanup"]] == [("delete_drill_instance", DRILL_INSTANCE)]

    assert [name for name in instances(h) if "-drill-" in name] == [DRILL_INSTANCE], "exactly one drill instance"
    drill = instances(h)[DRILL_INSTANCE]
    assert drill["promoted_from"] == LIVE and drill["region"] == "us-east-1", "a replica of the primary, DR region"
    assert drill.get("deletion"), "and it is deleted"
    created = operations(h, "create_replica")
    assert [op["target"] for op in created] == [DRILL_INSTANCE]
    assert [op["target"] for op in operations(h, "promote_replica")] == [DRILL_INSTANCE], "never the live replica"
    assert live(h) == before, "the live database and its replica are untouched"
    assert instances(h)[REPLICA]["role"] == "replica" and instances(h)[REPLICA]["source"] == LIVE
    steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
    lag = steps["check_replica"].outputs["replica_lag_seconds"]
    assert steps["promote"].outputs["instance"] == DRILL_INSTANCE
    promoted = steps["promote_drill_replica"].outputs
    assert promoted["instance"] == DRILL_INSTANCE and isinstance(promoted["replica_lag_seconds"], int)
    report = h.recorder.last(EventKind.RUN_REPORT).text
    assert report.startswith(f"Drill: the live replica {REPLICA} was checked (replica lag {lag} s) and not promoted")
    assert f"promoted to the standalone primary {DRILL_INSTANCE}" in report and "Nothing live was changed." in report
    assert f"(replica lag at promotion: {promoted['replica_lag_seconds']} s)" in report
    cleanup = h.recorder.wait_for(EventKind.RUN_CLEANUP, timeout=60)
    assert cleanup.text.startswith("Clean-up of R-1: everything it made is gone.")
    assert {r["name"] for r in cleanup.data["resources"]} == {DRILL_INSTANCE} and cleanup.data["left"] == 0
    kinds = h.recorder.kinds()
    assert EventKind.INCIDENT_RESTORED not in kinds
    rpo = h.recorder.last(EventKind.RPO_REPLICA_LAG).data["replica_lag_seconds"]
    assert rpo == promoted["replica_lag_seconds"], "the drill's RPO is its own replica's lag at promotion"
    incident = h.engine.store.get_incident("INC-1")
    assert incident is not None and incident.drill and incident.status is IncidentStatus.RESOLVED


def test_a_region_failover_drill_is_refused_with_the_parts_to_drill_instead(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    resources = h.engine.settings.environment("prod").resources
    h.engine.providers(environment="prod", resource="dns", config=resources["dns"].settings() | {
        "provider": "sandbox"}).plan(action="health_check", params={"record": RECORD})
    before = {kind: h.engine.store.list_state(kind=kind) for kind in (DNS_KIND, "sandbox.rds", "sandbox.k8s")}
    assert before[DNS_KIND]
    reply = h.say("/dr drill region-failover prod")
    assert REFUSAL in reply.text and not reply.public
    assert h.engine.store.list_incidents() == [] and h.engine.store.get_run("R-1") is None
    assert {kind: h.engine.store.list_state(kind=kind) for kind in before} == before
    assert h.engine.store.list_state(kind=OPS_KIND) == {}


def test_the_failover_drills_change_only_what_they_create() -> None:
    catalog = load_catalog()
    dns = drill_variant(catalog.get("dns-failover"))
    assert [(s.id, s.action, s.after) for s in dns.steps] == [("switch", "dns.check_target", ()),
                                                               ("notify", "builtin.notify", ("switch",))]
    promotion = drill_variant(catalog.get("replica-promotion"))
    promote = next(s for s in promotion.steps if s.id == "promote")
    assert promote.action == "database.create_replica" and promote.creates is not None and promote.guarded
    assert promote.params["target"] == "{{ env.database.instance }}-drill-{{ run.short }}"
    extra = next(s for s in promotion.steps if s.id == "promote_drill_replica")
    assert extra.action == "database.promote_replica" and extra.guarded and extra.after == ("promote",)
    assert extra.records == {"replica_lag_seconds": "replica_lag_seconds"}, "the drill records its promotion's lag"
    assert next(s for s in promotion.steps if s.id == "report").after == ("promote_drill_replica",)
    assert [c.removes for c in promotion.cleanup] == [("promote", "promote_drill_replica")]
    live_promote = next(s for s in catalog.get("replica-promotion").steps if s.id == "promote")
    assert live_promote.records == {"replica_lag_seconds": "replica_lag_seconds"}, "a real promotion keeps its RPO"
