"""`drbot serve` over HTTP as two processes: a front that verifies and acknowledges, a worker that does the work.

Slack gives an ack 3 seconds, and under load the ack's latency is set by whatever else holds the interpreter:
engine calls, DBOS, Web API posts. In one process they share the GIL with the threads answering Slack, however
politely they yield. So the front (uvicorn, Starlette, Bolt's signature check, the listeners' ack halves,
PagerDuty webhooks, /healthz, /metrics) sends each listener's job (`bot.slack.jobs`) down a pipe to a
worker process that runs the engine, DBOS, the Slack notifier and the PagerDuty mirror, at a lower CPU priority.

Nothing durable lives in the pipe: a job is the part after the ack, exactly what a single process would have
held in its thread pool. If the worker stops, the front exits too (a supervisor restarts both; runs resume from
their DBOS checkpoints), rather than acknowledging requests that nobody will act on.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings, load_config

if TYPE_CHECKING:
    from bot.slack.jobs import Job

log = logging.getLogger("drbot.serve")

HOLD = 0.25
"""Longest a job waits in the front for a gap in requests before it is sent to the worker anyway."""
WORKER_NICE = 10
"""How much lower the worker's CPU priority is: when both are runnable, the kernel runs the front first."""


def worker_main(conn: Connection, config_path: str | None, shared: Any = None) -> None:
    """The worker process: the engine and the Slack surface's background half, fed by the front's jobs."""
    from bot.cli import configure_logging

    configure_logging()
    with contextlib.suppress(OSError):  # not permitted here: still correct, only slower acks under load
        os.nice(WORKER_NICE)
    from bot.slack.app import build_app
    from bot.wiring import build_engine, start_engine

    settings = Settings()
    config = load_config(Path(config_path) if config_path else None)
    engine = build_engine(settings=settings, config=config)
    _, surface = build_app(engine, settings, default_channel=config.slack.get("incident_channel"))
    surface.shared = shared  # the front's requests in flight: jobs and posts wait for a gap (see Surface)
    start_engine(engine, settings=settings)
    conn.send(("ready",))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            if message[0] == "jobs":
                for job in message[1]:
                    surface.submit(job)
            elif message[0] == "settle":
                _, token, timeout = message
                ok = surface.wait_idle(timeout=timeout) and engine.wait_settled(timeout=timeout) \
                    and surface.wait_idle(timeout=timeout) and surface.notifier.drain(timeout=timeout)
                conn.send(("settled", token, ok))
    finally:
        surface.close()
        engine.stop()
        # As `drbot shell` and one-process `serve` do: the state is durable, so do not wait for DBOS threads
        # parked in waits to notice the shutdown.
        logging.shutdown()
        os._exit(0)


@dataclass
class _Waiter:
    done: threading.Event
    ok: bool = False


class Worker:
    """The front's handle on the worker process."""

    def __init__(self, *, config_path: Path | None, exit_on_loss: bool = True) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child = context.Pipe()
        self.inflight = context.Value("i", 0, lock=False)  # written by the front's event loop only
        self.process = context.Process(target=worker_main, name="drbot-worker", daemon=False,
                                       args=(child, str(config_path) if config_path else None, self.inflight))
        self.process.start()
        child.close()
        self.exit_on_loss = exit_on_loss
        self._send_lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._tokens = itertools.count(1)
        self._closing = False
        if not self._conn.poll(120) or self._conn.recv() != ("ready",):
            self.process.kill()
            raise RuntimeError("the drbot worker process did not start; its error is above")
        self._reader = threading.Thread(target=self._read, name="drbot-worker-reader", daemon=True)
        self._reader.start()
        self._pending: list[Job] = []
        self._pending_lock = threading.Lock()
        self._has_pending = threading.Event()
        self._sender = threading.Thread(target=self._send_pending, name="drbot-worker-sender", daemon=True)
        self._sender.start()

    def alive(self) -> bool:
        return self.process.is_alive()

    def forward(self, job: Job) -> None:
        """Queue a job for the worker. The sender thread passes queued jobs on in batches, once the front has
        a gap in its requests (or `HOLD` seconds after the first one), so a burst of acks is not interleaved
        with pipe writes and worker wake-ups."""
        with self._pending_lock:
            self._pending.append(job)
            self._has_pending.set()

    def _send_pending(self) -> None:
        while not self._closing:
            self._has_pending.wait()
            deadline = time.monotonic() + HOLD
            while self.inflight.value > 0 and time.monotonic() < deadline and not self._closing:
                time.sleep(0.005)
            with self._send_lock:  # taken first: a `settle` sent after this batch is read after it
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                    self._has_pending.clear()
                try:
                    if batch:
                        self._conn.send(("jobs", batch))
                except OSError:  # the worker is gone: `_read` reports it and stops the front
                    return

    def settle(self, timeout: float = 60.0) -> bool:
        """True once the worker has no job, run or Slack post in progress (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._has_pending.is_set() and time.monotonic() < deadline:  # queued jobs go first
            time.sleep(0.005)
        token = next(self._tokens)
        waiter = _Waiter(threading.Event())
        self._waiters[token] = waiter
        with self._send_lock:
            self._conn.send(("settle", token, timeout))
        waiter.done.wait(timeout * 4 + 10)
        self._waiters.pop(token, None)
        return waiter.ok

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "settled":
                waiter = self._waiters.get(message[1])
                if waiter is not None:
                    waiter.ok = bool(message[2])
                    waiter.done.set()
        if not self._closing:
            self.process.join(timeout=5)
            log.critical("the drbot worker process stopped (exit code %s); stopping the front too so that a "
                         "supervisor restarts both (runs resume from their checkpoints)", self.process.exitcode)
            if self.exit_on_loss:
                os._exit(3)

    def close(self) -> None:
        deadline = time.monotonic() + 5
        while self._has_pending.is_set() and time.monotonic() < deadline:  # hand over what was acknowledged
            time.sleep(0.005)
        self._closing = True
        self._has_pending.set()
        try:
            with self._send_lock:
                self._conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)


@dataclass
class Front:
    asgi: Any
    worker: Worker
    surface: Any

    def close(self) -> None:
        self.worker.close()
        self.surface.close()
        self.surface.engine.close()


def build_front(*, settings: Settings, config_path: Path | None, exit_on_loss: bool = True,
                replica: str | None = None) -> Front:
    """The worker (started first, so runs in flight resume before requests arrive) and the ASGI app in front."""
    from bot.http import build_asgi
    from bot.slack.app import build_app
    from bot.wiring import build_engine, pagerduty_webhook

    config = load_config(config_path)
    worker = Worker(config_path=config_path, exit_on_loss=exit_on_loss)
    engine = build_engine(settings=settings, config=config)  # never started: DBOS lives in the worker
    bolt_app, surface = build_app(engine, settings, default_channel=config.slack.get("incident_channel"),
                                  forward=worker.forward)
    surface.shared = worker.inflight
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    asgi = build_asgi(engine=engine, bolt_app=bolt_app, surface=surface, signing_secret=secret,
                      pagerduty=pagerduty_webhook(engine, settings), alive=worker.alive, replica=replica)
    # Everything built so far lives as long as the process: keep the cyclic GC from walking it again and again
    # while requests are being acknowledged.
    gc.collect()
    gc.freeze()
    return Front(asgi=asgi, worker=worker, surface=surface)
