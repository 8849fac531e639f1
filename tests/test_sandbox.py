"""The sandbox providers behave like the clouds they stand in for: refusals as sentences, the provider's own
status words over scaled time, idempotent starts that survive a restart, and injected failures."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.sandbox import build_sandbox_provider, create_count
from integrations.sandbox.failures import INJECTION_POINTS, SandboxCrash
from integrations.sandbox.pagerduty import PD_KIND
from integrations.sandbox.records import FAILURES_KIND
from runbooks.actions import ACTIONS, RESOURCES
from runbooks.errors import ConfigError, DrbotError, PermanentError, ProviderError, TransientError
from runbooks.ports import Operation, OperationStatus, Provider

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FAST = 1e5


class MemoryState:
    """Dict-backed StateStore; values go through JSON so anything unserialisable fails here, as it would in SQL."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None:
        raw = self.data.get(kind, {}).get(key)
        return None if raw is None else dict(json.loads(raw))

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None:
        self.data.setdefault(kind, {})[key] = json.dumps(dict(value))

    def list_state(self, *, kind: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.data.get(kind, {}).items()}


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


SETTINGS: dict[str, dict[str, Any]] = {
    "database": {"instance": "rag-engine-prod", "region": "us-west-2", "engine": "postgres",
                 "replica": {"instance": "rag-engine-prod-replica", "region": "us-east-1"}},
    "kubernetes": {"context": "prod", "namespace": "rag-engine", "deployment": "rag-engine-api",
                   "velero_namespace": "velero"},
    "dns": {"zone_id": "Z123", "record": "api.rag-engine.com", "type": "A", "dr_target": "203.0.113.10"},
    "vectors": {"url": "http://qdrant:6333", "collection": "documents"},
    "objects": {"bucket": "rag-engine-documents"},
    "pagerduty": {},
}
SRC, REPLICA = "rag-engine-prod", "rag-engine-prod-replica"
DEPLOY = {"deployment": "rag-engine-api", "namespace": "rag-engine"}


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(resource: str, state: MemoryState, clock: FakeClock, *, speed: float = FAST,
         **overrides: Any) -> Provider:
    return build_sandbox_provider(environment="prod", resource=resource,
                                  settings={**SETTINGS[resource], **overrides}, state=state, clock=clock, speed=speed)


def finish(provider: Provider, op: Operation, clock: FakeClock, *, step: float = 0.0) -> list[OperationStatus]:
    """Poll like the engine does, advancing the fake clock, until done; returns every status seen."""
    if not step:
        span = datetime.fromisoformat(op.data["finishes_at"]) - datetime.fromisoformat(op.data["started_at"])
        step = max(span.total_seconds() / 40, 0.001)
    seen = [provider.poll(operation=op)]
    while not seen[-1].done:
        clock.advance(step)
        seen.append(provider.poll(operation=op))
        assert len(seen) < 10_000
    return seen


def words(statuses: list[OperationStatus]) -> list[str]:
    return [s for i, s in enumerate(st.status for st in statuses) if i == 0 or statuses[i - 1].status != s]


def ago(clock: FakeClock, **delta: float) -> str:
    return (clock.now() - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


# A valid parameter set for every action; delete_instance needs a scratch instance made first.
VALID: dict[str, Callable[[FakeClock], dict[str, Any]]] = {
    "database.restore_pitr": lambda c: {"source": SRC, "target": f"{SRC}-pitr-R-1", "restore_time": ago(c, hours=2)},
    "database.restore_latest_backup": lambda c: {"source": SRC, "target": f"{SRC}-bak-R-1"},
    "database.check_replica": lambda c: {"replica": REPLICA},
    "database.promote_replica": lambda c: {"replica": REPLICA},
    "database.create_replica": lambda c: {"source": SRC, "target": f"{SRC}-drill-r1"},
    "database.integrity_check": lambda c: {"instance": SRC, "query": "SELECT count(*) FROM documents"},
    "database.delete_instance": lambda c: {"instance": f"{SRC}-pitr-R-0", "source": SRC},
    "database.backup_age": lambda c: {"source": SRC},
    "kubernetes.set_env": lambda c: {**DEPLOY, "env": {"LOG_LEVEL": "debug"}},
    "kubernetes.check_deployment": lambda c: {**DEPLOY, "env": {"LOG_LEVEL": "debug"}},
    "kubernetes.set_secret": lambda c: {**DEPLOY, "secret": "api-keys", "data": {"OPENAI_API_KEY": "sk-x"}},
    "kubernetes.scale": lambda c: {**DEPLOY, "replicas": 5},
    "kubernetes.velero_restore": lambda c: {"backup": "latest", "include_namespaces": ["rag-engine"]},
    "kubernetes.delete_namespace": lambda c: {"namespace": "rag-engine-drill-r1"},
    "dns.switch": lambda c: {"record": "api.rag-engine.com", "type": "A", "target": "203.0.113.10"},
    "dns.health_check": lambda c: {"record": "api.rag-engine.com"},
    "dns.check_target": lambda c: {"target": "203.0.113.10", "port": 443},
    "vectors.restore_snapshot": lambda c: {"collection": "documents", "snapshot": "latest"},
    "vectors.count_points": lambda c: {"collection": "documents", "min_count": 1000},
    "vectors.delete_collection": lambda c: {"collection": "documents-drill-r0"},
    "objects.undelete": lambda c: {"bucket": "rag-engine-documents", "prefix": "docs/", "since": ago(c, hours=2)},
    "objects.rollback": lambda c: {"bucket": "rag-engine-documents", "prefix": "docs/", "at": ago(c, hours=2)},
    "objects.copy_versions": lambda c: {"bucket": "rag-engine-documents", "prefix": "docs/", "to_prefix": "drill-r1/",
                                        "since": ago(c, hours=2)},
    "objects.delete_prefix": lambda c: {"bucket": "rag-engine-documents", "prefix": "drill-r1/"},
    "pagerduty.note": lambda c: {"incident": "Q1ABC", "text": "Restore started"},
    "pagerduty.resolve": lambda c: {"incident": "Q1ABC", "note": "Restored from PITR"},
    "pagerduty.acknowledge": lambda c: {"incident": "Q1ABC"},
}


def run(provider: Provider, action: str, params: Mapping[str, Any], clock: FakeClock,
        run_id: str = "R-1") -> OperationStatus:
    op = provider.start(action=action, params=params, run_id=run_id)
    return finish(provider, op, clock)[-1]


# --------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_every_declared_action_is_implemented_and_returns_its_outputs(resource: str, state: MemoryState,
                                                                       clock: FakeClock) -> None:
    provider = make(resource, state, clock)
    declared = {a.name: a for a in ACTIONS.values() if a.resource == resource}
    assert provider.kind == "sandbox" and isinstance(provider, Provider)
    assert provider.actions() == frozenset(declared)
    for name, info in sorted(declared.items()):
        params = VALID[f"{resource}.{name}"](clock)
        if name == "delete_instance":
            run(provider, "restore_pitr", {"source": SRC, "target": params["instance"], "use_latest": True}, clock,
                run_id="R-0")
        assert provider.preflight(action=name, params=params) == [], name
        assert isinstance(provider.plan(action=name, params=params), dict)
        final = run(provider, name, params, clock)
        assert final.done and not final.failed and final.progress == 1.0
        assert set(final.outputs) >= info.outputs, f"{name}: {final.outputs}"
        assert provider.verify(action=name, params=params, outputs=final.outputs) == [], name


def test_factory_refuses_an_unknown_resource_by_name(state: MemoryState, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="`queues`.*use one of database, dns"):
        build_sandbox_provider(environment="prod", resource="queues", settings={}, state=state, clock=clock,
                               speed=60)


def test_missing_setting_and_bad_speed_are_config_errors(state: MemoryState, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match=r"environments\.prod\.database\.instance is missing"):
        build_sandbox_provider(environment="prod", resource="database", settings={}, state=state, clock=clock,
                               speed=60)
    with pytest.raises(ConfigError, match="positive number"):
        make("dns", state, clock, speed=0)


def test_unknown_action_names_the_supported_ones(state: MemoryState, clock: FakeClock) -> None:
    with pytest.raises(PermanentError, match="no action `reboot`; supported: .*promote_replica") as err:
        make("database", state, clock).start(action="reboot", params={}, run_id="R-1")
    assert isinstance(err.value, ProviderError)


def test_missing_parameter_is_a_sentence(state: MemoryState, clock: FakeClock) -> None:
    problems = make("dns", state, clock).preflight(action="switch", params={"record": "api.rag-engine.com"})
    assert any("Missing parameter `target`" in p for p in problems)


# --------------------------------------------------------------------------------------------- database


def test_pitr_preflight_explains_the_restorable_window(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock)
    earliest, latest = ago(clock, days=7), ago(clock, minutes=5)
    for too in (ago(clock, days=8), ago(clock, minutes=1)):
        problems = db.preflight(action="restore_pitr",
                                params={"source": SRC, "target": "t-R-1", "restore_time": too})
        assert problems == [f"Restore time {too} is outside the restorable window of `{SRC}` ({earliest} to "
                            f"{latest}); pick a time between {earliest} and {latest}, or use `latest`."]
    plan = db.plan(action="restore_pitr",
                   params={"source": SRC, "target": "t-R-1", "restore_time": ago(clock, hours=1)})
    assert plan["restorable_window"] == {"earliest": earliest, "latest": latest}
    assert plan["restore_time"] == ago(clock, hours=1) and plan["source"] == SRC
    bad = db.plan(action="restore_pitr", params={"source": SRC, "target": "t-R-1", "restore_time": "yesterday"})
    assert "ISO-8601" in bad["problem"]
    assert "ISO-8601 UTC time such as 2026-11-24T10:00:00Z; got 'yesterday'" in db.preflight(
        action="restore_pitr", params={"source": SRC, "target": "t-R-1", "restore_time": "yesterday"})[0]


def test_pitr_preflight_refuses_missing_source_and_taken_target(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock)
    missing = db.preflight(action="restore_pitr", params={"source": "nope", "target": "t", "restore_time": None})
    assert missing == ["Instance `nope` does not exist in the sandbox (instances: rag-engine-prod, "
                       "rag-engine-prod-replica); check environments.prod.database.instance in drbot.yml or the "
                       "step's parameters."]
    taken = db.preflight(action="restore_pitr", params={"source": SRC, "target": REPLICA, "use_latest": True})
    assert taken == [f"Target instance `{REPLICA}` already exists; choose another name (drbot uses "
                     "`<source>-pitr-<run id>`) or delete it first."]
    with pytest.raises(PermanentError, match="DBInstanceAlreadyExists"):
        db.start(action="restore_pitr", params={"source": SRC, "target": SRC, "use_latest": True}, run_id="R-9")


def test_pitr_goes_creating_backing_up_available_at_speed(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock, speed=60)  # 20 min → 20 s
    when = ago(clock, hours=3)
    op = db.start(action="restore_pitr", params={"source": SRC, "target": f"{SRC}-pitr-R-1", "restore_time": when},
                  run_id="R-1")
    first = db.poll(operation=op)
    assert (first.status, first.done, first.outputs) == ("creating", False, {})
    clock.advance(19.9)
    assert db.poll(operation=op).status == "backing-up"
    clock.advance(0.1)
    final = db.poll(operation=op)
    assert (final.status, final.done) == ("available", True)
    assert final.outputs == {"instance": f"{SRC}-pitr-R-1", "endpoint": f"{SRC}-pitr-R-1.sandbox-us-west-2.rds.local",
                             "restore_time": when}


def test_speed_scales_real_world_durations(state: MemoryState, clock: FakeClock) -> None:
    for speed, seconds in ((1.0, 1200.0), (60.0, 20.0)):
        db = make("database", state, clock, speed=speed)
        op = db.start(action="restore_pitr", params={"source": SRC, "target": f"{SRC}-pitr-S{speed:g}",
                                                     "use_latest": True}, run_id=f"S{speed:g}")
        clock.advance(seconds - 0.5)
        assert not db.poll(operation=op).done
        clock.advance(0.5)
        assert db.poll(operation=op).done


def test_use_latest_restores_to_five_minutes_ago(state: MemoryState, clock: FakeClock) -> None:
    final = run(make("database", state, clock), "restore_pitr",
                {"source": SRC, "target": f"{SRC}-pitr-R-1", "restore_time": None}, clock)
    assert final.outputs["restore_time"] == ago(clock, minutes=5)


def test_start_is_idempotent_and_survives_a_restart(state: MemoryState, clock: FakeClock) -> None:
    params = {"source": SRC, "target": f"{SRC}-pitr-R-1", "restore_time": ago(clock, hours=1)}
    first = make("database", state, clock, speed=60).start(action="restore_pitr", params=params, run_id="R-1")
    again = make("database", state, clock, speed=60).start(action="restore_pitr", params=params, run_id="R-1")
    assert again == first and create_count(state, target=f"{SRC}-pitr-R-1") == 1
    clock.advance(10)
    restarted = make("database", state, clock, speed=60)  # a new process: nothing but the state store survives
    reattached = restarted.start(action="restore_pitr", params=params, run_id="R-1")
    assert reattached.id == first.id and restarted.poll(operation=first).status == "creating"
    assert create_count(state, target=f"{SRC}-pitr-R-1") == 1
    clock.advance(10)
    assert restarted.poll(operation=first).done
    assert restarted.preflight(action="restore_pitr", params=params) == []  # its own target: re-attach, no clash


def test_retry_with_another_time_on_the_same_target_is_refused(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock)
    run(db, "restore_pitr", {"source": SRC, "target": f"{SRC}-pitr-R-1", "restore_time": ago(clock, hours=1)}, clock)
    with pytest.raises(PermanentError, match="already restored to"):
        db.start(action="restore_pitr", params={"source": SRC, "target": f"{SRC}-pitr-R-1",
                                                "restore_time": ago(clock, hours=2)}, run_id="R-1")
    assert create_count(state, target=f"{SRC}-pitr-R-1") == 1


def test_injected_failure_fails_n_times_then_succeeds(state: MemoryState, clock: FakeClock) -> None:
    failures = {"restore_pitr": {"message": "Throttling: Rate exceeded", "times": 2}}
    params = {"source": SRC, "target": f"{SRC}-pitr-R-1", "use_latest": True}
    for _ in range(2):
        with pytest.raises(PermanentError, match="Throttling: Rate exceeded"):
            make("database", state, clock, failures=failures).start(action="restore_pitr", params=params,
                                                                   run_id="R-1")
    assert create_count(state, target=f"{SRC}-pitr-R-1") == 0
    assert run(make("database", state, clock, failures=failures), "restore_pitr", params, clock).done


def test_injected_transient_failure_at_poll(state: MemoryState, clock: FakeClock) -> None:
    dns = make("dns", state, clock, failures={"switch": {"message": "503 Service Unavailable", "at": "poll",
                                                         "transient": True}})
    op = dns.start(action="switch", params=VALID["dns.switch"](clock), run_id="R-1")
    with pytest.raises(TransientError, match="503"):
        dns.poll(operation=op)
    assert finish(dns, op, clock)[-1].status == "INSYNC"


CHECK = "integrity_check"  # the one database action with all five calls: plan, preflight, start, poll, verify
CHECK_PARAMS = {"instance": SRC, "query": "SELECT count(*) FROM documents"}


def call(provider: Provider, at: str, clock: FakeClock) -> None:
    """Make the provider call that injection point `at` names, the way the engine makes it."""
    if at == "plan":
        provider.plan(action=CHECK, params=CHECK_PARAMS)
    elif at == "preflight":
        assert provider.preflight(action=CHECK, params=CHECK_PARAMS) == []
    elif at == "verify":
        assert provider.verify(action=CHECK, params=CHECK_PARAMS, outputs={"count": 18_432}) == []
    else:
        op = provider.start(action=CHECK, params=CHECK_PARAMS, run_id="R-1")
        if at == "poll":
            assert finish(provider, op, clock)[-1].outputs == {"count": 18_432}


@pytest.mark.parametrize("at", INJECTION_POINTS)
def test_injected_crash_is_an_unexpected_exception_at_each_point(at: str, state: MemoryState,
                                                                  clock: FakeClock) -> None:
    db = make("database", state, clock, failures={CHECK: {"at": at, "crash": True}})
    for other in INJECTION_POINTS:  # the other points are untouched (polling needs a start, so not before one)
        if other != at and (at, other) != ("start", "poll"):
            call(db, other, clock)
    with pytest.raises(SandboxCrash, match=rf"^Injected sandbox crash in integrity_check at {at}\.$") as err:
        call(db, at, clock)
    assert isinstance(err.value, RuntimeError) and not isinstance(err.value, DrbotError | ProviderError)
    call(db, at, clock)  # `times` defaults to 1


def test_injected_crash_counts_times_across_restarts(state: MemoryState, clock: FakeClock) -> None:
    failures = {CHECK: {"at": "verify", "crash": True, "times": 2, "message": "KeyError: 'Endpoint'"}}
    for _ in range(2):  # a new provider each time: only the state store carries the count
        with pytest.raises(SandboxCrash, match="KeyError: 'Endpoint'"):
            call(make("database", state, clock, failures=failures), "verify", clock)
    assert state.list_state(kind=FAILURES_KIND) == {f"prod/database/{CHECK}/verify": {"count": 2}}
    call(make("database", state, clock, failures=failures), "verify", clock)
    call(make("database", state, clock, failures=failures), "verify", clock)


@pytest.mark.parametrize("at", ["plan", "preflight", "verify"])
def test_injected_provider_errors_at_plan_preflight_and_verify(at: str, state: MemoryState,
                                                               clock: FakeClock) -> None:
    db = make("database", state, clock, failures={CHECK: {"at": at, "times": 2, "message": "AccessDenied"}})
    for _ in range(2):
        with pytest.raises(PermanentError, match="^AccessDenied$") as err:
            call(db, at, clock)
        assert err.value.code == "InjectedFailure" and err.value.provider == "sandbox"
    call(db, at, clock)
    flaky = make("database", MemoryState(), clock, failures={CHECK: {"at": at, "transient": True}})
    with pytest.raises(TransientError, match="^Injected sandbox failure for integrity_check\\.$"):
        call(flaky, at, clock)


@pytest.mark.parametrize(("failures", "message"), [
    ({"restore_pitr": {"at": "later"}},
     r"environments\.prod\.database\.failures\.restore_pitr\.at must be one of plan, preflight, start, poll, "
     r"verify; got 'later'\."),
    ({"restore_pitr": {"crash": "yes"}}, r"failures\.restore_pitr\.crash must be true or false; got 'yes'\."),
    ({"restore_pitr": {"crash": 1}}, r"failures\.restore_pitr\.crash must be true or false; got 1\."),
    ({"restore_pitr": {"crsh": True}}, r"failures\.restore_pitr\.crsh: unknown key; a failure takes at, message, "
                                       r"times, transient, crash\."),
    ({"restore_pitr": {"transient": "no"}}, r"failures\.restore_pitr\.transient must be true or false; got 'no'\."),
    ({"restore_pitr": {"crash": True, "transient": True}},
     r"failures\.restore_pitr: `crash` and `transient` cannot be combined — a crash is an unexpected exception, "
     r"never a provider error"),
    ("boom", r"database\.failures must be a mapping of action → \{at, message, times, transient, crash\}; got str"),
    ({"restore_pitr": "boom"}, r"failures\.restore_pitr must be a mapping such as .* or \{at: poll, crash: true\}"),
])
def test_failure_settings_are_validated_by_path(failures: Any, message: str, state: MemoryState,
                                                clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match=message):
        make("database", state, clock, failures=failures)


def test_promotion_captures_lag_first_and_goes_modifying_rebooting_available(state: MemoryState,
                                                                          clock: FakeClock) -> None:
    db = make("database", state, clock, speed=60)
    lag = run(db, "check_replica", {"replica": REPLICA}, clock).outputs["replica_lag_seconds"]
    assert 4 <= lag <= 12
    assert db.preflight(action="promote_replica", params={"replica": SRC}) == [
        f"`{SRC}` is not a read replica (it is a standalone primary); there is nothing to promote — point the "
        "runbook at the replica in environments.prod.database.replica.instance."]
    op = db.start(action="promote_replica", params={"replica": REPLICA}, run_id="R-1")
    seen = finish(db, op, clock, step=1)
    assert words(seen) == ["modifying", "rebooting", "available"]
    assert seen[-1].outputs["replica_lag_seconds"] == lag
    assert "not a read replica" in db.preflight(action="check_replica", params={"replica": REPLICA})[0]
    assert db.start(action="promote_replica", params={"replica": REPLICA}, run_id="R-2").id == op.id


def test_promotion_refused_while_replica_is_backing_up(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock, replica={"instance": REPLICA, "region": "us-east-1", "status": "backing-up"})
    problems = db.preflight(action="promote_replica", params={"replica": REPLICA})
    assert problems and "is `backing-up`" in problems[0] and "Wait until it is `available`" in problems[0]


def test_integrity_check_counts_rows_even_on_a_restore_of_a_restore(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock)
    run(db, "restore_pitr", {"source": SRC, "target": "copy-R-1", "use_latest": True}, clock)
    clock.advance(600)
    run(db, "restore_pitr", {"source": "copy-R-1", "target": "copy2-R-2", "use_latest": True}, clock, run_id="R-2")
    query = {"instance": "copy2-R-2", "query": "SELECT count(*) FROM public.documents", "min_count": 20_000}
    final = run(db, "integrity_check", query, clock)
    assert final.outputs == {"count": 18_432}
    assert db.verify(action="integrity_check", params=query, outputs=final.outputs) == [
        "Integrity check on `copy2-R-2` returned 18,432, below the minimum 20,000; the restore may be missing "
        "data — compare with the source before switching traffic."]
    assert "read-only" in db.preflight(action="integrity_check", params={"instance": SRC,
                                                                         "query": "DELETE FROM documents"})[0]
    with pytest.raises(PermanentError, match='relation "nope" does not exist'):
        db.start(action="integrity_check", params={"instance": SRC, "query": "select count(*) from nope"},
                 run_id="R-1")


def test_delete_never_touches_the_source_and_deletes_scratch(state: MemoryState, clock: FakeClock) -> None:
    db = make("database", state, clock, speed=60)
    assert "Refusing to delete `rag-engine-prod`" in db.preflight(action="delete_instance",
                                                                  params={"instance": SRC})[0]
    with pytest.raises(PermanentError, match="Refusing to delete"):
        db.start(action="delete_instance", params={"instance": REPLICA}, run_id="R-1")
    run(db, "restore_pitr", {"source": SRC, "target": "scratch-R-1", "use_latest": True}, clock)
    op = db.start(action="delete_instance", params={"instance": "scratch-R-1"}, run_id="R-1")
    assert words(finish(db, op, clock, step=10)) == ["deleting", "deleted"]
    assert db.preflight(action="delete_instance", params={"instance": "scratch-R-1"})[0].startswith(
        "Instance `scratch-R-1` does not exist in the sandbox")
    with pytest.raises(PermanentError, match="DBInstanceNotFound"):
        db.start(action="integrity_check", params={"instance": "scratch-R-1", "query": "select 1"}, run_id="R-1")


# --------------------------------------------------------------------------------------------- dns


def test_dns_switch_pending_then_insync_and_health_follows(state: MemoryState, clock: FakeClock) -> None:
    dns = make("dns", state, clock, speed=60)  # 60 s → 1 s
    assert dns.plan(action="switch", params=VALID["dns.switch"](clock))["current"] == "198.51.100.10"
    op = dns.start(action="switch", params=VALID["dns.switch"](clock), run_id="R-1")
    early = run(dns, "health_check", {"record": "api.rag-engine.com", "expect": "203.0.113.10"}, clock)
    assert early.outputs == {"healthy": False, "value": "198.51.100.10"}
    seen = finish(dns, op, clock, step=0.25)
    assert words(seen) == ["PENDING", "INSYNC"]
    assert seen[-1].outputs["previous"] == "198.51.100.10" and seen[-1].outputs["change_id"].startswith("/change/C")
    late = run(dns, "health_check", {"record": "api.rag-engine.com", "expect": "203.0.113.10"}, clock)
    assert late.outputs == {"healthy": True, "value": "203.0.113.10"}
    params = VALID["dns.switch"](clock)
    assert dns.preflight(action="switch", params=params) == [
        "`api.rag-engine.com` already points at 203.0.113.10; nothing to switch (check "
        "environments.prod.dns.dr_target)."]
    back = run(dns, "switch", {**params, "target": seen[-1].outputs["previous"]}, clock, run_id="R-2")
    assert back.outputs["current"] == "198.51.100.10"


def test_dns_preflight_missing_record_and_bad_address(state: MemoryState, clock: FakeClock) -> None:
    dns = make("dns", state, clock)
    assert dns.preflight(action="switch", params={"record": "www.x.com", "type": "A", "target": "1.2.3.4"}) == [
        "Record `www.x.com` does not exist in the sandbox hosted zone (records: api.rag-engine.com); check "
        "environments.prod.dns.record in drbot.yml."]
    bad = dns.preflight(action="switch", params={"record": "api.rag-engine.com", "type": "A", "target": "dr-lb"})
    assert bad == ["Target 'dr-lb' is not a valid A address; give an IP such as 198.51.100.10."]


# --------------------------------------------------------------------------------------------- vectors


def test_vectors_restore_latest_snapshot_overwrites_and_goes_green(state: MemoryState, clock: FakeClock) -> None:
    vec = make("vectors", state, clock, speed=60)
    plan = vec.plan(action="restore_snapshot", params={"collection": "documents", "snapshot": "latest"})
    assert plan["snapshot_time"] == "2026-11-24T01:00:00Z" and plan["snapshot_size_bytes"] > 10**9
    assert plan["warning"].startswith("Recovery overwrites the collection `documents`")
    missing = vec.preflight(action="restore_snapshot", params={"collection": "documents", "snapshot": "x.snapshot"})
    assert missing and missing[0].startswith("Snapshot `x.snapshot` does not exist") and "use `latest`" in missing[0]
    op = vec.start(action="restore_snapshot", params={"collection": "documents", "snapshot": "latest"}, run_id="R-1")
    with pytest.raises(TransientError, match="recovering"):
        vec.start(action="count_points", params={"collection": "documents"}, run_id="R-1")
    seen = finish(vec, op, clock, step=0.5)
    assert words(seen) == ["recovering", "green"] and seen[-1].outputs["snapshot"] == plan["snapshot"]
    assert run(vec, "count_points", {"collection": "documents"}, clock).outputs == {
        "points_count": plan["points_in_snapshot"]}
    assert vec.verify(action="count_points", params={"collection": "documents", "min_count": 10**6},
                      outputs={"points_count": 5})[0].startswith("Collection `documents` has 5 points")


# --------------------------------------------------------------------------------------------- kubernetes


def test_velero_latest_means_newest_completed_and_reports_items(state: MemoryState, clock: FakeClock) -> None:
    k8s = make("kubernetes", state, clock, speed=60)
    plan = k8s.plan(action="velero_restore", params={"backup": "latest"})
    assert plan["backup"] == "daily-20261124020000" and plan["phase"] == "Completed"
    failed = k8s.preflight(action="velero_restore", params={"backup": "hourly-20261124113000"})
    assert failed and "is `PartiallyFailed`, not Completed" in failed[0]
    op = k8s.start(action="velero_restore", params={"backup": "latest"}, run_id="R-1")
    seen = finish(k8s, op, clock, step=0.5)
    assert words(seen) == ["New", "InProgress", "Completed"]
    assert any("itemsRestored" in s.message and "/142" in s.message for s in seen if s.status == "InProgress")
    assert seen[-1].outputs["items_restored"] == seen[-1].outputs["total_items"] == 142


def test_rollout_progresses_and_secret_values_never_show(state: MemoryState, clock: FakeClock) -> None:
    k8s = make("kubernetes", state, clock, speed=60)
    params = VALID["kubernetes.set_secret"](clock)
    assert "sk-x" not in json.dumps(k8s.plan(action="set_secret", params=params))
    seen = finish(k8s, k8s.start(action="scale", params={**DEPLOY, "replicas": 4}, run_id="R-1"), clock, step=0.5)
    assert words(seen) == ["progressing", "complete"] and seen[-1].outputs == {"generation": 8, "replicas": 4}
    assert any("of 4 updated replicas" in s.message for s in seen[:-1])
    run(k8s, "set_secret", params, clock)
    assert "sk-x" not in json.dumps(state.data)
    assert k8s.preflight(action="scale", params={"deployment": "web", "namespace": "rag-engine", "replicas": 1})[0] \
        .startswith('deployments.apps "web" not found in namespace `rag-engine`')


# --------------------------------------------------------------------------------------------- objects


def test_undelete_restores_the_accidental_deletes_in_about_30s(state: MemoryState, clock: FakeClock) -> None:
    s3 = make("objects", state, clock, speed=1)
    params = VALID["objects.undelete"](clock)
    assert s3.plan(action="undelete", params=params)["delete_markers"] == 12
    op = s3.start(action="undelete", params=params, run_id="R-1")
    clock.advance(29)
    assert s3.poll(operation=op).status == "Active"
    clock.advance(1)
    final = s3.poll(operation=op)
    assert (final.status, final.outputs["restored"], len(final.outputs["keys"])) == ("Complete", 12, 12)
    assert all(k.startswith("docs/") for k in final.outputs["keys"])
    assert s3.plan(action="undelete", params=params)["delete_markers"] == 0
    assert s3.start(action="undelete", params=params, run_id="R-1").id == op.id  # attach, not a second batch


def test_rollback_copies_back_deleted_and_overwritten(state: MemoryState, clock: FakeClock) -> None:
    final = run(make("objects", state, clock), "rollback", VALID["objects.rollback"](clock), clock)
    assert final.outputs["restored"] == 14


def test_objects_preflight_refuses_unversioned_bucket(state: MemoryState, clock: FakeClock) -> None:
    s3 = make("objects", state, clock, versioning=False)
    problems = s3.preflight(action="undelete", params=VALID["objects.undelete"](clock))
    assert problems and problems[0].startswith("Versioning on bucket `rag-engine-documents` is never enabled")


# --------------------------------------------------------------------------------------------- pagerduty


def test_pagerduty_notes_and_resolution_are_recorded_once(state: MemoryState, clock: FakeClock) -> None:
    pd = make("pagerduty", state, clock)
    note = VALID["pagerduty.note"](clock)
    first = run(pd, "note", note, clock)
    run(pd, "note", note, clock)  # the same run re-sends: attached, not duplicated
    assert run(pd, "resolve", {"incident": "Q1ABC"}, clock, run_id="R-2").outputs == {"status": "resolved"}
    record = state.list_state(kind=PD_KIND)["Q1ABC"]
    assert [n["content"] for n in record["notes"]] == ["Restore started"]
    assert record["notes"][0]["id"] == first.outputs["note_id"] and record["status"] == "resolved"


def test_pagerduty_acknowledge_moves_only_a_triggered_incident(state: MemoryState, clock: FakeClock) -> None:
    pd = make("pagerduty", state, clock)
    assert run(pd, "acknowledge", {"incident": "Q1ACK"}, clock).outputs == {"status": "acknowledged"}
    assert state.list_state(kind=PD_KIND)["Q1ACK"]["status"] == "acknowledged"
    run(pd, "resolve", {"incident": "Q1ACK"}, clock, run_id="R-2")
    assert run(pd, "acknowledge", {"incident": "Q1ACK"}, clock, run_id="R-3").outputs == {"status": "resolved"}
    assert state.list_state(kind=PD_KIND)["Q1ACK"]["status"] == "resolved"
