"""The Slack doubles are themselves tested: FakeSlack through the real slack_sdk.WebClient, and the signed
requests through a real Bolt app (served over WSGI on 127.0.0.1) whose Web API is FakeSlack."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.doubles import slack_requests as sr
from tests.doubles.fake_slack import TOKEN, FakeSlack

SECRET = "test-signing-secret"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as running:
        yield running


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.base_url, retry_handlers=[])


# ============================================================================================ FakeSlack


def test_auth_test_answers_like_slack_and_records_the_bearer_token(fake: FakeSlack, client: WebClient) -> None:
    answer = client.auth_test()
    assert (answer["user_id"], answer["bot_id"], answer["team_id"]) == ("U0DRBOT", "B0DRBOT", "T0TEAM")
    assert answer["url"] == "https://drbot-test.slack.com/"
    call = fake.wait_for("auth.test")
    assert call.headers["authorization"] == f"Bearer {TOKEN}" and call.token == TOKEN
    assert call.http_method == "POST" and call.body == b""


def test_post_then_update_changes_the_message_slack_shows(fake: FakeSlack, client: WebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*INC-1*"}}]
    first = client.chat_postMessage(channel="C0INC", text="INC-1", blocks=blocks)
    reply = client.chat_postMessage(channel="C0INC", thread_ts=first["ts"], text="step 1 done")
    assert first["channel"] == "C0INC" and first["message"]["blocks"] == blocks
    assert first["ts"] < reply["ts"] and len(first["ts"]) == len("1732440000.000100")
    call = fake.wait_for("chat.postMessage")
    assert call.headers["content-type"].startswith("application/json") and call.params["blocks"] == blocks

    client.chat_update(channel="C0INC", ts=first["ts"], text="INC-1 resolved")
    assert fake.message(first["ts"])["text"] == "INC-1 resolved"
    assert [m["text"] for m in fake.messages(thread_ts=first["ts"])] == ["step 1 done"]
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C0INC", ts="1.000000", text="nobody")
    assert err.value.response["error"] == "message_not_found"


def test_form_encoded_params_are_parsed_and_json_fields_decoded(fake: FakeSlack, client: WebClient) -> None:
    blocks = [{"type": "divider"}]
    client.api_call("chat.postMessage", data={"channel": "C0INC", "text": "-", "blocks": json.dumps(blocks)})
    call = fake.wait_for("chat.postMessage")
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.params["channel"] == "C0INC" and call.json("blocks") == blocks
    with pytest.raises(SlackApiError) as err:
        client.api_call("chat.postMessage", json={"channel": "C0INC"})
    assert err.value.response["error"] == "no_text"


def test_post_ephemeral_returns_message_ts_and_is_kept(fake: FakeSlack, client: WebClient) -> None:
    answer = client.chat_postEphemeral(channel="C0INC", user="U0ALICE", text="only you")
    assert answer["message_ts"]
    assert fake.ephemerals[0]["user"] == "U0ALICE" and fake.ephemerals[0]["text"] == "only you"


def test_files_upload_v2_runs_the_whole_upload_url_flow(fake: FakeSlack, client: WebClient) -> None:
    content = "# INC-1 post-mortem\n| time | event |\n"
    client.files_upload_v2(channel="C0INC", thread_ts="1732440000.000100", content=content,
                           filename="INC-1.md", title="INC-1 timeline", initial_comment="timeline")
    assert [c.method for c in fake.calls()] == ["files.getUploadURLExternal", "upload",
                                                "files.completeUploadExternal"]
    asked = fake.calls("files.getUploadURLExternal")[0]
    assert asked.params["filename"] == "INC-1.md" and asked.params["length"] == str(len(content.encode()))
    (upload,) = fake.uploads.values()
    assert upload.content == content.encode() and upload.completed
    assert (upload.channel_id, upload.thread_ts, upload.initial_comment) == ("C0INC", "1732440000.000100",
                                                                              "timeline")
    done = fake.wait_for("files.completeUploadExternal")
    assert done.response["files"] == [{"id": upload.file_id, "title": "INC-1 timeline", "name": "INC-1.md",
                                       "size": len(content.encode())}]


def test_upload_endpoint_accepts_multipart_and_answers_ok_with_the_size(fake: FakeSlack, client: WebClient) -> None:
    url = client.files_getUploadURLExternal(filename="a.csv", length=3)["upload_url"]
    assert url.startswith(f"{fake.url}/upload/F")
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\na,b\r\n--{boundary}--\r\n").encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert (response.status, response.read()) == (200, b"OK - 3")
    assert next(iter(fake.uploads.values())).content == b"a,b"


def test_groups_and_users_resolve_from_configuration(fake: FakeSlack, client: WebClient) -> None:
    fake.groups = {"S0SRE": ["U0BOB", "U0CAROL"]}
    fake.users = {"U0BOB": "Bob Builder", "U0CAROL": {"real_name": "Carol C", "tz": "UTC"}}
    assert client.usergroups_users_list(usergroup="S0SRE")["users"] == ["U0BOB", "U0CAROL"]
    call = fake.wait_for("usergroups.users.list")
    assert call.params == {"usergroup": "S0SRE"}  # sent in the query string
    bob = client.users_info(user="U0BOB")["user"]
    assert (bob["id"], bob["name"], bob["real_name"], bob["profile"]["display_name"]) == \
        ("U0BOB", "bob", "Bob Builder", "bob")
    assert client.users_info(user="U0CAROL")["user"]["tz"] == "UTC"
    with pytest.raises(SlackApiError) as err:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert err.value.response["error"] == "no_such_subteam"
    with pytest.raises(SlackApiError) as err:
        client.users_info(user="U0NOPE")
    assert err.value.response["error"] == "user_not_found"


def test_wrong_or_missing_token_is_refused(fake: FakeSlack) -> None:
    for token, error in (("xoxb-wrong", "invalid_auth"), (None, "not_authed")):
        with pytest.raises(SlackApiError) as err:
            WebClient(token=token, base_url=fake.base_url).chat_postMessage(channel="C0INC", text="x")
        assert err.value.response["error"] == error
    assert fake.messages() == []


def test_unknown_methods_answer_ok(client: WebClient) -> None:
    assert client.api_call("conversations.join", json={"channel": "C0INC"})["ok"] is True


def test_rate_limit_surfaces_as_429_with_retry_after(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INC", text="x")
    assert err.value.response.status_code == 429 and err.value.response["error"] == "ratelimited"
    assert err.value.response.headers["Retry-After"] == "7"
    assert client.chat_postMessage(channel="C0INC", text="x")["ok"]  # only the next call failed


def test_rate_limit_retry_handler_retries_after_the_429(fake: FakeSlack) -> None:
    retrying = WebClient(token=TOKEN, base_url=fake.base_url, retry_handlers=[RateLimitErrorRetryHandler()])
    fake.fail_next("chat.update", retry_after=0)
    posted = retrying.chat_postMessage(channel="C0INC", text="card")
    assert retrying.chat_update(channel="C0INC", ts=posted["ts"], text="card v2")["ok"]
    assert [c.status for c in fake.calls("chat.update")] == [429, 200]
    assert fake.message(posted["ts"])["text"] == "card v2"


def test_injected_slack_error_is_ok_false(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("chat.postMessage", error="not_in_channel", status=200, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            client.chat_postMessage(channel="C0INC", text="x")
        assert err.value.response.status_code == 200 and err.value.response["error"] == "not_in_channel"
    assert not fake.calls("chat.postMessage")[0].ok


def test_wait_for_waits_for_the_nth_matching_call_and_explains_a_timeout(fake: FakeSlack, client: WebClient) -> None:
    def later() -> None:
        time.sleep(0.1)
        for text in ("one", "two", "three"):
            client.chat_postMessage(channel="C0INC", text=text)

    threading.Thread(target=later).start()
    second = fake.wait_for("chat.postMessage", count=2, where=lambda c: c.params["text"] != "one", timeout=5)
    assert second.params["text"] == "three"
    with pytest.raises(AssertionError, match=r"expected 1 matching chat.update.*chat.postMessage\(ok\)"):
        fake.wait_for("chat.update", timeout=0.2)
    fake.reset()
    assert fake.calls() == [] and fake.messages() == []


def test_response_url_posts_are_recorded(fake: FakeSlack) -> None:
    url = fake.response_url()
    assert WebhookClient(url).send(text="accepted", response_type="ephemeral").status_code == 200
    assert fake.wait_for("response_url").params == {"text": "accepted", "response_type": "ephemeral"}


# ============================================================================================ signed requests


def test_signatures_verify_with_slack_sdk_and_expire_after_five_minutes() -> None:
    body = sr.slash_command("help", user_id="U0ALICE", channel_id="C0INC")
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, sr.sign(body, SECRET))
    assert not verifier.is_valid_request(body, sr.sign(body, SECRET, timestamp=int(time.time()) - 301))
    assert not verifier.is_valid_request(body, sr.sign(body, "another-secret"))


def test_bodies_carry_every_field_slack_sends() -> None:
    command = dict(parse_qsl(sr.slash_command("restore database prod 10:00Z", user_id="U0ALICE",
                                              channel_id="C0INC").decode()))
    assert set(command) == {"token", "team_id", "team_domain", "channel_id", "channel_name", "user_id",
                            "user_name", "command", "text", "api_app_id", "is_enterprise_install",
                            "response_url", "trigger_id"}
    assert (command["command"], command["text"]) == ("/dr", "restore database prod 10:00Z")
    click = json.loads(dict(parse_qsl(sr.block_action(action_id="approve", value="req-1", user_id="U0BOB",
                                                      channel_id="C0INC", message_ts="1.1",
                                                      thread_ts="1.0").decode()))["payload"])
    assert click["type"] == "block_actions" and click["actions"][0]["value"] == "req-1"
    assert click["container"] == {"type": "message", "message_ts": "1.1", "channel_id": "C0INC",
                                  "is_ephemeral": False, "thread_ts": "1.0"}
    boxes = json.loads(dict(parse_qsl(sr.checkbox_action(action_id="check", values=["a", ("b", "B")],
                                                         user_id="U0BOB", channel_id="C0INC",
                                                         message_ts="1.1").decode()))["payload"])
    assert [o["value"] for o in boxes["actions"][0]["selected_options"]] == ["a", "b"]
    envelope = json.loads(sr.event_callback({"type": "app_mention"}, event_id="Ev1"))
    assert envelope["type"] == "event_callback" and envelope["authorizations"][0]["user_id"] == "U0DRBOT"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log in test output."""


@pytest.fixture
def bolt_url(fake: FakeSlack) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real Bolt app on 127.0.0.1 whose Web API is the fake; listeners append what they received."""
    seen: list[dict[str, Any]] = []
    app = App(client=WebClient(token=TOKEN, base_url=fake.base_url), signing_secret=SECRET)

    @app.command("/dr")
    def command(ack: Any, command: dict[str, Any]) -> None:
        ack(f"accepted: {command['text']}")
        seen.append(command)

    @app.action("approve")
    def approve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
        ack()
        seen.append(body)
        client.chat_update(channel=body["channel"]["id"], ts=body["container"]["message_ts"], text="approved")

    @app.event("app_mention")
    def mention(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        say(text="hello", thread_ts=event.get("thread_ts"))

    server = make_server("127.0.0.1", 0, SlackRequestHandler(app), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/slack/events", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_bolt_app_accepts_the_signed_requests(fake: FakeSlack, bolt_url: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = bolt_url
    status, body, _ = sr.send(url, sr.slash_command("status", user_id="U0ALICE", channel_id="C0INC"), secret=SECRET)
    assert (status, body) == (200, "accepted: status")
    assert seen[-1]["user_id"] == "U0ALICE"

    posted = WebClient(token=TOKEN, base_url=fake.base_url).chat_postMessage(channel="C0INC", text="card")
    click = sr.block_action(action_id="approve", value="req-1", user_id="U0BOB", channel_id="C0INC",
                            message_ts=posted["ts"])
    assert sr.send(url, click, secret=SECRET)[0] == 200
    fake.wait_for("chat.update")
    assert fake.message(posted["ts"])["text"] == "approved"

    mention = sr.app_mention("help", user_id="U0ALICE", channel_id="C0INC", ts="1.2", thread_ts="1.0")
    assert sr.send(url, sr.event_callback(mention, event_id="Ev1"), secret=SECRET)[0] == 200
    said = fake.wait_for("chat.postMessage", count=2)
    assert (said.params["text"], said.params["thread_ts"]) == ("hello", "1.0")

    status, body, _ = sr.post(url, sr.url_verification("abc"), sr.sign(sr.url_verification("abc"), SECRET))
    assert status == 200 and json.loads(body) == {"challenge": "abc"}


def test_a_bolt_app_refuses_bad_and_stale_signatures(bolt_url: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = bolt_url
    body = sr.slash_command("status", user_id="U0ALICE", channel_id="C0INC")
    assert sr.send(url, body, secret="wrong")[0] == 401
    assert sr.send(url, body, secret=SECRET, timestamp=int(time.time()) - 301)[0] == 401
    assert seen == []
