"""Jobs from any replica's front to the leader, through the database: a job a front acknowledged is never lost.

A front (`drbot serve`'s HTTP or Socket Mode half, on any replica) turns each request it acknowledges into a
job (`bot.slack.jobs`) and `put`s it here before the ack is sent. The leader's worker `claim`s pending jobs —
on PostgreSQL with `FOR UPDATE SKIP LOCKED`, woken by `NOTIFY drbot_jobs` (and a poll as a safety net) — runs
them and marks them done. So a job accepted while no replica leads, or while the leader is dying, waits here
until a leader runs it.

A replay is refused at the door of the queue: `once` (the signature of the Slack request the job answers) is
unique, so the same signed bytes sent again, to any replica, add nothing (`put` says False).

A job a leader claimed but never finished (it died, or was fenced, in the middle) is not run again blindly:
a command might have half happened. The next leader takes such jobs with `interrupted()` and tells the person
(see `bot.serve`); only jobs that are safe to repeat (showing a stored event) are run again.

On SQLite (one `drbot serve`) the jobs live in a sibling file (`drbot.db` → `drbot.jobs.db`), so the front's
insert on the ack path never waits for the engine's writes to the main database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runbooks.sqldb import WRITE, create_tables, make_engine

if TYPE_CHECKING:
    from bot.slack.jobs import Job

log = logging.getLogger("drbot.jobs")

__all__ = ["CHANNEL", "Claimed", "JobQueue", "jobs_url"]

CHANNEL = "drbot_jobs"
"""The PostgreSQL NOTIFY channel a front rings after adding a job."""
KEEP = 3600.0
"""Seconds a finished job is kept (its `once` refuses replays meanwhile; Slack's own window is 5 minutes)."""

jobs_table = sa.Table(
    "drbot_jobs", sa.MetaData(),
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("once", sa.String(200), unique=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("front", sa.String(200), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("epoch", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("claimed_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("asker", sa.JSON),
    sa.Index("drbot_jobs_state", "state", "id"),
)

PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"
COLUMNS = ("once", "kind", "payload", "front", "state", "created_at", "asker")
INSERT_POSTGRES = (
    "WITH ins AS (INSERT INTO drbot_jobs (once, kind, payload, front, state, created_at, asker) "
    "SELECT * FROM unnest(%(once)s::varchar[], %(kind)s::varchar[], %(payload)s::bytea[], %(front)s::varchar[], "
    "%(state)s::varchar[], %(created_at)s::float8[], %(asker)s::json[]) "
    f"ON CONFLICT DO NOTHING RETURNING once) SELECT once, pg_notify('{CHANNEL}', '') FROM ins")
INSERT_SQLITE = ("INSERT INTO drbot_jobs (once, kind, payload, front, state, created_at, asker) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING once")
REPEATABLE = frozenset({"Publish"})
"""Job kinds that may run twice without harm (their effects are claimed once further down)."""


def _disconnected(exc: Exception) -> bool:
    """Whether `exc` says the connection is gone (worth one more try on a new one), not that the insert is wrong."""
    try:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return True
    except ImportError:
        pass
    return False


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def jobs_url(database_url: str) -> str:
    """PostgreSQL: drbot's own database. SQLite: a sibling file (`drbot.db` → `drbot.jobs.db`)."""
    if not database_url.startswith("sqlite"):
        return database_url
    prefix, _, path = database_url.partition(":///")
    if not path or path == ":memory:":
        return database_url
    p = Path(path)
    return f"{prefix}:///{p.with_name(p.stem + '.jobs' + (p.suffix or '.db'))}"


@dataclass
class _Put:
    values: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    added: bool = False
    error: Exception | None = None


@dataclass(frozen=True)
class Claimed:
    id: int
    job: Job | None
    """None when the payload could not be read (a job written by another drbot version): failed, with why."""
    kind: str
    front: str
    epoch: int | None
    asker: tuple[str, str, str | None] | None = None
    """(channel, user, response_url) of the person the job answers, kept apart from the payload so that they
    can be told even when the payload cannot be read."""


class JobQueue:
    """The jobs table of one database. `fence(conn)`: called inside the leader's claim transaction, raising
    when this replica no longer leads (`bot.leader.fence`), so a frozen ex-leader claims nothing."""

    def __init__(self, database_url: str, *, replica: str, poll: float = 0.02) -> None:
        url = jobs_url(database_url)
        self.replica = replica
        self.postgres = url.startswith("postgresql")
        self.poll = poll if not self.postgres else 1.0
        self.engine = make_engine(url, pool_size=10, max_overflow=20)
        create_tables(self.engine, jobs_table.metadata)
        self._listener: Any = None
        self._pruned = 0.0
        self._lock = threading.Lock()
        self._batch: list[_Put] = []
        self._batch_ready = threading.Condition()
        self._writer: threading.Thread | None = None
        self._raw: Any = None
        """The writer thread's own connection (psycopg or sqlite3)."""

    # ------------------------------------------------------------------------------------------- the front

    def put(self, job: Job) -> bool:
        """Add `job` (before its request is acknowledged); True once it is committed. False when its Slack
        request was seen before (a replay): nothing is added.

        Puts made at the same moment (a burst of acks) are committed together by one writer thread, in one
        multi-row INSERT (and one NOTIFY): each ack still waits for its own job to be durable, but a burst costs
        one transaction instead of one each, and on SQLite the front's threads never wait in its busy handler."""
        from bot.slack.jobs import asker

        person = asker(job)
        pending = _Put(values={
            "once": job.once.signature if job.once is not None else None, "kind": type(job).__name__,
            "payload": pickle.dumps(dataclasses.replace(job, once=None), protocol=pickle.HIGHEST_PROTOCOL),
            "front": self.replica, "state": PENDING, "created_at": time.time(),
            "asker": list(person) if person else None})
        with self._batch_ready:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_batches, name="drbot-jobs-writer", daemon=True)
                self._writer.start()
            self._batch.append(pending)
            self._batch_ready.notify()
        if not pending.done.wait(timeout=30):
            raise TimeoutError("the jobs table did not take the job within 30 s")
        if pending.error is not None:
            raise pending.error
        return pending.added

    def _write_batches(self) -> None:
        while True:
            with self._batch_ready:
                while not self._batch:
                    self._batch_ready.wait()
                batch, self._batch = self._batch, []
            try:
                self._insert(batch)
            except Exception as exc:  # each waiting ack raises it: its person is told nothing was done
                for pending in batch:
                    pending.error = exc
            for pending in batch:
                pending.done.set()

    def _insert(self, batch: list[_Put]) -> None:
        """One statement whose text never changes, on a connection of the writer thread's own (no pool, no
        SQL compiler: this is on the ack path). PostgreSQL: one round trip in autocommit, the rows as arrays and
        the NOTIFY in the same prepared statement. SQLite: one transaction."""
        rows = [p.values for p in batch]
        for attempt in (1, 2):
            try:
                inserted = self._insert_postgres(rows) if self.postgres else self._insert_sqlite(rows)
                break
            except Exception as exc:
                self._close_raw()  # a connection the database closed (it restarted, or failed over): afresh
                if attempt == 2 or not _disconnected(exc):
                    raise
        fresh = {once for once in inserted if once is not None}
        for pending in batch:  # the first of a batch's copies of one request is the one added
            once = pending.values["once"]
            pending.added = once is None or once in fresh
            fresh.discard(once)

    def _insert_postgres(self, rows: list[dict[str, Any]]) -> list[str | None]:
        if self._raw is None:
            import psycopg

            url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._raw = psycopg.connect(url, autocommit=True, prepare_threshold=0)
        params = {name: [row[name] if name != "asker" else _json(row[name]) for row in rows] for name in COLUMNS}
        return [row[0] for row in self._raw.execute(INSERT_POSTGRES, params).fetchall()]

    def _insert_sqlite(self, rows: list[dict[str, Any]]) -> list[str | None]:
        if self._raw is None:
            import sqlite3

            self._raw = sqlite3.connect(str(self.engine.url.database), timeout=30, isolation_level=None,
                                        check_same_thread=False)
            self._raw.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL still survives a crash of any process (the job is in the WAL before the ack);
            # only a power loss of the host could lose the last commits, and a one-host SQLite drbot loses the
            # request then anyway. It saves an fsync on every ack.
            self._raw.execute("PRAGMA synchronous=NORMAL")
        raw = self._raw
        raw.execute("BEGIN IMMEDIATE")
        try:
            inserted = []
            for row in rows:
                values = tuple(row[name] if name != "asker" else _json(row[name]) for name in COLUMNS)
                inserted += [r[0] for r in raw.execute(INSERT_SQLITE, values).fetchall()]
            raw.execute("COMMIT")
        except BaseException:
            raw.execute("ROLLBACK")
            raise
        return inserted

    def _close_raw(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock up front)."""
        with self.engine.connect() as conn:
            conn.info[WRITE] = True
            with conn.begin():
                yield conn

    # ------------------------------------------------------------------------------------------- the leader

    def claim(self, *, epoch: int | None, fence: Callable[[Connection], None] | None = None,
              limit: int = 50) -> list[Claimed]:
        """Take the oldest pending jobs for this leader (`epoch`), at most `limit`."""
        with self.engine.connect() as peek:  # a plain read first: no write lock while nothing is pending
            if peek.execute(sa.select(jobs_table.c.id).where(jobs_table.c.state == PENDING).limit(1)).first() is None:
                return []
        with self._write() as conn:
            if fence is not None:
                fence(conn)
            query = (sa.select(jobs_table.c.id, jobs_table.c.kind, jobs_table.c.payload, jobs_table.c.front,
                               jobs_table.c.asker)
                     .where(jobs_table.c.state == PENDING).order_by(jobs_table.c.id).limit(limit))
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if rows:
                conn.execute(jobs_table.update().where(jobs_table.c.id.in_([r.id for r in rows]))
                             .values(state=RUNNING, epoch=epoch, claimed_at=time.time()))
        claimed = [self._read(row, epoch=epoch) for row in rows]
        self._prune()
        return claimed

    def interrupted(self, *, epoch: int | None, fence: Callable[[Connection], None] | None = None
                    ) -> list[Claimed]:
        """Jobs an earlier leader claimed and never finished. Those safe to repeat go back to pending (and
        are claimed again); the others are marked interrupted and returned, for the person to be told."""
        with self._write() as conn:
            if fence is not None:
                fence(conn)
            stale = jobs_table.c.state == RUNNING
            if epoch is not None:
                stale = stale & ((jobs_table.c.epoch != epoch) | jobs_table.c.epoch.is_(None))
            rows = conn.execute(sa.select(jobs_table.c.id, jobs_table.c.kind, jobs_table.c.payload,
                                          jobs_table.c.front, jobs_table.c.epoch, jobs_table.c.asker)
                                .where(stale)).all()
            again = [r.id for r in rows if r.kind in REPEATABLE]
            lost = [r for r in rows if r.kind not in REPEATABLE]
            if again:
                conn.execute(jobs_table.update().where(jobs_table.c.id.in_(again)).values(state=PENDING))
            if lost:
                conn.execute(jobs_table.update().where(jobs_table.c.id.in_([r.id for r in lost]))
                             .values(state=INTERRUPTED, finished_at=time.time(),
                                     error="the leader that ran it stopped before it finished"))
        return [self._read(row, epoch=row.epoch) for row in lost]

    def finish(self, job_id: int, *, error: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id)
                         .values(state=FAILED if error else DONE, finished_at=time.time(), error=error))

    def wait(self, timeout: float | None = None) -> None:
        """Until a front may have added a job: a NOTIFY on PostgreSQL (or `timeout`), the poll on SQLite."""
        timeout = self.poll if timeout is None else timeout
        if not self.postgres:
            time.sleep(min(timeout, self.poll))
            return
        try:
            listener = self._listen()
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        except Exception as exc:  # the listening session is gone: a poll still finds the jobs
            log.warning("listening for jobs failed (%s); polling instead", type(exc).__name__)
            self._close_listener()
            time.sleep(min(timeout, 1.0))

    def _listen(self) -> Any:
        if self._listener is None:
            import psycopg

            url = self.engine.url.set(drivername="postgresql")
            self._listener = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
            self._listener.execute(f"LISTEN {CHANNEL}")
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None

    # ------------------------------------------------------------------------------------------- reading

    def counts(self) -> dict[str, int]:
        """Jobs by state (`/metrics`: `drbot_jobs_pending`)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs_table.c.state, sa.func.count()).group_by(jobs_table.c.state)).all()
        return {str(state): int(n) for state, n in rows}

    def pending(self) -> int:
        """Jobs waiting for a leader, and jobs being run."""
        counts = self.counts()
        return counts.get(PENDING, 0) + counts.get(RUNNING, 0)

    def close(self) -> None:
        self._close_listener()
        self._close_raw()
        self.engine.dispose()

    def _read(self, row: Any, *, epoch: int | None) -> Claimed:
        try:
            job = pickle.loads(row.payload)
        except Exception as exc:  # another drbot version's job: fail it visibly, never run a guess
            log.error("job %s (%s, from %s) could not be read (%s): it is marked failed", row.id, row.kind,
                      row.front, type(exc).__name__)
            self.finish(int(row.id), error=f"unreadable payload ({type(exc).__name__})")
            job = None
        person = tuple(row.asker) if row.asker else None
        return Claimed(id=int(row.id), job=job, kind=str(row.kind), front=str(row.front), epoch=epoch,
                       asker=person)

    def _prune(self) -> None:
        now = time.time()
        with self._lock:
            if now - self._pruned < 60:
                return
            self._pruned = now
        with self._write() as conn:
            conn.execute(jobs_table.delete().where(jobs_table.c.state.in_([DONE, FAILED, INTERRUPTED]),
                                                   jobs_table.c.finished_at < now - KEEP))
