"""PagerDuty end to end: signed V3 webhooks into the served app (real HTTP), incidents and Slack threads out (fake
Web API), and drbot's calls back to PagerDuty over TLS (fake REST API)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.pagerduty import BadPayload, parse, sign, verify
from runbooks.models import IncidentStatus
from tests.doubles import pagerduty_webhooks as pdw
from tests.doubles.fake_pagerduty import FakePagerDuty
from tests.doubles.fake_slack import FakeSlack
from tests.slack_harness import ALICE, ServedDrbot, slack_config, wait_until

pytestmark = pytest.mark.slow

SECRET, OLD_SECRET = "whsec-new-0123456789abcdef", "whsec-old-fedcba9876543210"
PAGED = "C0PAGED"
FROM = "drbot@example.com"


def pd_config(**prod: Any) -> dict[str, Any]:
    data = slack_config()
    data["pagerduty"] = {"services": {"PSVC1": {"channel": PAGED, "environment": "prod",
                                                "runbooks": ["database-pitr"]}}}
    data["environments"]["prod"].update(copy.deepcopy(prod))
    return data


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-test-token") as server:
        yield server


@pytest.fixture
def serve(tmp_path: Path, fake: FakeSlack) -> Iterator[Callable[..., ServedDrbot]]:
    made: list[ServedDrbot] = []

    def start(**kwargs: Any) -> ServedDrbot:
        kwargs.setdefault("config", pd_config())
        kwargs.setdefault("pagerduty_secrets", SECRET)
        bot = ServedDrbot(tmp_path, fake_base_url=fake.base_url, **kwargs)
        made.append(bot)
        return bot

    yield start
    for bot in made:
        bot.close()


def deliver(bot: ServedDrbot, payload: dict[str, Any], *, secrets: tuple[str, ...] = (SECRET,)) -> httpx.Response:
    raw, headers = pdw.signed_request(payload, secrets=secrets)
    return bot.http.post("/pagerduty/webhook", content=raw, headers=headers)


def parents(fake: FakeSlack, channel: str = PAGED) -> list[Any]:
    return [c for c in fake.calls("chat.postMessage")
            if c.params.get("channel") == channel and not c.params.get("thread_ts")]


def thread_texts(fake: FakeSlack) -> list[str]:
    return [json.dumps(c.params.get("blocks")) + str(c.params.get("text"))
            for c in fake.calls("chat.postMessage") if c.params.get("thread_ts")]


def settle(bot: ServedDrbot) -> None:
    bot.settle()
    assert bot.surface.notifier.drain(timeout=30)


# --------------------------------------------------------------------------------------------- signatures


def test_signature_accepts_any_configured_secret_and_nothing_else() -> None:
    body = b'{"event": {}}'
    assert verify(body, sign(body, SECRET), [SECRET])
    assert verify(body, pdw.sign(body, [OLD_SECRET, SECRET]), [SECRET])  # rotation: both sent, new configured
    assert verify(body, pdw.sign(body, [OLD_SECRET]), [OLD_SECRET, SECRET])  # rotation: both configured
    assert not verify(body, pdw.sign(body, [OLD_SECRET]), [SECRET])  # a retired secret
    assert not verify(body + b" ", sign(body, SECRET), [SECRET])  # the body changed
    assert not verify(body, None, [SECRET]) and not verify(body, "", [SECRET])
    assert not verify(body, sign(body, SECRET).replace("v1=", "v0="), [SECRET])
    assert not verify(body, sign(body, SECRET), [])


def test_parse_reads_the_v3_envelope_and_names_what_is_missing() -> None:
    created = datetime(2026, 11, 24, 9, 58, tzinfo=UTC)
    inc = pdw.incident(incident_id="Q1PARSE", created_at=created, priority="P2", urgency="high")
    alert = parse(pdw.body(pdw.event("incident.triggered", of=inc, event_id="E1")))
    assert alert is not None
    assert (alert.incident, alert.event_id, alert.service, alert.priority, alert.urgency, alert.created_at) == \
        ("Q1PARSE", "E1", "PSVC1", "P2", "high", created)
    assert alert.assignees == ("Tenex Engineer",) and alert.url.endswith("/incidents/Q1PARSE")
    note = parse(pdw.body(pdw.event("incident.annotated", of=inc)))
    assert note is not None and note.incident == "Q1PARSE" and note.note and not note.carries_incident
    assert parse(json.dumps({"event": {"id": "E", "event_type": "service.updated",
                                       "occurred_at": "2026-11-24T10:00:00Z",
                                       "data": {"id": "PSVC1", "type": "service"}}}).encode()) is None
    with pytest.raises(BadPayload, match="not JSON"):
        parse(b"{nope")
    with pytest.raises(BadPayload, match="occurred_at"):
        parse(json.dumps({"event": {"id": "E", "event_type": "incident.triggered", "data": {"id": "Q"}}}).encode())


# ---------------------------------------------------------------------------------------------- inbound


def test_forged_unsigned_and_retired_secret_deliveries_are_refused(serve: Callable[..., ServedDrbot],
                                                                  fake: FakeSlack) -> None:
    bot = serve()
    payload = pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1FORGED"))
    raw = pdw.body(payload)
    assert bot.http.post("/pagerduty/webhook", content=raw).status_code == 401
    assert bot.http.post("/pagerduty/webhook", content=raw,
                         headers={pdw.SIGNATURE_HEADER: "v1=" + "0" * 64}).status_code == 401
    assert deliver(bot, payload, secrets=(OLD_SECRET,)).status_code == 401
    tampered = raw.replace(b"Q1FORGED", b"Q1OTHERS")
    assert bot.http.post("/pagerduty/webhook", content=tampered,
                         headers={pdw.SIGNATURE_HEADER: pdw.sign(raw, [SECRET])}).status_code == 401
    settle(bot)
    assert bot.engine.store.list_incidents() == []
    assert fake.calls("chat.postMessage") == []


def test_rotated_signatures_malformed_bodies_and_unknown_types(serve: Callable[..., ServedDrbot],
                                                               fake: FakeSlack) -> None:
    bot = serve(pagerduty_secrets=f"{SECRET},{OLD_SECRET}")
    rotated = deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1ROT")),
                      secrets=(OLD_SECRET, "whsec-someone-elses"))
    assert rotated.status_code == 202 and rotated.json()["status"] == "created"
    garbage = b"{not json"
    assert bot.http.post("/pagerduty/webhook", content=garbage,
                         headers={pdw.SIGNATURE_HEADER: sign(garbage, SECRET)}).status_code == 400
    service = json.dumps({"event": {"id": "E9", "event_type": "service.updated", "resource_type": "service",
                                    "occurred_at": "2026-11-24T10:00:00.000Z", "data": {"id": "PSVC1"}}}).encode()
    ignored = bot.http.post("/pagerduty/webhook", content=service,
                            headers={pdw.SIGNATURE_HEADER: sign(service, SECRET)})
    assert ignored.status_code == 202 and ignored.json()["status"] == "ignored"
    unrouted = deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1NOPE", service_id="PX")))
    assert unrouted.status_code == 202 and "pagerduty.services" in unrouted.json()["message"]
    assert [i.external["pagerduty"]["id"] for i in bot.engine.store.list_incidents()] == ["Q1ROT"]
    metrics = bot.http.get("/metrics").text
    for outcome, n in (("created", 1), ("malformed", 1), ("ignored", 2)):
        assert f'drbot_pagerduty_webhooks_total{{outcome="{outcome}"}} {n}' in metrics


def test_triggered_opens_one_incident_with_its_thread_checklist_and_ack_button(
        serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=7)
    inc = pdw.incident(incident_id="Q1DB", number=812, created_at=created, priority="P1",
                       title="rag-engine-prod: documents table corrupted")
    response = deliver(bot, pdw.event("incident.triggered", of=inc))
    assert response.status_code == 202 and response.json() == {"status": "created", "incident": "INC-1",
                                                               "message": ""}
    settle(bot)
    incident = bot.engine.store.get_incident("INC-1")
    assert incident is not None
    assert incident.detected_at == created and incident.severity == "sev1" and incident.environment == "prod"
    assert incident.title == "rag-engine-prod: documents table corrupted"
    [parent] = parents(fake)
    header = json.dumps(parent.params["blocks"])
    assert "/incidents/Q1DB" in header and "#812" in header and "high urgency" in header and "P1" in header
    assert "Tenex Engineer" in header
    texts = thread_texts(fake)
    assert any("dr_tick" in t for t in texts), "the checklist is posted in the thread"
    assert any("dr_pd_ack" in t and "Acknowledge in PagerDuty" in t for t in texts)
    assert any("database-pitr" in t and "/dr run database-pitr prod" in t for t in texts)
    assert all(c.params.get("thread_ts") == parent.params.get("ts") or c.params.get("thread_ts")
               for c in fake.calls("chat.postMessage") if c.params.get("thread_ts"))


def test_duplicates_retries_and_out_of_order_events_yield_one_incident_and_one_thread(
        serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    bot = serve()
    t0 = datetime.now(UTC) - timedelta(minutes=3)
    inc = pdw.incident(incident_id="Q1ORDER", created_at=t0)
    triggered = pdw.event("incident.triggered", of=inc, occurred_at=t0, event_id="EV-TRIG")
    acked = pdw.event("incident.acknowledged", of=inc, occurred_at=t0 + timedelta(minutes=1), event_id="EV-ACK")
    note = pdw.event("incident.annotated", of=inc, occurred_at=t0 + timedelta(seconds=30), event_id="EV-NOTE")
    # the note first (it cannot open the incident), then the acknowledgement overtaking its trigger
    assert deliver(bot, note).json()["status"] == "parked"
    assert deliver(bot, acked).json()["status"] == "created"
    for _ in range(3):
        assert deliver(bot, triggered).status_code == 202
    assert deliver(bot, acked).json()["status"] == "duplicate"
    settle(bot)
    [incident] = bot.engine.store.list_incidents()
    assert incident.detected_at == t0.replace(microsecond=0) or abs(incident.detected_at - t0) < timedelta(seconds=1)
    assert incident.external["pagerduty"]["status"] == "acknowledged", "the older trigger must not move it back"
    kinds = [e.kind for e in bot.engine.store.events_for(incident_id=incident.id)]
    assert kinds.count("pagerduty.triggered") == 1 and kinds.count("pagerduty.acknowledged") == 1
    assert kinds.count("pagerduty.annotated") == 1, "the parked note is replayed once the incident exists"
    assert bot.engine.store.list_state(kind="pagerduty.parked") == {}
    assert len(parents(fake)) == 1
    # a note for an incident that never arrives is kept a week, then dropped when the next one is parked
    stale = pdw.incident(incident_id="Q1NEVER")
    deliver(bot, pdw.event("incident.annotated", of=stale, occurred_at=t0 - timedelta(days=8)))
    assert list(bot.engine.store.list_state(kind="pagerduty.parked")) != []
    deliver(bot, pdw.event("incident.annotated", of=pdw.incident(incident_id="Q1LATER"), occurred_at=t0))
    assert [k.split("/")[0] for k in bot.engine.store.list_state(kind="pagerduty.parked")] == ["Q1LATER"]


def test_concurrent_deliveries_of_one_alert_open_exactly_one_incident(serve: Callable[..., ServedDrbot],
                                                                       fake: FakeSlack) -> None:
    bot = serve()
    inc = pdw.incident(incident_id="Q1RACE")
    payloads = [pdw.event("incident.triggered", of=inc, event_id="EV-RACE")] * 10 + \
               [pdw.event("incident.escalated", of=inc) for _ in range(10)]
    statuses: list[int] = []
    barrier = threading.Barrier(len(payloads))

    def send(payload: dict[str, Any]) -> None:
        barrier.wait()
        statuses.append(deliver(bot, payload).status_code)

    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    settle(bot)
    assert statuses == [202] * len(payloads)
    assert len(bot.engine.store.list_incidents()) == 1
    kinds = [e.kind for e in bot.engine.store.events_for(incident_id="INC-1")]
    assert kinds.count("pagerduty.triggered") == 1 and kinds.count("pagerduty.escalated") == 10
    assert len(parents(fake)) == 1


def test_every_v3_incident_event_type_is_accepted_and_recorded(serve: Callable[..., ServedDrbot],
                                                              fake: FakeSlack) -> None:
    bot = serve()
    inc = pdw.incident(incident_id="Q1ALL")
    assert deliver(bot, pdw.event("incident.triggered", of=inc)).status_code == 202
    for event_type in pdw.INCIDENT_EVENT_TYPES:
        if event_type in ("incident.triggered", "incident.resolved"):
            continue
        response = deliver(bot, pdw.event(event_type, of=inc))
        assert response.status_code == 202 and response.json()["status"] == "updated", (event_type, response.text)
    kinds = {e.kind for e in bot.engine.store.events_for(incident_id="INC-1")}
    assert {"pagerduty.responder.added", "pagerduty.status_update_published", "pagerduty.annotated"} <= kinds
    status = [e for e in bot.engine.store.events_for(incident_id="INC-1")
              if e.kind == "pagerduty.status_update_published"][0]
    assert "Restoring prod-db" in status.text


def test_resolved_in_pagerduty_resolves_and_reopened_reopens(serve: Callable[..., ServedDrbot],
                                                             fake: FakeSlack) -> None:
    bot = serve()
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    inc = pdw.incident(incident_id="Q1RES", created_at=t0)
    deliver(bot, pdw.event("incident.triggered", of=inc, occurred_at=t0))
    inc = {**inc, "priority": {"id": "PPRIP2", "type": "priority_reference", "summary": "P2"}}
    deliver(bot, pdw.event("incident.priority_updated", of=inc, occurred_at=t0 + timedelta(minutes=1)))
    deliver(bot, pdw.event("incident.resolved", of=inc, occurred_at=t0 + timedelta(minutes=5)))
    incident = bot.engine.store.get_incident("INC-1")
    assert incident is not None and incident.status is IncidentStatus.RESOLVED
    assert incident.external["pagerduty"]["priority"] == "P2"
    deliver(bot, pdw.event("incident.reopened", of=inc, occurred_at=t0 + timedelta(minutes=6)))
    incident = bot.engine.store.get_incident("INC-1")
    assert incident is not None and incident.status is not IncidentStatus.RESOLVED and incident.resolved_at is None
    settle(bot)
    texts = thread_texts(fake)
    assert any("Resolved in PagerDuty" in t for t in texts) and any("Reopened in PagerDuty" in t for t in texts)
    header = json.dumps(fake.calls("chat.update")[-1].params.get("blocks"))
    assert "triggered" in header or "reopened" in header


# --------------------------------------------------------------------------------------------- outbound


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        yield server


def served_with_pagerduty(serve: Callable[..., ServedDrbot], pd: FakePagerDuty) -> ServedDrbot:
    return serve(config=pd_config(pagerduty={"provider": "pagerduty", "ca_bundle": str(pd.cert)}),
                 extra_settings={"pagerduty_api_token": pd.token, "pagerduty_from_email": FROM,
                                 "pagerduty_api_url": pd.url})


def test_acknowledge_button_and_resolve_reach_pagerduty(serve: Callable[..., ServedDrbot], fake: FakeSlack,
                                                        pagerduty: FakePagerDuty) -> None:
    bot = served_with_pagerduty(serve, pagerduty)
    pagerduty.seed_incident("Q1OUT")
    deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1OUT")))
    assert bot.click("dr_pd_ack", "INC-1", user=ALICE, channel=PAGED).status_code == 200
    wait_until(lambda: pagerduty.incidents["Q1OUT"]["status"] == "acknowledged")
    [put] = [c for c in pagerduty.calls_to("PUT", "/incidents/Q1OUT")]
    assert put.headers.get("from") == FROM and put.body["incident"]["status"] == "acknowledged"
    wait_until(lambda: any(e.kind == "pagerduty.sent" for e in bot.engine.store.events_for(incident_id="INC-1")))
    bot.command("incident resolve restored from PITR, verified", user=ALICE, channel=PAGED)
    wait_until(lambda: pagerduty.incidents["Q1OUT"]["status"] == "resolved")
    resolve = pagerduty.calls_to("PUT", "/incidents/Q1OUT")[-1]
    assert "restored from PITR" in json.dumps(resolve.body)
    settle(bot)
    assert any("PagerDuty updated" in t for t in thread_texts(fake))


def test_a_refused_pagerduty_call_is_reported_in_the_thread(serve: Callable[..., ServedDrbot], fake: FakeSlack,
                                                            pagerduty: FakePagerDuty) -> None:
    bot = served_with_pagerduty(serve, pagerduty)
    pagerduty.seed_incident("Q1FAIL")
    deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1FAIL")))
    pagerduty.fail_next(status=401, times=3)
    bot.click("dr_pd_ack", "INC-1", user=ALICE, channel=PAGED)
    wait_until(lambda: any(e.kind == "pagerduty.failed" for e in bot.engine.store.events_for(incident_id="INC-1")))
    failed = [e for e in bot.engine.store.events_for(incident_id="INC-1") if e.kind == "pagerduty.failed"][0]
    assert "PAGERDUTY_API_TOKEN" in failed.text and pagerduty.token not in failed.text
    settle(bot)
    assert any("PagerDuty call failed" in t for t in thread_texts(fake))
    assert pagerduty.incidents["Q1FAIL"]["status"] == "triggered"


def test_run_milestones_are_mirrored_as_pagerduty_notes(serve: Callable[..., ServedDrbot], fake: FakeSlack,
                                                        pagerduty: FakePagerDuty) -> None:
    config = pd_config(pagerduty={"provider": "pagerduty", "ca_bundle": str(pagerduty.cert)},
                       approvals={"required": 0})
    bot = serve(config=config, extra_settings={"pagerduty_api_token": pagerduty.token,
                                               "pagerduty_from_email": FROM, "pagerduty_api_url": pagerduty.url})
    pagerduty.seed_incident("Q1RUN")
    deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1RUN")))
    settle(bot)
    bot.command("restore database prod -30m", user=ALICE, channel=PAGED)
    settle(bot)
    run = bot.engine.store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded" and run.incident_id == "INC-1"

    def notes() -> list[str]:
        return [n["content"] for n in pagerduty.notes.get("Q1RUN", [])]

    wait_until(lambda: any("Restore finished" in n for n in notes())
               and any("Service restored" in n or "restored" in n.lower() for n in notes()))
    assert any(n.startswith("[drbot INC-1 R-1] Restore started") for n in notes())
    assert len(notes()) == len(set(notes())), "each milestone is noted once"


def test_dns_switch_and_an_exhausted_rto_budget_are_noted_in_pagerduty(
        serve: Callable[..., ServedDrbot], fake: FakeSlack, pagerduty: FakePagerDuty) -> None:
    config = pd_config(pagerduty={"provider": "pagerduty", "ca_bundle": str(pagerduty.cert)},
                       approvals={"required": 0})
    bot = serve(config=config, extra_settings={"pagerduty_api_token": pagerduty.token,
                                               "pagerduty_from_email": FROM, "pagerduty_api_url": pagerduty.url})
    pagerduty.seed_incident("Q1DNS")
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)  # prod is tier critical: RTO 1h
    deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1DNS", created_at=two_hours_ago)))
    bot.engine.tick()

    def notes() -> list[str]:
        return [n["content"] for n in pagerduty.notes.get("Q1DNS", [])]

    wait_until(lambda: any("RTO target reached" in n for n in notes()))
    bot.command("failover dns prod", user=ALICE, channel=PAGED)
    settle(bot)
    wait_until(lambda: any("DNS switched" in n for n in notes()))
    assert sum("RTO target reached" in n for n in notes()) == 1, "the 50 % and 75 % warnings are not noted"


def test_without_a_pagerduty_resource_milestones_stay_quiet_and_the_button_says_why(
        serve: Callable[..., ServedDrbot], fake: FakeSlack) -> None:
    config = pd_config(approvals={"required": 0})
    del config["environments"]["prod"]["pagerduty"]
    bot = serve(config=config)
    deliver(bot, pdw.event("incident.triggered", of=pdw.incident(incident_id="Q1OFF")))
    bot.command("failover dns prod", user=ALICE, channel=PAGED)
    settle(bot)
    assert bot.engine.store.get_run("R-1") is not None
    assert bot.engine.mirror is not None and bot.engine.mirror.catch_up() == 0
    assert not [e for e in bot.engine.store.events_for(incident_id="INC-1") if e.kind == "pagerduty.failed"]
    bot.click("dr_pd_ack", "INC-1", user=ALICE, channel=PAGED)
    settle(bot)
    [failed] = [e for e in bot.engine.store.events_for(incident_id="INC-1") if e.kind == "pagerduty.failed"]
    assert "environments.prod.pagerduty is not configured" in failed.text
