"""`drbot serve` as two processes: a front that verifies, acknowledges and queues; a worker that leads or stands by.

Slack gives an ack 3 seconds, and under load the ack's latency is set by whatever else holds the interpreter:
engine calls, DBOS, Web API posts. So the front (uvicorn, Starlette, Bolt's signature check, the listeners' ack
halves — or the Socket Mode connection —, PagerDuty webhooks, /healthz, /readyz, /metrics) runs in one process,
and the work in another, at a lower CPU priority.

Jobs never cross a pipe. The front puts each job it acknowledges into the database's jobs table
(`bot.jobqueue`) before the ack, so a job a front accepted is never lost, whatever dies next. The worker
process competes for leadership (`bot.leader`; on SQLite it leads alone): the leader launches DBOS (every
replica with the same executor id, so a new leader resumes every run in flight), claims the jobs, and runs the
Slack notifier, the PagerDuty mirror, the reconciler and the RTO budget warnings. A standby does nothing but
wait for the lock. A worker that loses the leadership — its session ended because it froze, or a write found
a newer epoch — exits at once with `STEPPED_DOWN`, and the front starts a fresh standby worker in its place.

The pipe between the two processes carries only control: "ready", and "settle" (tests and benchmarks).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings, load_config

if TYPE_CHECKING:
    from bot.jobqueue import Claimed, JobQueue
    from bot.leader import Leadership
    from bot.slack.app import Surface
    from runbooks.engine import Engine

log = logging.getLogger("drbot.serve")

WORKER_NICE = 10
"""How much lower the worker's CPU priority is: when both are runnable, the kernel runs the front first."""
HOLD = 0.25
"""Longest the leader leaves jobs unclaimed while its own front is answering requests."""
STEPPED_DOWN = 75
"""The worker's exit code when it lost the leadership: the front starts a fresh standby worker."""


# ----------------------------------------------------------------------------------------------- the worker


class Duties:
    """What only the leader does, started when this worker is elected: DBOS (resuming every run in flight), the
    job claimer, the notifier's catch-up, and a takeover line on the timeline of each run it resumed."""

    def __init__(self, *, engine: Engine, surface: Surface, settings: Settings, replica: str) -> None:
        from bot.jobqueue import JobQueue
        from bot.leader import Leadership

        self.engine = engine
        self.surface = surface
        self.settings = settings
        self.replica = replica
        self.queue: JobQueue = JobQueue(settings.drbot_database_url, replica=replica)
        self.leadership: Leadership | None = None
        if settings.drbot_database_url.startswith("postgresql"):
            self.leadership = Leadership(settings.drbot_database_url, replica=replica, on_elected=self.lead,
                                         on_lost=lambda epoch: step_down(f"lost the leadership (epoch {epoch})"),
                                         poll=settings.drbot_leader_poll, beat=settings.drbot_leader_beat,
                                         stale=settings.drbot_leader_stale)
        self.epoch: int | None = None
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def begin(self) -> None:
        """Stand by for the leadership (PostgreSQL), or lead at once (SQLite: one `drbot serve`)."""
        if self.leadership is None:
            self.lead(None)
            return
        self._spawn(self.leadership.run, "drbot-leadership")

    def lead(self, epoch: int | None) -> None:
        """Elected: take up the duties. If they cannot be taken up (the database failed in the middle of DBOS's
        launch, say), step down rather than hold the lock while doing nothing."""
        try:
            self._lead(epoch)
        except Exception as exc:
            log.exception("replica %s could not take up the leadership", self.replica)
            step_down(f"could not take up the leadership ({type(exc).__name__})")

    def _lead(self, epoch: int | None) -> None:
        from bot.leader import fence_dbos
        from bot.wiring import start_engine

        began = time.monotonic()
        previous = self.leadership.previous if self.leadership is not None else None
        self.epoch = epoch
        if epoch is not None:
            self.engine.fence_writes(self._fence)  # every write of this engine checks the epoch in its transaction
            fence_dbos(self.settings.drbot_database_url)  # and every write of DBOS checks who leads (before it resumes)
        start_engine(self.engine, settings=self.settings)
        if epoch is not None:
            fence_dbos(self.settings.drbot_database_url)  # the first launch created DBOS's tables just now
        self.surface.notifier.lead()  # posts what the last leader left unposted, then keeps catching up
        if previous is not None and previous != self.replica:
            resumed = self.engine.runs.taken_over(replica=self.replica, previous=previous, epoch=epoch or 0)
            log.warning("replica %s took over from %s (epoch %s) in %.2f s; resumed %s", self.replica, previous,
                        epoch, time.monotonic() - began, ", ".join(resumed) or "no run")
        for claimed in self.queue.interrupted(epoch=epoch, fence=self._fence if epoch else None):
            self._tell_interrupted(claimed)
        self.leading.set()
        self._spawn(self._claim_loop, "drbot-jobs")

    def _fence(self, conn: Any) -> None:
        from bot.leader import Fenced, fence

        assert self.epoch is not None
        try:
            fence(conn, epoch=self.epoch)
        except Fenced as exc:
            step_down(str(exc))
            raise

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            # While this replica's front is answering a burst, leave the jobs in the table for a moment (at most
            # HOLD): claiming and running them now would take the CPU from the acks (bench/bench_ack.py).
            self.surface.yield_to_acks(longest=HOLD)
            try:
                for claimed in self.queue.claim(epoch=self.epoch, fence=self._fence if self.epoch else None):
                    if claimed.job is not None:
                        self.surface.submit(claimed.job, done=_finisher(self.queue, claimed.id))
                    else:
                        self._tell(claimed, ":x: drbot could not read this request (it was queued by another "
                                            "drbot version during an upgrade), so nothing was done: please send "
                                            "it again.")
            except Exception:  # the database blinked: the jobs stay pending and the next round takes them
                log.exception("claiming jobs failed (error %s)", uuid.uuid4().hex[:8])
                self._stop.wait(1.0)
            self.queue.wait()

    def _tell_interrupted(self, claimed: Claimed) -> None:
        """A job the last leader began and never finished: say so to the person, never guess and re-run it."""
        from bot.slack.blocks_kit import esc
        from bot.slack.jobs import SlashCommand

        job = claimed.job
        log.error("job %s (%s, accepted by %s) was interrupted by the loss of the leader", claimed.id,
                  claimed.kind, claimed.front)
        what = f"`/dr {esc(job.text[:200])}`" if isinstance(job, SlashCommand) else "your request"
        self._tell(claimed, f":warning: drbot's leader stopped while it was carrying out {what}, and replica "
                            f"{self.replica} took over. It may or may not have taken effect: check `/dr status` "
                            f"before you try again.")

    def _tell(self, claimed: Claimed, text: str) -> None:
        if claimed.asker is None:
            return
        channel, user, response_url = claimed.asker
        try:
            self.surface.ephemeral(channel=channel, user=user, response_url=response_url, text=text)
        except Exception:
            log.exception("could not tell %s about job %s", user, claimed.id)

    def stop(self) -> None:
        """Hand over: stop claiming, stop DBOS (runs resume from their checkpoints on the next leader), post
        what is queued for a moment, release the lock."""
        self._stop.set()
        began = time.monotonic()
        if self.leading.is_set():
            self.surface.wait_idle(timeout=1.0)
            self.engine.stop(linger=0)  # this process exits right after: nothing to wait for
            self.surface.notifier.drain(timeout=0.5)
        if self.leadership is not None:
            self.leadership.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.leading.is_set():
            log.warning("replica %s hands over the leadership (stopped in %.2f s)", self.replica,
                        time.monotonic() - began)
        self.queue.close()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()


def _finisher(queue: JobQueue, job_id: int) -> Any:
    def done(error: str | None) -> None:
        try:
            queue.finish(job_id, error=error)
        except Exception:  # it stays "running": the next leader reports it as interrupted, never runs it twice
            log.exception("could not mark job %s finished", job_id)

    return done


def step_down(why: str) -> None:
    """This worker no longer leads: stop at once, before anything else is written or posted. The front starts a
    fresh standby in its place."""
    log.critical("stepping down: %s", why)
    logging.shutdown()
    os._exit(STEPPED_DOWN)


def worker_main(conn: Connection, config_path: str | None, shared: Any, replica: str) -> None:
    """The worker process: the engine and the Slack surface's background half, leading or standing by."""
    from bot.cli import configure_logging
    from bot.logs import name_replica

    configure_logging()
    name_replica(replica)
    with contextlib.suppress(OSError):  # not permitted here: still correct, only slower acks under load
        os.nice(WORKER_NICE)
    import dbos  # noqa: F401  (imported now, not in the moment of a takeover)

    from bot.leader import named_sessions
    from bot.slack.app import build_app
    from bot.wiring import build_engine

    settings = Settings()
    settings = settings.model_copy(update={
        "drbot_database_url": named_sessions(settings.drbot_database_url, replica=replica)})
    config = load_config(Path(config_path) if config_path else None)
    engine = build_engine(settings=settings, config=config)
    _, surface = build_app(engine, settings, default_channel=config.slack.get("incident_channel"), leading=False)
    surface.shared = shared  # the front's requests in flight: jobs and posts wait for a gap (see Surface)
    duties = Duties(engine=engine, surface=surface, settings=settings, replica=replica)
    duties.begin()
    conn.send(("ready",))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            if message[0] == "settle":
                _, token, timeout = message
                ok = duties.leading.is_set() and _settled(duties, timeout)
                conn.send(("settled", token, ok))
    finally:
        duties.stop()
        surface.close()
        # As `drbot shell` does: the state is durable, so do not wait for DBOS threads parked in waits.
        logging.shutdown()
        os._exit(0)


def _settled(duties: Duties, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while duties.queue.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    surface, engine = duties.surface, duties.engine
    return surface.wait_idle(timeout=timeout) and engine.wait_settled(timeout=timeout) \
        and surface.wait_idle(timeout=timeout) and surface.notifier.drain(timeout=timeout)


# ----------------------------------------------------------------------------------------------- the front


@dataclass
class _Waiter:
    done: threading.Event
    ok: bool = False


@dataclass
class Worker:
    """The front's handle on its worker process; a worker that stepped down is replaced by a fresh standby."""

    config_path: Path | None
    replica: str
    exit_on_loss: bool = True
    inflight: Any = None
    process: Any = None
    _conn: Any = None
    _waiters: dict[int, _Waiter] = field(default_factory=dict)
    _tokens: Any = field(default_factory=lambda: itertools.count(1))
    _send_lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: bool = False

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.inflight = self._context.Value("i", 0, lock=False)  # written by the front's event loop only
        self._start()

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self.process = self._context.Process(
            target=worker_main, name="drbot-worker", daemon=False,
            args=(child, str(self.config_path) if self.config_path else None, self.inflight, self.replica))
        self.process.start()
        child.close()
        if not self._conn.poll(120) or self._conn.recv() != ("ready",):
            self.process.kill()
            raise RuntimeError("the drbot worker process did not start; its error is above")
        threading.Thread(target=self._read, args=(self._conn, self.process), name="drbot-worker-reader",
                         daemon=True).start()

    restarting: bool = False
    """True while a worker that stepped down is being replaced (the front still queues jobs meanwhile)."""

    def alive(self) -> bool:
        """Whether the worker process runs (or is being replaced). Read from the process's sentinel, not from
        `is_alive()`: that one reaps the child with waitpid, and when the reader thread reaped it first it says
        "alive" about a dead process."""
        if self.restarting:
            return True
        return not multiprocessing.connection.wait([self.process.sentinel], timeout=0)

    def settle(self, timeout: float = 60.0) -> bool:
        """True once the leading worker has no job, run or Slack post in progress (tests and benchmarks); False
        on a standby."""
        token = next(self._tokens)
        waiter = _Waiter(threading.Event())
        self._waiters[token] = waiter
        with self._send_lock:
            self._conn.send(("settle", token, timeout))
        waiter.done.wait(timeout * 5 + 10)
        self._waiters.pop(token, None)
        return waiter.ok

    def _read(self, conn: Connection, process: Any) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "settled":
                waiter = self._waiters.get(message[1])
                if waiter is not None:
                    waiter.ok = bool(message[2])
                    waiter.done.set()
        if self._closing:
            return
        process.join(timeout=5)
        if process.exitcode == STEPPED_DOWN:
            self._replace()
            return
        log.critical("the drbot worker process stopped (exit code %s); stopping the front too so that a "
                     "supervisor restarts both (runs resume from their checkpoints on the leader)", process.exitcode)
        if self.exit_on_loss:
            os._exit(3)

    def _replace(self) -> None:
        """A fresh standby worker for one that stepped down; while the database does not answer (the usual
        reason a leader loses its session), try again with a growing pause."""
        self.restarting = True
        delay = 1.0
        try:
            while not self._closing:
                log.warning("the worker stepped down; starting a fresh standby worker")
                try:
                    self._start()
                    return
                except Exception as exc:
                    log.error("could not start a standby worker (%s: %s); trying again in %.0f s",
                              type(exc).__name__, exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            self.restarting = False

    def close(self) -> None:
        self._closing = True
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
    surface: Surface
    bolt_app: Any
    queue: JobQueue

    def close(self) -> None:
        self.worker.close()
        self.surface.close()
        self.queue.close()
        self.surface.engine.close()


def build_front(*, settings: Settings, config_path: Path | None, exit_on_loss: bool = True,
                replica: str | None = None) -> Front:
    """The worker (started first, so that on SQLite runs in flight resume before requests arrive) and the ASGI
    app in front, whose listeners put their jobs in the jobs table."""
    from bot.http import build_asgi
    from bot.jobqueue import JobQueue
    from bot.leader import Standing
    from bot.replica import replica_id
    from bot.slack.app import build_app
    from bot.wiring import build_engine, pagerduty_webhook

    replica = replica or replica_id(settings)
    config = load_config(config_path)
    worker = Worker(config_path=config_path, replica=replica, exit_on_loss=exit_on_loss)
    queue = JobQueue(settings.drbot_database_url, replica=replica)
    engine = build_engine(settings=settings, config=config)  # never started: DBOS lives in the leading worker
    bolt_app, surface = build_app(engine, settings, default_channel=config.slack.get("incident_channel"),
                                  forward=queue.put)
    surface.shared = worker.inflight
    standing = Standing(settings.drbot_database_url, replica=replica, alive=worker.alive, queue=queue,
                        stale=settings.drbot_leader_stale)
    surface.metrics.standing = standing
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    asgi = build_asgi(engine=engine, bolt_app=bolt_app, surface=surface, signing_secret=secret,
                      pagerduty=pagerduty_webhook(engine, settings), alive=worker.alive, standing=standing)
    # Everything built so far lives as long as the process: keep the cyclic GC from walking it again and again
    # while requests are being acknowledged.
    gc.collect()
    gc.freeze()
    return Front(asgi=asgi, worker=worker, surface=surface, bolt_app=bolt_app, queue=queue)
