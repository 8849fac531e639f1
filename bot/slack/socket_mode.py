"""Socket Mode: the same Bolt app, reached over an outbound WebSocket instead of inbound HTTP."""

from __future__ import annotations

from typing import Any


def open_socket_mode(bolt_app: Any, *, app_token: str) -> Any:
    """Connect (non-blocking) and return the handler; `close()` it on shutdown."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(bolt_app, app_token)
    handler.connect()  # type: ignore[no-untyped-call]
    return handler
