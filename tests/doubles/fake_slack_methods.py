"""The Web API methods FakeSlack answers, each as Slack documents its response and its common errors.

Kept apart from the server so that adding a method is one function plus one line in HANDLERS. Errors are
`{"ok": false, "error": ...}` with HTTP 200, as Slack sends them; the fake checks only what drbot could get
wrong (a missing channel, an unknown ts, an unknown group), not every argument Slack validates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.doubles.fake_slack import FakeSlack

Answer = dict[str, Any]


def decoded(value: Any) -> Any:
    """Form bodies carry structured params (`blocks`, `files`, `attachments`) as JSON strings."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _error(error: str) -> Answer:
    return {"ok": False, "error": error}


def auth_test(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    return {"ok": True, "url": f"https://{fake.team_domain}.slack.com/", "team": fake.team_domain,
            "user": "drbot", "team_id": fake.team_id, "user_id": fake.bot_user_id, "bot_id": fake.bot_id,
            "is_enterprise_install": False}


def _content(params: dict[str, Any]) -> dict[str, Any]:
    found = {k: decoded(params[k]) for k in ("text", "blocks", "attachments") if params.get(k) not in (None, "")}
    return found


def chat_post_message(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    channel = str(params.get("channel") or "")
    if not channel:
        return _error("channel_not_found")
    content = _content(params)
    if not content:
        return _error("no_text")
    metadata = decoded(params.get("metadata"))
    if metadata is not None and not (isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str)
                                     and isinstance(metadata.get("event_payload"), dict)):
        return _error("invalid_metadata_format")
    ts = fake.next_ts()
    message: dict[str, Any] = {"type": "message", "user": fake.bot_user_id, "bot_id": fake.bot_id, "ts": ts,
                               "text": "", **content}
    if params.get("thread_ts"):
        message["thread_ts"] = str(params["thread_ts"])
    if metadata is not None:
        message["metadata"] = metadata
    fake.store_message({**message, "channel": channel})
    return {"ok": True, "channel": channel, "ts": ts, "message": message}


def chat_update(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
    if not channel:
        return _error("channel_not_found")
    try:
        current = fake.message(ts)
    except KeyError:
        return _error("message_not_found")
    if current["channel"] != channel:
        return _error("message_not_found")
    content = _content(params)
    if not content:
        return _error("no_text")
    updated = {**current, **content}
    fake.store_message(updated)
    message = {k: v for k, v in updated.items() if k != "channel"}
    return {"ok": True, "channel": channel, "ts": ts, "text": updated.get("text", ""), "message": message}


def chat_post_ephemeral(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    channel, user = str(params.get("channel") or ""), str(params.get("user") or "")
    if not channel:
        return _error("channel_not_found")
    if not user:
        return _error("user_not_found")
    content = _content(params)
    if not content:
        return _error("no_text")
    ts = fake.next_ts()
    with fake.lock:
        fake.ephemerals.append({"channel": channel, "user": user, "message_ts": ts,
                                "thread_ts": params.get("thread_ts"), **content})
    return {"ok": True, "message_ts": ts}


def _page(fake: FakeSlack, found: list[dict[str, Any]], params: dict[str, Any]) -> Answer:
    """One page of `found` (cursor = the offset, as an opaque string), each message as the reader sees it:
    without `channel`, and without `metadata` unless `include_all_metadata` was asked for (Slack's default)."""
    with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
    limit = int(str(params.get("limit") or 100))
    cursor = str(params.get("cursor") or "")
    start = int(cursor.removeprefix("offset:")) if cursor.startswith("offset:") else 0
    shown = [{k: v for k, v in m.items() if k != "channel" and (with_metadata or k != "metadata")}
             for m in found[start:start + limit]]
    more = start + limit < len(found)
    return {"ok": True, "messages": shown, "has_more": more,
            "response_metadata": {"next_cursor": f"offset:{start + limit}" if more else ""}}


def conversations_replies(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    """The parent and its replies, oldest first."""
    channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
    if not channel:
        return _error("channel_not_found")
    in_channel = fake.messages(channel=channel)
    if not any(m["ts"] == ts for m in in_channel):
        return _error("thread_not_found")
    thread = [m for m in in_channel if m["ts"] == ts or m.get("thread_ts") == ts]
    return _page(fake, sorted(thread, key=lambda m: float(m["ts"])), params)


def conversations_history(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    """The channel's top-level messages, newest first (replies stay in their threads)."""
    channel = str(params.get("channel") or "")
    if not channel:
        return _error("channel_not_found")
    top = [m for m in fake.messages(channel=channel) if m.get("thread_ts") in (None, m["ts"])]
    return _page(fake, sorted(top, key=lambda m: float(m["ts"]), reverse=True), params)


def files_get_upload_url_external(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    from tests.doubles.fake_slack import Upload

    filename, length = params.get("filename"), str(params.get("length") or "")
    if not filename or not length.isdigit():
        return _error("invalid_arguments")
    file_id = fake.next_file_id()
    with fake.lock:
        fake.uploads[file_id] = Upload(file_id=file_id, filename=str(filename), length=int(length))
    return {"ok": True, "upload_url": f"{fake.url}/upload/{file_id}", "file_id": file_id}


def files_complete_upload_external(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    wanted = decoded(params.get("files"))
    if not isinstance(wanted, list) or not wanted:
        return _error("invalid_arguments")
    shared: list[Answer] = []
    with fake.lock:
        for item in wanted:
            upload = fake.uploads.get(str(item.get("id")))
            if upload is None:
                return _error("file_not_found")
            upload.title = str(item.get("title") or upload.filename)
            upload.channel_id = params.get("channel_id") or params.get("channels")
            upload.thread_ts = params.get("thread_ts")
            upload.initial_comment = params.get("initial_comment")
            upload.completed = True
            shared.append({"id": upload.file_id, "title": upload.title, "name": upload.filename,
                           "size": len(upload.content or b"")})
    return {"ok": True, "files": shared}


def usergroups_users_list(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    group = str(params.get("usergroup") or "")
    if group not in fake.groups:
        return _error("no_such_subteam")
    return {"ok": True, "users": list(fake.groups[group])}


def users_info(fake: FakeSlack, params: dict[str, Any]) -> Answer:
    user_id = str(params.get("user") or "")
    known = fake.users.get(user_id)
    if known is None:
        return _error("user_not_found")
    real_name = known if isinstance(known, str) else str(known.get("real_name", user_id))
    name = real_name.split()[0].lower() if real_name.strip() else user_id.lower()
    user: dict[str, Any] = {"id": user_id, "team_id": fake.team_id, "name": name, "real_name": real_name,
                            "is_bot": False, "profile": {"display_name": name, "real_name": real_name}}
    if isinstance(known, dict):
        user.update(known)
    return {"ok": True, "user": user}


HANDLERS: dict[str, Callable[[FakeSlack, dict[str, Any]], Answer]] = {
    "auth.test": auth_test,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.postEphemeral": chat_post_ephemeral,
    "conversations.history": conversations_history,
    "conversations.replies": conversations_replies,
    "files.getUploadURLExternal": files_get_upload_url_external,
    "files.completeUploadExternal": files_complete_upload_external,
    "usergroups.users.list": usergroups_users_list,
    "users.info": users_info,
}
