"""The ASGI app (`POST /slack/events`, `POST /pagerduty/webhook`, `GET /healthz`, `GET /metrics`) and the server
settings it runs under (`server_config`).

Each POST is taken at the door (see `bot.door`): the body is read under a cap and a deadline, Slack's signature
is checked on the raw bytes, and only then is the body decoded and handed to Bolt (whose own signature check
stays as a second line), with the request's `Delivery` in its context: the work the listeners submit claims it
before running, so a replayed request is acknowledged as the first was and runs nothing. A request counts as
in flight (`Surface.enter`, which background work yields to) only from then on: a slow or stalled upload holds
nobody up.

Bolt's own Starlette adapter runs `App.dispatch` on the event loop, which serves Slack's requests one at a time;
here dispatch runs in a worker thread so concurrent clicks and commands are acknowledged concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import h11
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from bot.door import DELIVERY, Delivery, Refused, check_slack_body, read_body, verify_slack

if TYPE_CHECKING:
    from bot.leader import Standing
    from bot.pagerduty import PagerDutyWebhook
    from bot.slack.app import Surface
    from runbooks.engine import Engine

log = logging.getLogger("drbot.http")

HEAD_TIMEOUT = 10.0
"""Seconds a connection gets to send a complete request head (request line and headers)."""
KEEP_ALIVE = 5
"""Seconds an idle keep-alive connection is kept after a response."""
MAX_CONNECTIONS = 200
"""Connections (and requests in progress) at once; beyond it uvicorn answers 503 and Slack retries."""
MAX_HEAD = 16 * 1024
"""Largest request head, bytes (h11 answers 400 beyond it)."""


def build_asgi(*, engine: Engine, bolt_app: Any, surface: Surface, pagerduty: PagerDutyWebhook | None = None,
               alive: Callable[[], bool] | None = None, signing_secret: str | None = None,
               standing: Standing | None = None) -> Starlette:
    """`alive`: whether the worker process (two-process `drbot serve`) is running, for /healthz. `standing`:
    this replica's id, its role and the leader's id, which /healthz and /readyz report (`bot.leader.Standing`).
    `signing_secret`: SLACK_SIGNING_SECRET; by default the one the Bolt app was built with (`build_app`). Without
    one (Socket Mode), /slack/events refuses every request."""
    import sys

    from slack_bolt.request import BoltRequest

    if alive is None:
        # One process: background work (engine calls, Web API posts) shares the GIL with the threads that ack
        # Slack. A shorter switch interval lets an ack thread in sooner, which is what Slack's 3 s rule cares
        # about. (The two-process front has no background work to interrupt.)
        sys.setswitchinterval(0.0005)
    if pagerduty is not None:
        surface.metrics.webhooks = pagerduty.counts
    secret = signing_secret if signing_secret is not None else getattr(bolt_app, "_signing_secret", None)

    def take(body: bytes, timestamp: int, headers: dict[str, str], query: str) -> Response:
        """In a worker thread: parse what was verified and dispatch it, its delivery in the Bolt context."""
        text = check_slack_body(body, content_type=headers.get("content-type"))
        bolt_headers: dict[str, str | Sequence[str]] = dict(headers)
        delivery = Delivery(signature=headers["x-slack-signature"], timestamp=timestamp)
        answer = bolt_app.dispatch(BoltRequest(body=text, query=query, headers=bolt_headers,
                                               context={DELIVERY: delivery}))
        sent = {k: v[0] for k, v in answer.headers.items() if v and k.lower() != "content-length"}
        return Response(content=answer.body, status_code=answer.status, headers=sent)

    async def slack_events(request: Request) -> Response:
        headers = dict(request.headers.items())
        try:
            body = await read_body(request)
            timestamp = verify_slack(body, timestamp=headers.get("x-slack-request-timestamp"),
                                     signature=headers.get("x-slack-signature"), secret=secret)
        except Refused as refused:
            return _refuse(request, refused)
        surface.enter()  # from here on, background work yields to this request
        try:
            answer = await anyio.to_thread.run_sync(take, body, timestamp, headers, request.url.query)
        except Refused as refused:
            return _refuse(request, refused)
        finally:
            surface.leave()
        return answer

    async def pagerduty_webhook(request: Request) -> Response:
        if pagerduty is None:
            return JSONResponse({"error": "PagerDuty webhooks are not enabled: set PAGERDUTY_WEBHOOK_SECRETS"},
                                status_code=404)
        try:
            body = await read_body(request)
        except Refused as refused:
            return _refuse(request, refused)
        surface.enter()  # the thread's posts wait while webhooks are being taken (see Surface)
        try:
            signature = request.headers.get("x-pagerduty-signature")
            result = await anyio.to_thread.run_sync(lambda: pagerduty.handle(body=body, signature=signature))
        finally:
            surface.leave()
        if result.status >= 400:
            _log_refusal(request, result.status, str(result.body.get("error", "")))
        return JSONResponse(result.body, status_code=result.status)

    def named() -> dict[str, Any]:
        """Who this replica is and who leads (nothing when served without a `standing`, e.g. in tests)."""
        return standing.view() if standing is not None else {}

    async def healthz(_: Request) -> Response:
        """Liveness: 503 only when the worker process is gone for good (a restart is the cure). A database that
        does not answer is reported, not failed: restarting every replica would not bring it back."""
        mine = {"replica": standing.replica} if standing is not None else {}
        if alive is not None and not alive():
            return JSONResponse({"ok": False, "worker": "stopped", **mine}, status_code=503)
        try:
            await anyio.to_thread.run_sync(engine.queries.ping)
            about = await anyio.to_thread.run_sync(named)
        except Exception as exc:
            unknown = {"role": "standby", "leader": None} if standing is not None else {}
            return JSONResponse({"ok": True, "database": type(exc).__name__, **mine, **unknown})
        return JSONResponse({"ok": True, **about})

    async def readyz(_: Request) -> Response:
        """Whether this replica accepts traffic (a load balancer's readiness probe): every replica's front does,
        leader or standby, while its worker lives and the database answers (jobs wait there for the leader)."""
        mine = {"replica": standing.replica} if standing is not None else {}
        if alive is not None and not alive():
            return JSONResponse({"ok": False, "ready": False, "worker": "stopped", **mine}, status_code=503)
        try:
            await anyio.to_thread.run_sync(engine.queries.ping)
            about = await anyio.to_thread.run_sync(named)
        except Exception as exc:  # the jobs could not be queued: send Slack and PagerDuty to another replica
            return JSONResponse({"ok": False, "ready": False, "database": type(exc).__name__, **mine},
                                status_code=503)
        return JSONResponse({"ok": True, "ready": True, **about})

    async def metrics(_: Request) -> Response:
        text = await anyio.to_thread.run_sync(surface.metrics.render)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/slack/events", slack_events, methods=["POST"]),
                             Route("/pagerduty/webhook", pagerduty_webhook, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"]),
                             Route("/readyz", readyz, methods=["GET"]),
                             Route("/metrics", metrics, methods=["GET"])])


def _refuse(request: Request, refused: Refused) -> Response:
    _log_refusal(request, refused.status, refused.reason)
    # After a 408 or 413 the rest of the body is never read: the connection cannot be reused.
    headers = {"connection": "close"} if refused.status in (408, 413) else None
    return JSONResponse({"error": refused.reason}, status_code=refused.status, headers=headers)


def _log_refusal(request: Request, status: int, reason: str) -> None:
    """One line, no traceback, never the body."""
    client = request.client.host if request.client else "?"
    log.warning("refused %s %s from %s (HTTP %d): %.300s", request.method, request.url.path, client, status, reason)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the deadline it lacks: a request head must be complete within HEAD_TIMEOUT
    of the connection being made, or of the first byte of the next request on a kept-alive connection.

    uvicorn closes a connection left idle after a response (`timeout_keep_alive`), but waits forever for a new
    connection's first byte and for a head sent a byte at a time; with this, such a connection is closed and
    costs a file descriptor for 10 s at most. (A body sent slowly is the route's to bound: see `read_body`.)"""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._watch_head()  # part of a head: the clock runs from its first byte
        else:
            self._stop_watching()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_too_slow)

    def _stop_watching(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            client = self.client[0] if self.client else "?"
            log.warning("closed a connection from %s: no complete request head within %g s", client, HEAD_TIMEOUT)
            self.transport.close()


def server_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    """How `drbot serve` runs uvicorn (and the tests that serve it for real).

    Bounded here: the request head (HEAD_TIMEOUT, MAX_HEAD), idle keep-alive (KEEP_ALIVE), connections and
    requests at once (MAX_CONNECTIONS). Bounded by the routes: the body (`bot.door.MAX_BODY`, `BODY_TIMEOUT`).
    Not bounded: how slowly a response is read (uvicorn stops writing once its buffer is full, so a slow reader
    costs a connection slot, not memory), and a flood of connections below MAX_CONNECTIONS, each bounded by the
    deadlines above — that is for the proxy or load balancer in front."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=BoundedH11Protocol,
                          timeout_keep_alive=KEEP_ALIVE, limit_concurrency=MAX_CONNECTIONS,
                          h11_max_incomplete_event_size=MAX_HEAD)
