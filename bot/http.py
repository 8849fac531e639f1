"""The ASGI app: `POST /slack/events`, `POST /pagerduty/webhook`, `GET /healthz`, `GET /metrics`.

Bolt's own Starlette adapter runs `App.dispatch` on the event loop, which serves Slack's requests one at a time;
here dispatch runs in a worker thread so concurrent clicks and commands are acknowledged concurrently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from bot.pagerduty import PagerDutyWebhook
    from bot.slack.app import Surface
    from runbooks.engine import Engine


def build_asgi(*, engine: Engine, bolt_app: Any, surface: Surface, pagerduty: PagerDutyWebhook | None = None,
               alive: Callable[[], bool] | None = None) -> Starlette:
    """`alive`: whether the worker process (two-process `drbot serve`) is running, for /healthz."""
    import sys

    from slack_bolt.request import BoltRequest

    if alive is None:
        # One process: background work (engine calls, Web API posts) shares the GIL with the threads that ack
        # Slack. A shorter switch interval lets an ack thread in sooner, which is what Slack's 3 s rule cares
        # about. (The two-process front has no background work to interrupt.)
        sys.setswitchinterval(0.0005)
    if pagerduty is not None:
        surface.metrics.webhooks = pagerduty.counts

    async def slack_events(request: Request) -> Response:
        surface.enter()
        try:
            body = (await request.body()).decode("utf-8")
            bolt_request = BoltRequest(body=body, query=request.url.query,
                                       headers={k: v for k, v in request.headers.items()})
            bolt_response = await anyio.to_thread.run_sync(bolt_app.dispatch, bolt_request)
        finally:
            surface.leave()
        headers = {k: v[0] for k, v in bolt_response.headers.items() if v and k.lower() != "content-length"}
        return Response(content=bolt_response.body, status_code=bolt_response.status, headers=headers)

    async def pagerduty_webhook(request: Request) -> Response:
        if pagerduty is None:
            return JSONResponse({"error": "PagerDuty webhooks are not enabled: set PAGERDUTY_WEBHOOK_SECRETS"},
                                status_code=404)
        surface.enter()  # the thread's posts wait while webhooks are being taken (see Surface)
        try:
            body = await request.body()
            result = await anyio.to_thread.run_sync(
                lambda: pagerduty.handle(body=body, signature=request.headers.get("x-pagerduty-signature")))
        finally:
            surface.leave()
        return JSONResponse(result.body, status_code=result.status)

    async def healthz(_: Request) -> Response:
        if alive is not None and not alive():
            return JSONResponse({"ok": False, "worker": "stopped"}, status_code=503)

        def probe() -> None:
            with engine.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        try:
            await anyio.to_thread.run_sync(probe)
        except Exception as exc:  # the database is what a restart cannot fix by itself: say so
            return JSONResponse({"ok": False, "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True})

    async def metrics(_: Request) -> Response:
        text = await anyio.to_thread.run_sync(surface.metrics.render)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/slack/events", slack_events, methods=["POST"]),
                             Route("/pagerduty/webhook", pagerduty_webhook, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"]),
                             Route("/metrics", metrics, methods=["GET"])])
