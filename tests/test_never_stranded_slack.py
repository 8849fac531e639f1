"""Never stranded, seen from Slack: signed requests into drbot served for real, a fake Slack Web API out.

Whatever is raised inside a run ends decided and visible in the incident thread, with an error id and never a
traceback: a crash before anything changed fails the run (and tells the requester privately), a crash after
approval pauses it with Retry/Skip/Abort on its card. Both layouts production runs are driven: one process
(uvicorn + Bolt + engine) and `drbot serve`'s two (a front that acknowledges, a spawned worker with the engine).
Faults come from the sandbox's `failures:` injection in a drbot.yml written by the test, not from patching.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from bot.config import Settings
from bot.serve import build_front
from bot.slack.blocks_kit import ABORT, APPROVE, RETRY, SKIP
from runbooks.store import Store
from tests.doubles.fake_slack import FakeSlack
from tests.doubles.slack_requests import block_action, sign, slash_command
from tests.shapes import DESIGN_SKETCH
from tests.slack_harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    DAVE,
    MALLORY,
    SECRET,
    ServedDrbot,
    free_port,
    slack_config,
    wait_until,
)

pytestmark = pytest.mark.slow

ERROR_ID = re.compile(r"[Ee]rror ([0-9a-f]{8})")
MESSAGE_TS = "1700000000.000100"


_triggers = itertools.count(1)


def trigger_id() -> str:
    """Slack gives every command and click its own trigger id, so the same command typed twice in one second is
    two different signed bodies, not a replay (which drbot acknowledges and runs nothing for)."""
    return f"13345224609.738474920.{next(_triggers):031x}"


def restore_database() -> str:
    """`/dr restore database prod 10:00Z`, except in the minutes after 10:00Z, when 10:00Z is still later than
    the newest restorable moment (a few minutes ago) and pre-flight rightly refuses it."""
    now = datetime.now(UTC)
    return "restore database prod " + ("09:00Z" if now.hour == 10 and now.minute < 15 else "10:00Z")


# ------------------------------------------------------------------------------------------- both layouts


@dataclass
class Served:
    """drbot served in one layout or the other, seen only through what both share."""

    fake: FakeSlack
    post: Callable[[bytes], httpx.Response]
    store: Store
    settle: Callable[[], None]

    def command(self, text: str, *, user: str) -> httpx.Response:
        response = self.post(slash_command(text, user_id=user, channel_id=CHANNEL, trigger_id=trigger_id()))
        assert response.status_code == 200, response.text
        return response

    def click(self, action_id: str, value: str, *, user: str) -> None:
        response = self.post(block_action(action_id=action_id, value=value, user_id=user, channel_id=CHANNEL,
                                          message_ts=MESSAGE_TS, trigger_id=trigger_id()))
        assert response.status_code == 200, response.text

    def run_status(self, run_id: str) -> str | None:
        run = self.store.get_run(run_id)
        return None if run is None else run.status.value


def one_process(tmp_path: Path, fake: FakeSlack, config: dict[str, Any]) -> Iterator[Served]:
    bot = ServedDrbot(tmp_path, fake_base_url=fake.base_url, config=config)
    try:
        yield Served(fake=fake, post=bot.post_signed, store=bot.engine.store, settle=bot.settle)
    finally:
        bot.close()


def two_processes(tmp_path: Path, fake: FakeSlack, config: dict[str, Any],
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    path = tmp_path / "drbot.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"DRBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'drbot.db'}", "DRBOT_CONFIG": str(path),
           "DRBOT_SANDBOX_SPEED": "100000", "SLACK_BOT_TOKEN": "xoxb-test-token",
           "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.base_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the worker is a spawned process: it reads them like `drbot serve`
    front = build_front(settings=Settings(), config_path=path, exit_on_loss=False)
    server = uvicorn.Server(uvicorn.Config(front.asgi, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30)
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=10)

    def post(body: bytes) -> httpx.Response:
        headers = sign(body, SECRET)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return client.post("/slack/events", content=body, headers=headers)

    def settle() -> None:
        assert front.worker.settle(timeout=60), "the worker did not settle"

    try:
        yield Served(fake=fake, post=post, store=front.surface.engine.store, settle=settle)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
        front.close()


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-test-token") as server:
        server.groups = {"S0SRE": [DAVE]}
        yield server


Serve = Callable[[dict[str, Any]], Served]


@pytest.fixture
def serve_two(tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """`serve_two(config)` starts drbot in `drbot serve`'s two-process layout; stopped when the test ends."""
    running: list[Iterator[Served]] = []

    def start(config: dict[str, Any]) -> Served:
        made = two_processes(tmp_path, fake, config, monkeypatch)
        running.append(made)
        return next(made)

    yield start
    for made in running:
        next(made, None)


@pytest.fixture(params=["one-process", "two-processes"])
def serve(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeSlack,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """`serve(config)` starts drbot in either layout; stopped when the test ends."""
    running: list[Iterator[Served]] = []

    def start(config: dict[str, Any]) -> Served:
        made = one_process(tmp_path, fake, config) if request.param == "one-process" \
            else two_processes(tmp_path, fake, config, monkeypatch)
        running.append(made)
        return next(made)

    yield start
    for made in running:
        next(made, None)


# ------------------------------------------------------------------------------------------- reading the fake


def strings(value: Any) -> Iterator[str]:
    """Every string in a Web API call's params, with JSON-encoded params (form bodies' `blocks`) decoded."""
    if isinstance(value, str):
        if value[:1] in ("[", "{"):
            try:
                yield from strings(json.loads(value))
                return
            except ValueError:
                pass
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def said(value: Any) -> str:
    """All the words in a call's params or a message (text and blocks), joined."""
    return "\n".join(strings(value))


def no_traceback_reached_slack(fake: FakeSlack) -> None:
    calls = fake.calls()
    assert calls, "nothing reached the fake Slack"
    for call in calls:
        words = said(call.params) + "\n" + call.body.decode("utf-8", errors="replace")
        assert "Traceback" not in words and 'File "' not in words, f"{call.method} sent a traceback:\n{words}"
    for upload in fake.uploads.values():
        content = (upload.content or b"").decode("utf-8", errors="replace")
        assert "Traceback" not in content and 'File "' not in content, content


def ephemerals(fake: FakeSlack, user: str) -> list[str]:
    return [said(c.params) for c in fake.calls("chat.postEphemeral") if c.params.get("user") == user]


def thread_posts(fake: FakeSlack) -> list[str]:
    return [said(c.params) for c in fake.calls("chat.postMessage") if c.params.get("thread_ts")]


def buttons(blocks: Any) -> dict[str, str]:
    """{action id without its `:n` suffix: value} of the buttons in a message's blocks."""
    found: dict[str, str] = {}
    for block in json.loads(blocks) if isinstance(blocks, str) else blocks or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("type") == "button":
                found[str(element["action_id"]).partition(":")[0]] = str(element.get("value"))
    return found


def thread_of(app: Served, incident_id: str = "INC-1") -> str:
    incident = app.store.get_incident(incident_id)
    assert incident is not None
    return str(incident.external["slack"]["ts"])


def card(app: Served, run_id: str) -> dict[str, Any]:
    """The run's card as Slack shows it now (after every chat.update)."""
    state = app.store.load_state(kind="slack.card", key=run_id)
    assert state is not None, f"no card was posted for {run_id}"
    return app.fake.message(str(state["ts"]))


def card_buttons(app: Served, run_id: str) -> dict[str, str]:
    return buttons(card(app, run_id).get("blocks"))


def card_shows(app: Served, run_id: str) -> str | None:
    """The status the run's card shows now (its notification text ends with it), or None before it is posted."""
    state = app.store.load_state(kind="slack.card", key=run_id)
    return None if state is None else str(app.fake.message(str(state["ts"])).get("text", "")).rpartition(": ")[2]


def wait_for_status(app: Served, run_id: str, *statuses: str, timeout: float = 60) -> str:
    """Until the run has one of `statuses` and its card says so. The store changes first: `settle()` can return
    between a run's status being written and its event reaching the notifier, so the card is what is waited on."""
    def reached() -> bool:
        app.settle()
        return app.run_status(run_id) in statuses and card_shows(app, run_id) == app.run_status(run_id)

    try:
        wait_until(reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{run_id} is {app.run_status(run_id)} (its card: {card_shows(app, run_id)}), not "
                             f"{' or '.join(statuses)}; thread:\n" + "\n---\n".join(thread_posts(app.fake))) from None
    return str(app.run_status(run_id))


def approve(app: Served, run_id: str, *, user: str) -> None:
    wait_for_status(app, run_id, "awaiting_approval")
    wait_until(lambda: APPROVE in card_buttons(app, run_id), timeout=30)
    app.click(APPROVE, card_buttons(app, run_id)[APPROVE], user=user)
    app.settle()


# ------------------------------------------------------------------------------------------- 1. every injection point

CRASHES: dict[str, tuple[str, str, str]] = {
    # at: (resource, action, the command whose runbook calls it)
    "plan": ("database", "restore_pitr", restore_database()),
    "preflight": ("dns", "switch", "failover dns prod"),
    "start": ("kubernetes", "velero_restore", "restore k8s prod"),
    "poll": ("vectors", "restore_snapshot", "restore vectors prod"),
    "verify": ("objects", "undelete", "undelete objects prod docs/"),
}


def five_crashes() -> dict[str, Any]:
    data = slack_config()
    for at, (resource, action, _) in CRASHES.items():
        data["environments"]["prod"][resource]["failures"] = {
            action: {"at": at, "crash": True, "times": 1, "message": f"boom at {at}: the SDK said something odd"}}
    return data


def crash_before_any_change(app: Served, *, at: str, run_id: str, again: str) -> None:
    """The run fails visibly, the requester is told, and the same command right after opens `again`."""
    command = CRASHES[at][2]
    told_before = len(ephemerals(app.fake, ALICE))
    app.command(command, user=ALICE)
    wait_for_status(app, run_id, "failed")
    app.settle()
    stopped = [t for t in thread_posts(app.fake) if f"{run_id} " in t and "stopped:" in t]
    assert stopped, f"no thread post says {run_id} stopped:\n" + "\n---\n".join(thread_posts(app.fake))
    assert f"boom at {at}" in stopped[-1] and f"/dr retry {run_id}" in stopped[-1], stopped[-1]
    error_id = ERROR_ID.search(stopped[-1])
    assert "Nothing was changed" in stopped[-1] and error_id, stopped[-1]
    private = [c for c in app.fake.calls("chat.postEphemeral") if c.params.get("user") == ALICE][told_before:]
    told = [c for c in private if f"{run_id} (" in said(c.params) and error_id.group(0) in said(c.params)]
    assert told, [said(c.params) for c in private]
    assert told[-1].params.get("thread_ts") == thread_of(app), "told privately, in the incident's thread"
    assert APPROVE not in card_buttons(app, run_id), "nothing to approve in a run that could not be planned"

    app.command(command, user=ALICE)
    wait_for_status(app, again, "awaiting_approval")
    wait_until(lambda: APPROVE in card_buttons(app, again), timeout=30)
    assert not any("already" in t for t in ephemerals(app.fake, ALICE)[told_before:]), \
        "a failed run must not block the same request"


def crash_after_approval(app: Served, *, at: str, run_id: str) -> None:
    """The step fails with an error id, the run pauses with Retry/Skip/Abort; a retry by someone else finishes."""
    app.command(CRASHES[at][2], user=ALICE)
    approve(app, run_id, user=BOB)
    wait_for_status(app, run_id, "paused")
    wait_until(lambda: {RETRY, SKIP, ABORT} <= set(card_buttons(app, run_id)), timeout=30)
    shown = said(card(app, run_id))
    on_card = re.search(rf"error: .*boom at {at}.*\(error ([0-9a-f]{{8}})\)", shown)
    assert on_card, f"the card does not show the step's failure with an error id:\n{shown}"
    paused = [t for t in thread_posts(app.fake) if f"{run_id} paused: step " in t]
    assert paused and f"(error {on_card.group(1)})" in paused[-1], "\n---\n".join(thread_posts(app.fake))
    app.click(RETRY, card_buttons(app, run_id)[RETRY], user=CAROL)
    wait_for_status(app, run_id, "succeeded")
    assert not {RETRY, SKIP, ABORT} & set(card_buttons(app, run_id)), "the decision buttons are gone"


def test_every_injection_point_ends_visible_and_decided(serve: Serve) -> None:
    app = serve(five_crashes())
    crash_before_any_change(app, at="plan", run_id="R-1", again="R-2")
    crash_before_any_change(app, at="preflight", run_id="R-3", again="R-4")
    crash_after_approval(app, at="start", run_id="R-5")
    crash_after_approval(app, at="poll", run_id="R-6")
    crash_after_approval(app, at="verify", run_id="R-7")
    for run_id in ("R-2", "R-4"):  # the requests made again after a failure go through as well
        approve(app, run_id, user=CAROL)
        wait_for_status(app, run_id, "succeeded")
    app.settle()
    no_traceback_reached_slack(app.fake)


# ------------------------------------------------------------------------------------------- 2. DESIGN §6's sketch

INTEGRITY_KEY = "environments.prod.settings.integrity_query"


def design_sketch() -> dict[str, Any]:
    data = yaml.safe_load(DESIGN_SKETCH)
    prod = data["environments"]["prod"]
    assert "settings" not in prod and prod["approvals"]["approvers"] == [BOB, "S0SRE"]
    for resource in ("database", "dns", "kubernetes", "vectors", "objects"):
        prod[resource]["provider"] = "sandbox"
    return data


def test_the_design_sketch_over_slack_restores_and_says_the_data_was_not_checked(serve_two: Serve) -> None:
    app = serve_two(design_sketch())
    # A runbook that cannot do without the setting is refused at once, naming the key and an example value.
    app.command("run backup-verification prod", user=ALICE)
    app.settle()
    refused = ephemerals(app.fake, ALICE)
    assert any(INTEGRITY_KEY in t and "SELECT count(*) FROM documents" in t for t in refused), refused
    assert app.store.list_incidents() == [] and app.store.get_run("R-1") is None, "a refusal changes nothing"
    assert app.fake.calls("chat.postMessage") == [], "and posts nothing in the channel"

    # database-pitr can: its integrity step is shown as not run, with the key that would make it run.
    app.command(restore_database(), user=ALICE)
    wait_for_status(app, "R-1", "awaiting_approval")
    wait_until(lambda: APPROVE in card_buttons(app, "R-1"), timeout=30)
    for plan in (said(card(app, "R-1")), *[t for t in thread_posts(app.fake) if "Check the restored data" in t]):
        integrity = plan.split("Check the restored data", 1)[1].split("Point the application", 1)[0]
        assert "will not run" in integrity and INTEGRITY_KEY in integrity, plan
    request = card_buttons(app, "R-1")[APPROVE]
    app.click(APPROVE, request, user=ALICE)
    app.settle()
    assert any("two-person rule" in t for t in ephemerals(app.fake, ALICE)), ephemerals(app.fake, ALICE)
    app.click(APPROVE, request, user=MALLORY)
    app.settle()
    assert any("not an approver" in t for t in ephemerals(app.fake, MALLORY)), ephemerals(app.fake, MALLORY)
    assert app.run_status("R-1") == "awaiting_approval", "neither click counted"
    app.click(APPROVE, request, user=BOB)
    wait_for_status(app, "R-1", "succeeded")
    app.settle()
    assert any("Run succeeded" in t for t in thread_posts(app.fake)), "\n---\n".join(thread_posts(app.fake))
    steps = {s.step_id: s.status.value for s in app.store.steps_for(run_id="R-1")}
    assert steps == {"restore": "succeeded", "integrity": "skipped", "cutover": "succeeded", "report": "succeeded"}

    app.command("timeline", user=BOB)
    app.settle()
    done = app.fake.wait_for("files.completeUploadExternal", timeout=30)
    assert done.params.get("channel_id") == CHANNEL and done.params.get("thread_ts") == thread_of(app)
    [upload] = [u for u in app.fake.uploads.values() if u.completed]
    content = (upload.content or b"").decode()
    assert "NOT DONE: Check the restored data (R-1) did not run" in content, content
    assert INTEGRITY_KEY in content
    no_traceback_reached_slack(app.fake)


# ------------------------------------------------------------------------------------------- 3. /dr cancel, /dr retry


def test_cancel_and_retry_over_slack(serve: Serve) -> None:
    app = serve(slack_config())
    app.command(restore_database(), user=ALICE)
    wait_for_status(app, "R-1", "awaiting_approval")
    wait_until(lambda: APPROVE in card_buttons(app, "R-1"), timeout=30)
    first_request = card_buttons(app, "R-1")[APPROVE]

    app.command("cancel R-1", user=MALLORY)
    app.settle()
    refused = ephemerals(app.fake, MALLORY)
    assert refused and "can cancel it" in refused[-1] and "R-1" in refused[-1], refused
    assert app.run_status("R-1") == "awaiting_approval", "a refused cancel changes nothing"

    app.command("cancel R-1", user=ALICE)
    wait_for_status(app, "R-1", "cancelled")
    app.settle()
    shown = card(app, "R-1")
    assert "— *cancelled*" in said(shown) and f"cancelled by <@{ALICE}>" in said(shown), said(shown)
    assert APPROVE not in buttons(shown.get("blocks")), "nothing left to approve"

    app.command("retry R-1", user=BOB)
    wait_for_status(app, "R-2", "awaiting_approval")
    first, second = app.store.get_run("R-1"), app.store.get_run("R-2")
    assert first is not None and second is not None
    assert second.params == first.params, "the same resolved restore point"
    assert second.requested_by == BOB
    wait_until(lambda: APPROVE in card_buttons(app, "R-2"), timeout=30)
    request = card_buttons(app, "R-2")[APPROVE]
    assert request != first_request, "approval is asked afresh"
    app.click(APPROVE, request, user=BOB)
    app.settle()
    assert any("two-person rule" in t for t in ephemerals(app.fake, BOB)), "whoever retried cannot approve it"
    assert app.run_status("R-2") == "awaiting_approval"
    app.click(APPROVE, request, user=CAROL)
    wait_for_status(app, "R-2", "succeeded")
    no_traceback_reached_slack(app.fake)
