"""Drills (issue 12) beyond the in-process sandbox of test_drills.py: a drill of database-pitr on AWS (moto server,
the fake kube-apiserver, the real integrity check against the session's PostgreSQL) that changes nothing live and
deletes the one scratch instance it made; and `drbot shell` killed with SIGKILL in the middle of a drill — during
the restore, and during the clean-up itself — then started again on the same SQLite file, after which the drill
still ends with its scratch instance deleted, its ledger entry gone and its clean-up report told exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from integrations.sandbox.database import create_count
from integrations.sandbox.records import OPS_KIND, TARGETS_KIND
from runbooks.drills import LEDGER
from runbooks.models import Event, EventKind, IncidentStatus, RunStatus, StepStatus
from runbooks.store import Store
from tests.doubles.fake_kube import TOKEN, FakeKube
from tests.doubles.moto_server import MotoServer, moto_server, seed_rds_source, seed_zone
from tests.engine_harness import Harness, harness_fixture, sandbox_config
from tests.pg import PgServer
from tests.shellrun import ShellProcess
from tests.test_sql_integrity import ROWS, URL_ENV, RestoredDb, make_restored_db

pytestmark = pytest.mark.slow  # the AWS test is also marked postgres: it counts rows in the session PostgreSQL

# ------------------------------------------------------------------------------------------- AWS (moto server)

SOURCE = "prod-pg"
AWS_DRILL = "prod-pg-drill-r1"
NAMESPACE, DEPLOYMENT = "rag-engine", "rag-engine-api"
DOMAIN, RECORD, LIVE_IP = "rag-engine.com", "api.rag-engine.com", "198.51.100.7"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    yield from harness_fixture(tmp_path)


@pytest.fixture
def restored(pg_server: PgServer) -> RestoredDb:
    return make_restored_db(pg_server)


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    monkeypatch.setenv("DRBOT_TEST_KUBE_TOKEN", TOKEN)
    with FakeKube() as fake:
        fake.add_deployment(NAMESPACE, DEPLOYMENT, replicas=2,
                            containers={DEPLOYMENT: {"DB_HOST": "prod-pg.internal", "LOG_LEVEL": "info"}})
        yield fake


def aws_config(*, moto: MotoServer, zone: str, kube: FakeKube, db: RestoredDb) -> dict[str, Any]:
    """The sandbox config with prod's database on RDS (moto), its DNS on Route53 (moto) and its Kubernetes on the
    fake kube-apiserver. database-pitr never names the DNS resource, not even in its drill; it is wired to the real
    Route53 provider anyway so that "nothing touched Route53" is checked against a real zone, not vacuously."""

    def real(data: dict[str, Any]) -> None:
        prod = data["environments"]["prod"]
        prod["database"] = {"provider": "aws-rds", "instance": SOURCE, "region": "us-east-1",
                            "endpoint_url": moto.url, "integrity": db.integrity()}
        prod["dns"] = {"provider": "route53", "zone_id": zone, "record": RECORD, "type": "A",
                       "dr_target": "203.0.113.10", "endpoint_url": moto.url}
        prod["kubernetes"] = {"provider": "kubernetes", "api_url": kube.url, "token_env": "DRBOT_TEST_KUBE_TOKEN",
                              "context": "prod", "namespace": NAMESPACE, "deployment": DEPLOYMENT,
                              "velero_namespace": "velero"}
        prod["settings"]["integrity_query"] = "SELECT count(*) FROM documents"

    return sandbox_config(real=real)


class InstanceWatcher:
    """Lists moto's RDS instances every few milliseconds while a run goes on: every identifier ever seen."""

    def __init__(self, moto: MotoServer) -> None:
        self.rds = moto.client("rds")
        self.seen: set[str] = set()
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for instance in self.rds.describe_db_instances()["DBInstances"]:
                self.seen.add(str(instance["DBInstanceIdentifier"]))
            self.looks += 1
            self._stop.wait(0.02)

    def __enter__(self) -> InstanceWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def what_must_not_change(instance: dict[str, Any]) -> dict[str, Any]:
    """The source instance's identity, state and settings (not moto's moving LatestRestorableTime)."""
    return {key: instance.get(key) for key in (
        "DBInstanceIdentifier", "DBInstanceStatus", "Endpoint", "DBInstanceClass", "Engine", "MultiAZ",
        "AllocatedStorage", "DBSubnetGroup", "VpcSecurityGroups", "DBParameterGroups", "BackupRetentionPeriod",
        "InstanceCreateTime", "DbiResourceId", "DBInstanceArn")}


@pytest.mark.postgres
def test_a_drill_of_database_pitr_on_aws_makes_one_scratch_instance_changes_nothing_live_and_deletes_it(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, restored: RestoredDb,
        kube: FakeKube) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", URL_ENV: restored.readonly_url()}.items():
        monkeypatch.setenv(key, value)
    with moto_server() as moto:
        seed_rds_source(moto, SOURCE)
        zone = seed_zone(moto, domain=DOMAIN, record=RECORD, value=LIVE_IP)
        rds, route53 = moto.client("rds"), moto.client("route53")
        source_before = what_must_not_change(rds.describe_db_instances(DBInstanceIdentifier=SOURCE)
                                             ["DBInstances"][0])
        assert source_before["DBInstanceStatus"] == "available"
        records_before = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        deployment_before = kube.get("deployments", NAMESPACE, DEPLOYMENT)
        assert deployment_before is not None

        h = harness(config=aws_config(moto=moto, zone=zone, kube=kube, db=restored))
        with InstanceWatcher(moto) as watcher:
            reply = h.say("/dr drill database-pitr prod time=latest", actor="alice")
            assert "Drill INC-1 opened" in reply.text and "DRILL — no live resource is changed" in reply.text
            # No `drills.approvals` in the config: a drill follows the environment's rule (prod: one of bob, carol).
            requested = h.recorder.wait_for(EventKind.APPROVAL_REQUESTED, timeout=60)
            assert requested.run_id == "R-1"
            assert h.press(EventKind.APPROVAL_REQUESTED, "Approve", actor="bob").public
            h.settle()
        tail = [e.text for e in h.recorder.events][-8:]

        # The run and its incident.
        run = h.engine.store.get_run("R-1")
        assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED, tail
        incident = h.engine.store.get_incident("INC-1")
        assert incident is not None and incident.drill and incident.severity == "drill"
        assert incident.status is IncidentStatus.RESOLVED
        assert h.recorder.last(EventKind.INCIDENT_RESOLVED).text == "Drill over: R-1 succeeded."
        assert EventKind.INCIDENT_RESTORED not in h.recorder.kinds(), "a drill never marks anything restored"
        steps = {s.step_id: s for s in h.engine.store.steps_for(run_id="R-1")}
        assert all(s.status is StepStatus.SUCCEEDED for s in steps.values()), steps
        assert steps["restore"].outputs["instance"] == AWS_DRILL
        assert steps["integrity"].outputs["count"] == ROWS and steps["integrity"].outputs["instance"] == AWS_DRILL
        assert steps["delete_drill_instance"].outputs.get("deleted") is True

        # Exactly one instance was made, `<source>-drill-r1`: the provider operations' targets and the clean-up
        # report say so, and so does everything moto listed while the run went on.
        operations = [e.data["operation"] for e in h.recorder.events if e.kind == EventKind.STEP_OPERATION]
        by_action = {(op["action"], op["target"]) for op in operations if op["provider"] == "aws-rds"}
        assert by_action == {("restore_pitr", AWS_DRILL), ("integrity_check", AWS_DRILL),
                             ("delete_instance", AWS_DRILL)}, operations
        report = h.recorder.last(EventKind.RUN_CLEANUP)
        assert [e.kind for e in h.recorder.events].count(EventKind.RUN_CLEANUP) == 1
        assert report.text.startswith("Clean-up of R-1: everything it made is gone.")
        assert f"`{AWS_DRILL}` (aws-rds): deleted" in report.text
        assert [(r["name"], r["provider"], r["gone_at"] is not None) for r in report.data["resources"]] == [
            (AWS_DRILL, "aws-rds", True)] and report.data["left"] == 0
        assert watcher.looks > 0 and watcher.seen - {SOURCE} <= {AWS_DRILL}, watcher.seen
        print(f"moto listed its instances {watcher.looks} times during the drill and saw {sorted(watcher.seen)}")

        # ... and it is gone; the source is there, available and unchanged.
        with pytest.raises(ClientError) as missing:
            rds.describe_db_instances(DBInstanceIdentifier=AWS_DRILL)
        assert missing.value.response["Error"]["Code"] == "DBInstanceNotFound"
        assert [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]] == [SOURCE]
        source_after = what_must_not_change(rds.describe_db_instances(DBInstanceIdentifier=SOURCE)
                                            ["DBInstances"][0])
        assert source_after == source_before

        # Kubernetes was only read: no PATCH, PUT or POST reached the apiserver, and the deployment is as it was.
        methods = Counter(r.method for r in kube.requests)
        assert methods and set(methods) == {"GET"}, methods
        deployment_after = kube.get("deployments", NAMESPACE, DEPLOYMENT)
        assert deployment_after is not None
        assert deployment_after["spec"] == deployment_before["spec"]
        assert deployment_after["metadata"] == deployment_before["metadata"]
        env = {e["name"]: e["value"] for e in deployment_after["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env == {"DB_HOST": "prod-pg.internal", "LOG_LEVEL": "info"}

        # Route53: the zone's records are as seeded (no change batch was applied), and no step was a DNS one.
        assert route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"] == records_before
        assert not any(op["provider"] == "route53" for op in operations), operations


# ------------------------------------------------------------------------------------------- kill -9 (sandbox)

LIVE = "rag-engine-staging"
DRILL = "rag-engine-staging-drill-r1"
COMMAND = "/dr drill database-pitr staging time=latest"
DELETE_STEP = "delete_drill_instance"


def write_config(workdir: Path, change: Callable[[dict[str, Any]], None] | None = None) -> None:
    """drbot.yml in the shell's working directory: the sandbox config, changed."""
    data = sandbox_config()
    assert data["environments"]["staging"]["approvals"]["required"] == 0, "staging drills need no approval"
    if change is not None:
        change(data)
    (workdir / "drbot.yml").write_text(yaml.safe_dump(data))


def events(store: Store) -> list[Event]:
    return store.events_for(incident_id="INC-1")


def of_kind(store: Store, kind: str) -> list[Event]:
    return [e for e in events(store) if e.kind == kind]


def instance(store: Store) -> dict[str, Any] | None:
    return store.list_state(kind="sandbox.rds").get(DRILL)


def ops_for(store: Store, action: str) -> list[dict[str, Any]]:
    return [op for op in store.list_state(kind=OPS_KIND).values()
            if op["action"] == action and op["target"] == DRILL]


def restart_and_settle(workdir: Path, *, speed: float, running: bool) -> tuple[float, str]:
    """Start `drbot shell` again on the same files: it resumes the drill; wait until it has settled, then quit.
    `running`: the run itself had not ended (the shell then says it resumes it; a run that had ended and was only
    cleaning up is finished, so the shell says nothing of it but DBOS still resumes its workflow's clean-up).
    Returns how long that took and what the shell printed."""
    began = time.monotonic()
    second = ShellProcess(workdir, user="alice", speed=speed)
    try:
        if running:
            second.expect(r"Resuming R-1 \(database-pitr on staging, running\)", since_send=False, timeout=60)
        second.expect(r"Drill over: R-1 succeeded\.", since_send=False, timeout=90)
        second.send(":wait 60")
        second.send(":as alice")
        second.expect(r"You are now alice\.", timeout=90)
        assert "Still running after" not in second.buffer, second.buffer
        for text in (second.buffer, second.errors):
            assert "Traceback" not in text, text
    finally:
        assert second.close() == 0, second.errors
    return time.monotonic() - began, second.buffer


def assert_concluded_once(store: Store) -> None:
    """After the restart: the run succeeded, the scratch instance is deleted, the ledger says so, the clean-up
    report and the end of the drill were each told once, and the timeline has no gap and no duplicate line."""
    run = store.get_run("R-1")
    assert run is not None and run.drill and run.status is RunStatus.SUCCEEDED, run
    steps = {s.step_id: s for s in store.steps_for(run_id="R-1")}
    assert {k: s.status for k, s in steps.items()} == {k: StepStatus.SUCCEEDED for k in (
        "restore", "integrity", "cutover", "report", DELETE_STEP)}, steps
    record = instance(store)
    assert record is None or record.get("deletion"), record
    assert [n for n, r in store.list_state(kind="sandbox.rds").items() if "-drill-" in n] == [DRILL]
    live = store.list_state(kind="sandbox.rds")[LIVE]
    assert not live.get("deletion") and not live.get("run_id"), "the live instance is untouched"
    ledger = store.list_state(kind=LEDGER)
    assert list(ledger) == ["R-1:restore"], ledger
    entry = ledger["R-1:restore"]
    assert entry["name"] == DRILL and entry["provider"] == "sandbox" and entry["gone_at"] is not None, entry

    [report] = of_kind(store, EventKind.RUN_CLEANUP)
    assert report.text == (f"Clean-up of R-1: everything it made is gone.\n"
                           f"• database instance `{DRILL}` (sandbox): deleted"), report.text
    assert report.data["left"] == 0
    [over] = of_kind(store, EventKind.INCIDENT_RESOLVED)
    assert over.text == "Drill over: R-1 succeeded."
    incident = store.get_incident("INC-1")
    assert incident is not None and incident.drill and incident.status is IncidentStatus.RESOLVED
    kinds = [e.kind for e in events(store)]
    assert EventKind.INCIDENT_RESTORED not in kinds, "a drill never marks anything restored"
    assert kinds.index(EventKind.RUN_SUCCEEDED) < kinds.index(EventKind.RUN_CLEANUP) \
        < kinds.index(EventKind.INCIDENT_RESOLVED)

    # The restore's provider create was made once: one operation event for attempt 1, one sandbox operation,
    # one create on the target's counter. The deletion likewise.
    restore_ops = [e for e in of_kind(store, EventKind.STEP_OPERATION) if e.data["step_id"] == "restore"]
    assert [e.data["attempt"] for e in restore_ops] == [1], [e.text for e in restore_ops]
    assert len(ops_for(store, "restore_pitr")) == 1 and create_count(store, target=DRILL) == 1
    delete_ops = [e for e in of_kind(store, EventKind.STEP_OPERATION) if e.data["step_id"] == DELETE_STEP]
    assert [e.data["attempt"] for e in delete_ops] == [1], [e.text for e in delete_ops]
    assert len(ops_for(store, "delete_instance")) == 1
    deletes = store.list_state(kind=TARGETS_KIND).get(f"database.delete_instance:{DRILL}") or {}
    assert deletes.get("creates") == 1, deletes

    everything = events(store)
    seqs = [e.seq for e in everything]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap in the timeline"
    twice = [k for k, n in Counter((e.kind, e.run_id, e.text) for e in everything).items() if n > 1]
    assert twice == [], f"lines told twice: {twice}"
    started = Counter(e.data.get("step_id") for e in everything if e.kind == EventKind.STEP_STARTED)
    completed = Counter(e.data.get("step_id") for e in everything if e.kind == EventKind.STEP_COMPLETED)
    assert started == completed == Counter({"restore": 1, "integrity": 1, "cutover": 1, "report": 1,
                                            DELETE_STEP: 1})
    assert store.verify_audit()[1] is None


def test_a_drill_killed_mid_restore_still_deletes_its_scratch_instance_after_restart(tmp_path: Path) -> None:
    # Speed 100: the sandbox PITR takes ~12 s, the deletion ~3 s; staging needs no approval.
    write_config(tmp_path)
    began = time.monotonic()
    first = ShellProcess(tmp_path, user="alice", speed=100)
    try:
        first.send(COMMAND)
        first.expect(r"Drill INC-1 opened")
        first.expect(rf"sandbox restore_pitr started on {DRILL}\.", timeout=60)
        first.expect(r"Point-in-time restore into a new instance: creating")
    finally:
        first.kill9()
    killed_after = time.monotonic() - began

    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    try:
        run = store.get_run("R-1")
        assert run is not None and run.status is RunStatus.RUNNING, run
        restore = {s.step_id: s for s in store.steps_for(run_id="R-1")}["restore"]
        assert restore.status is StepStatus.RUNNING, "killed in the middle of the restore"
        record = instance(store)
        assert record is not None and not record.get("deletion"), "the scratch instance is being made"
        assert store.list_state(kind=LEDGER)["R-1:restore"]["gone_at"] is None, "on the ledger before the create"
        assert create_count(store, target=DRILL) == 1
        assert of_kind(store, EventKind.RUN_CLEANUP) == []

        took, _ = restart_and_settle(tmp_path, speed=100, running=True)
        assert_concluded_once(store)
        assert took < 45, f"the restart took {took:.1f} s to settle"
    finally:
        store.close()
    print(f"killed after {killed_after:.1f} s; the restart settled in {took:.1f} s")


@pytest.mark.parametrize("moment", ["before-the-delete-call", "mid-deletion"])
def test_a_drill_killed_during_its_clean_up_finishes_it_after_restart(tmp_path: Path, moment: str) -> None:
    """Killed while the clean-up step runs: either while its provider start is retrying a transient error (so
    before anything was asked to delete; four injected `Throttling` failures, ~1.6 s of backoff, counted in the
    store so they carry over the restart) or once the sandbox deletion is under way (~3 s at speed 100)."""

    def slow_delete(data: dict[str, Any]) -> None:
        data["environments"]["staging"]["database"]["failures"] = {"delete_instance": {
            "at": "start", "transient": True, "times": 4, "message": "Throttling: rate exceeded"}}

    write_config(tmp_path, slow_delete if moment == "before-the-delete-call" else None)
    began = time.monotonic()
    first = ShellProcess(tmp_path, user="alice", speed=100)
    try:
        first.send(COMMAND)
        first.expect(r"Drill INC-1 opened")
        first.expect(r"R-1 \(database-pitr\) finished successfully\.", timeout=60)
        first.expect(r"Delete the drill's scratch instance: started\.", timeout=30)
        if moment == "mid-deletion":
            first.expect(r"Delete the drill's scratch instance: deleting", timeout=30)
    finally:
        first.kill9()
    killed_after = time.monotonic() - began

    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    try:
        run = store.get_run("R-1")
        assert run is not None and run.status is RunStatus.SUCCEEDED, "the run itself had ended"
        incident = store.get_incident("INC-1")
        assert incident is not None and incident.status is not IncidentStatus.RESOLVED, "not concluded yet"
        started = [e for e in of_kind(store, EventKind.STEP_STARTED) if e.data["step_id"] == DELETE_STEP]
        assert len(started) == 1
        delete = {s.step_id: s for s in store.steps_for(run_id="R-1")}[DELETE_STEP]
        assert delete.status is StepStatus.RUNNING, "killed in the middle of the clean-up step"
        assert store.list_state(kind=LEDGER)["R-1:restore"]["gone_at"] is None
        assert of_kind(store, EventKind.RUN_CLEANUP) == []
        record = instance(store)
        assert record is not None
        if moment == "mid-deletion":
            assert record.get("deletion"), "the sandbox was asked to delete it before the kill"
            assert len(ops_for(store, "delete_instance")) == 1
        else:
            assert not record.get("deletion"), "the start was still retrying its transient error"
            assert ops_for(store, "delete_instance") == []

        took, _ = restart_and_settle(tmp_path, speed=100, running=False)
        assert_concluded_once(store)
        assert took < 45, f"the restart took {took:.1f} s to settle"
    finally:
        store.close()
    print(f"{moment}: killed after {killed_after:.1f} s; the restart settled in {took:.1f} s")
