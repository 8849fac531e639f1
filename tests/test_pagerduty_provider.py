"""The PagerDuty provider through the real `pagerduty` client, over TLS, against the local PagerDuty double; then
one contract run against the sandbox twin; then the V3 webhook builder's signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from integrations.pagerduty import PagerDutyProvider, build_pagerduty_provider
from integrations.sandbox import build_sandbox_provider
from runbooks.errors import ConfigError, PermanentError, TransientError
from runbooks.ports import Operation, OperationStatus, Provider
from tests.doubles import pagerduty_webhooks as wh
from tests.doubles.clock import FakeClock
from tests.doubles.fake_pagerduty import ACCEPT, FakePagerDuty
from tests.test_qdrant import T0, MemoryState

FROM = "sre-bot@example.com"
INC = "Q1ABCDEFGHIJKL"


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        server.seed_incident(INC)
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0, sleep_step=0.0)


def make(fake: FakePagerDuty, clock: FakeClock, *, token: str | None = None, from_email: str | None = FROM,
         **kw: Any) -> PagerDutyProvider:
    return PagerDutyProvider(environment="prod", resource="pagerduty", settings={}, state=MemoryState(),
                             clock=clock, api_token=fake.token if token is None else token, from_email=from_email,
                             api_url=fake.url, verify=str(fake.cert), **kw)


def run(provider: Provider, action: str, params: dict[str, Any], run_id: str = "R-1") -> OperationStatus:
    op = provider.start(action=action, params=params, run_id=run_id)
    return provider.poll(operation=op)


# ---- happy paths: the wire carries token, From and Accept; bodies are PagerDuty's


def test_note_posts_the_content_with_from_and_token(fake: FakePagerDuty, clock: FakeClock) -> None:
    status = run(make(fake, clock), "pagerduty.note", {"incident": INC, "text": "Restored prod-db to 12:00Z"})
    assert status.done and not status.failed
    assert status.outputs == {"note_id": fake.notes[INC][0]["id"]}
    [post] = fake.calls_to("POST", f"/incidents/{INC}/notes")
    assert post.body == {"note": {"content": "Restored prod-db to 12:00Z"}}
    assert post.headers["from"] == FROM and post.headers["authorization"] == "ok"
    assert post.headers["accept"] == ACCEPT
    assert all(fake.token not in json.dumps(c.headers) for c in fake.calls)


def test_a_retried_note_step_does_not_post_twice(fake: FakePagerDuty, clock: FakeClock) -> None:
    provider = make(fake, clock)
    first = run(provider, "pagerduty.note", {"incident": INC, "text": "Restore started"})
    again = run(provider, "pagerduty.note", {"incident": INC, "text": "Restore started"})
    assert first.outputs == again.outputs
    assert len(fake.notes[INC]) == 1


def test_a_note_posted_by_a_process_that_died_before_remembering_it_is_not_posted_again(
        fake: FakePagerDuty, clock: FakeClock) -> None:
    """The leader posted the note and was killed before its state store kept the note id: the new leader's step
    (another provider, nothing remembered) finds the note on the incident and posts nothing."""
    first = run(make(fake, clock), "pagerduty.note", {"incident": INC, "text": "R-3: restore finished"})
    again = run(make(fake, clock), "pagerduty.note", {"incident": INC, "text": "R-3: restore finished"})
    assert first.outputs == again.outputs and len(fake.notes[INC]) == 1
    assert len(fake.calls_to("POST", f"/incidents/{INC}/notes")) == 1
    other = run(make(fake, clock), "pagerduty.note", {"incident": INC, "text": "R-3: verified"})
    assert other.outputs != first.outputs and len(fake.notes[INC]) == 2


def test_acknowledge_puts_the_status(fake: FakePagerDuty, clock: FakeClock) -> None:
    status = run(make(fake, clock), "pagerduty.acknowledge", {"incident": INC})
    assert status.outputs == {"status": "acknowledged"}
    assert fake.incidents[INC]["status"] == "acknowledged"
    [put] = fake.calls_to("PUT", f"/incidents/{INC}")
    assert put.body == {"incident": {"type": "incident_reference", "status": "acknowledged"}}
    assert put.headers["from"] == FROM


@pytest.mark.parametrize("already", ["acknowledged", "resolved"])
def test_acknowledge_when_already_there_changes_nothing(fake: FakePagerDuty, clock: FakeClock,
                                                        already: str) -> None:
    fake.incidents[INC]["status"] = already
    status = run(make(fake, clock), "pagerduty.acknowledge", {"incident": INC})
    assert status.done and not status.failed and status.outputs == {"status": already}
    assert fake.calls_to("PUT", f"/incidents/{INC}") == []


def test_resolve_with_note_sends_the_resolution(fake: FakePagerDuty, clock: FakeClock) -> None:
    status = run(make(fake, clock), "pagerduty.resolve", {"incident": INC, "note": "Service restored"})
    assert status.outputs == {"status": "resolved"}
    assert fake.incidents[INC]["status"] == "resolved"
    [put] = fake.calls_to("PUT", f"/incidents/{INC}")
    assert put.body == {"incident": {"type": "incident_reference", "status": "resolved",
                                     "resolution": "Service restored"}}
    assert [n["content"] for n in fake.notes[INC]] == ["Service restored"]


def test_resolving_a_resolved_incident_is_a_no_op_success(fake: FakePagerDuty, clock: FakeClock) -> None:
    provider = make(fake, clock)
    run(provider, "pagerduty.resolve", {"incident": INC, "note": "Service restored"})
    again = run(provider, "pagerduty.resolve", {"incident": INC, "note": "Service restored"})
    assert again.done and not again.failed and again.outputs == {"status": "resolved"}
    assert "already resolved" in again.message
    assert len(fake.calls_to("PUT", f"/incidents/{INC}")) == 1
    assert len(fake.notes[INC]) == 1  # the resolution is not posted again by the retried step


def test_a_lost_race_to_resolve_counts_as_done(fake: FakePagerDuty, clock: FakeClock) -> None:
    """Someone resolves it between our read and our acknowledge: PagerDuty refuses (400); we re-read and agree."""
    provider = make(fake, clock)
    provider.plan(action="pagerduty.acknowledge", params={"incident": INC})
    original = fake.handle

    def resolve_first(method: str, raw_path: str, headers: dict[str, str], body: Any) -> Any:
        if method == "PUT":
            fake.incidents[INC]["status"] = "resolved"
        return original(method, raw_path, headers, body)

    fake.handle = resolve_first  # type: ignore[method-assign]  # the double, not the code under test
    status = run(provider, "pagerduty.acknowledge", {"incident": INC})
    assert status.outputs == {"status": "resolved"} and not status.failed
    assert len(fake.calls_to("PUT", f"/incidents/{INC}")) == 1


def test_plan_shows_the_incident_as_pagerduty_has_it(fake: FakePagerDuty, clock: FakeClock) -> None:
    plan = make(fake, clock).plan(action="pagerduty.resolve", params={"incident": INC})
    assert plan["status_now"] == "triggered" and plan["title"] == "prod-db corrupted"
    assert plan["html_url"].endswith(f"/incidents/{INC}")


# ---- retries


def test_429_with_retry_after_is_retried_once_after_that_wait(fake: FakePagerDuty, clock: FakeClock) -> None:
    fake.fail_next(status=429, retry_after=7)
    status = run(make(fake, clock), "pagerduty.note", {"incident": INC, "text": "x"})
    assert status.outputs["note_id"]
    # the 429 met the first call (reading the notes, before posting), which was made again after 7 s
    assert len(fake.calls_to("GET", f"/incidents/{INC}/notes")) == 2
    assert len(fake.calls_to("POST", f"/incidents/{INC}/notes")) == 1
    assert clock.now() - T0 == timedelta(seconds=7)


def test_503_three_times_then_success(fake: FakePagerDuty, clock: FakeClock) -> None:
    fake.fail_next(status=503, times=3)
    status = run(make(fake, clock), "pagerduty.acknowledge", {"incident": INC})
    assert status.outputs == {"status": "acknowledged"}
    assert len(fake.calls_to("GET", f"/incidents/{INC}")) == 4
    assert (clock.now() - T0).total_seconds() == 1 + 2 + 4  # exponential backoff from 1 s


def test_persistent_500_gives_up_with_a_transient_error(fake: FakePagerDuty, clock: FakeClock) -> None:
    fake.fail_next(status=500, times=50)
    provider = make(fake, clock, attempts=4)
    with pytest.raises(TransientError) as caught:
        provider.start(action="pagerduty.note", params={"incident": INC, "text": "x"}, run_id="R-1")
    assert len(fake.calls) == 4
    assert "500" in caught.value.message and fake.token not in caught.value.message


def test_backoff_is_capped(fake: FakePagerDuty, clock: FakeClock) -> None:
    fake.fail_next(status=429, retry_after=3600)
    run(make(fake, clock, max_backoff=30.0), "pagerduty.note", {"incident": INC, "text": "x"})
    assert (clock.now() - T0).total_seconds() == 30


# ---- refusals name what to fix and never show the token


def test_bad_token_names_the_env_var_and_hides_the_token(fake: FakePagerDuty, clock: FakeClock,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    secret = "u+WRONGTOKEN-do-not-show"
    caplog.set_level(logging.DEBUG)
    provider = make(fake, clock, token=secret)
    with pytest.raises(PermanentError) as caught:
        provider.start(action="pagerduty.acknowledge", params={"incident": INC}, run_id="R-1")
    assert "PAGERDUTY_API_TOKEN" in caught.value.message and "401" in caught.value.message
    assert secret not in caught.value.message and secret[-4:] not in caught.value.message
    assert secret not in caplog.text and secret not in repr(provider)
    assert len(fake.calls) == 1  # a 401 is not retried


def test_missing_from_names_the_env_var(fake: FakePagerDuty, clock: FakeClock) -> None:
    """The client sends no From header when none is configured; PagerDuty's 400 becomes a pointed sentence."""
    import pagerduty

    from integrations.pagerduty.provider import without_client_retries

    trust = ssl.create_default_context(cafile=str(fake.cert))
    bare = without_client_retries(pagerduty.RestApiV2Client(fake.token, base_url=fake.url, verify=trust))
    provider = make(fake, clock, client=bare)
    with pytest.raises(PermanentError) as caught:
        provider.start(action="pagerduty.resolve", params={"incident": INC}, run_id="R-1")
    assert "PAGERDUTY_FROM_EMAIL" in caught.value.message and "400" in caught.value.message
    assert "from" not in fake.calls_to("PUT", f"/incidents/{INC}")[0].headers


def test_unknown_incident_names_the_id(fake: FakePagerDuty, clock: FakeClock) -> None:
    provider = make(fake, clock)
    problems = provider.preflight(action="pagerduty.note", params={"incident": "QNOPE", "text": "x"})
    assert len(problems) == 1 and "`QNOPE`" in problems[0] and "404" in problems[0]
    with pytest.raises(PermanentError, match="QNOPE"):
        provider.start(action="pagerduty.note", params={"incident": "QNOPE", "text": "x"}, run_id="R-1")


def test_preflight_names_unset_credentials_without_calling(fake: FakePagerDuty, clock: FakeClock) -> None:
    provider = make(fake, clock, token="", from_email=None)
    problems = provider.preflight(action="pagerduty.resolve", params={"incident": INC})
    assert any("PAGERDUTY_API_TOKEN" in p for p in problems)
    assert any("PAGERDUTY_FROM_EMAIL" in p for p in problems)
    assert fake.calls == []
    with pytest.raises(PermanentError, match="PAGERDUTY_API_TOKEN"):
        provider.start(action="pagerduty.resolve", params={"incident": INC}, run_id="R-1")


def test_http_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        PagerDutyProvider(environment="prod", resource="pagerduty", settings={}, api_token="t",
                          from_email=FROM, api_url="http://127.0.0.1:9")
    assert "PAGERDUTY_API_URL" in caught.value.message and "https://" in caught.value.message


def test_probe_reads_abilities_and_reports_a_bad_token(fake: FakePagerDuty, clock: FakeClock) -> None:
    assert make(fake, clock).probe() == []
    assert fake.calls_to("GET", "/abilities")
    problems = make(fake, clock, token="wrong-token-xyz").probe()
    assert len(problems) == 1 and "PAGERDUTY_API_TOKEN" in problems[0] and "wrong-token-xyz" not in problems[0]


def test_builder_trusts_the_ca_bundle_from_drbot_yml(fake: FakePagerDuty, clock: FakeClock) -> None:
    provider = build_pagerduty_provider(environment="prod", resource="pagerduty",
                                        settings={"ca_bundle": str(fake.cert)}, state=MemoryState(), clock=clock,
                                        api_token=fake.token, from_email=FROM, api_url=fake.url)
    assert provider.probe() == []
    missing = build_pagerduty_provider(environment="prod", resource="pagerduty",
                                       settings={"ca_bundle": "/nonexistent/ca.pem"}, state=MemoryState(),
                                       clock=clock, api_token=fake.token, from_email=FROM, api_url=fake.url)
    [problem] = missing.probe()
    assert "environments.prod.pagerduty.ca_bundle" in problem and "/nonexistent/ca.pem" in problem


def test_untrusted_certificate_is_reported_not_raised(fake: FakePagerDuty, clock: FakeClock) -> None:
    provider = PagerDutyProvider(environment="prod", resource="pagerduty", settings={}, api_token=fake.token,
                                 from_email=FROM, api_url=fake.url, clock=clock, attempts=2)
    problems = provider.probe()
    assert len(problems) == 1 and "ca_bundle" in problems[0] and "certificate" in problems[0]
    assert len(fake.calls) == 0  # refused during the TLS handshake, and not retried


# ---- contract: the same behaviour from the sandbox twin


@dataclass
class World:
    provider: Provider
    notes: Callable[[], list[str]]
    status: Callable[[], str]


def real_world() -> Iterator[World]:
    with FakePagerDuty() as server:
        server.seed_incident(INC)
        provider = make(server, FakeClock(T0, sleep_step=0.0))
        yield World(provider, lambda: [n["content"] for n in server.notes[INC]],
                    lambda: str(server.incidents[INC]["status"]))


def sandbox_world() -> Iterator[World]:
    from integrations.sandbox.pagerduty import PD_KIND

    state = MemoryState()
    provider = build_sandbox_provider(environment="prod", resource="pagerduty", settings={}, state=state,
                                      clock=FakeClock(T0), speed=1e6)

    def record() -> dict[str, Any]:
        return state.load_state(kind=PD_KIND, key=INC) or {"notes": [], "status": "triggered"}

    yield World(provider, lambda: [n["content"] for n in record()["notes"]], lambda: str(record()["status"]))


@pytest.fixture(params=["pagerduty", "sandbox"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    yield from (real_world() if request.param == "pagerduty" else sandbox_world())


def finish(provider: Provider, op: Operation) -> OperationStatus:
    for _ in range(100):
        status = provider.poll(operation=op)
        if status.done:
            return status
    raise AssertionError(f"{op.id} never finished")


def test_contract_note_then_resolve_then_resolve_again(world: World) -> None:
    p = world.provider
    assert isinstance(p, Provider) and {"note", "resolve", "acknowledge"} <= p.actions()
    assert p.preflight(action="pagerduty.note", params={"incident": INC, "text": "Restore started"}) == []
    noted = finish(p, p.start(action="pagerduty.note", params={"incident": INC, "text": "Restore started"},
                              run_id="R-1"))
    assert set(noted.outputs) == {"note_id"} and noted.outputs["note_id"]
    resolved = finish(p, p.start(action="pagerduty.resolve", params={"incident": INC, "note": "Restored"},
                                 run_id="R-1"))
    assert resolved.outputs == {"status": "resolved"} and not resolved.failed
    assert world.status() == "resolved"
    assert world.notes() == ["Restore started", "Restored"]
    again = finish(p, p.start(action="pagerduty.resolve", params={"incident": INC}, run_id="R-2"))
    assert again.outputs == {"status": "resolved"} and not again.failed
    assert world.notes() == ["Restore started", "Restored"]
    plan = p.plan(action="pagerduty.resolve", params={"incident": INC})
    assert plan["status_now"] == "resolved" and "Already resolved" in plan["note"]


# ---- V3 webhook builder


def test_signature_matches_a_hand_computed_hmac() -> None:
    raw = wh.body(wh.event("incident.triggered"))
    header = wh.sign(raw, ["s3cret"])
    expected = "v1=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(header, expected)
    assert not hmac.compare_digest(wh.sign(raw + b" ", ["s3cret"]), expected)


def test_rotated_secrets_give_two_v1_entries_each_verifiable() -> None:
    raw, headers = wh.signed_request(wh.event("incident.resolved"), secrets=["old", "new"])
    entries = headers[wh.SIGNATURE_HEADER].split(",")
    assert len(entries) == 2 and all(e.startswith("v1=") for e in entries)
    for secret, entry in zip(["old", "new"], entries, strict=True):
        assert hmac.compare_digest(entry, "v1=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest())


@pytest.mark.parametrize("event_type", wh.INCIDENT_EVENT_TYPES)
def test_every_incident_event_has_the_documented_envelope(event_type: str) -> None:
    payload = json.loads(wh.body(wh.event(event_type, of=wh.incident(incident_id="PGR0VU2"))))
    event = payload["event"]
    assert set(event) == {"id", "event_type", "resource_type", "occurred_at", "agent", "client", "data"}
    assert event["event_type"] == event_type and event["resource_type"] == "incident"
    assert event["occurred_at"].endswith("Z")
    data = event["data"]
    if event_type == "incident.annotated":
        assert data["type"] == "incident_note" and data["incident"]["id"] == "PGR0VU2" and data["content"]
    elif data["type"] == "incident":
        assert data["id"] == "PGR0VU2" and data["service"]["type"] == "service_reference"
        assert data["assignees"][0]["type"] == "user_reference" and data["html_url"]
        assert data["status"] == wh.STATUS_AFTER.get(event_type, "triggered")
    else:
        assert data["incident"]["id"] == "PGR0VU2"
