"""Which replica leads: a PostgreSQL session advisory lock, a heartbeat, and an epoch that fences the one before.

Every `drbot serve` on one PostgreSQL database runs a `Leadership`. Exactly one holds the session advisory lock
`LOCK_KEY` on a connection of its own; that one is the leader (it launches DBOS and runs the workflows, the Slack
notifier, the PagerDuty mirror and the reconciler), the others stand by and try again every `poll` seconds.

The lock alone is not enough (DBOS.md, HA.md):
- A process killed outright loses its session, so the lock frees at once; a host that vanished keeps its session
  until the server notices, which the connection's TCP keepalives bound (`KEEPALIVES`: about 8 s).
- A leader frozen by SIGSTOP, a long pause or a half-open network keeps its session, and its kernel still answers
  keepalives. So the leader also renews a heartbeat (`beat_at`, every `beat` seconds) in the row `drbot_leader`,
  and a standby that sees the beat older than `stale` seconds ends the holder's session (`pg_terminate_backend`)
  and takes the lock.
- Each new leader raises `epoch` in the same row. A frozen ex-leader that wakes finds its session gone: its next
  beat fails, it steps down (`on_lost`), and any write it fences with `fence(conn)` — in the same transaction —
  is refused, because the row's epoch is no longer its own.

This module only decides; `bot.serve` acts on the decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runbooks.sqldb import create_tables

log = logging.getLogger("drbot.leader")

__all__ = ["KEEPALIVES", "LOCK_KEY", "Fenced", "Leader", "Leadership", "Standing", "fence", "named_sessions",
           "session_name"]

LOCK_KEY = 0x64726F74  # "drot": the advisory lock every drbot replica of one database competes for
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 2, "keepalives_count": 3,
              "options": "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"}
"""For the lock's connection, both ends: libpq's keepalives let this replica notice a vanished database, and the
server's (`options`) let PostgreSQL end the session of a vanished replica host — about 2 + 2 × 3 = 8 s — which
frees the lock. (The stale heartbeat, `stale`, usually replaces a silent leader sooner.)"""

leader_table = sa.Table(
    "drbot_leader", sa.MetaData(),
    sa.Column("key", sa.String(16), primary_key=True),
    sa.Column("replica", sa.String(200), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("backend", sa.Integer, nullable=False),
    sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
)
ROW = "leader"


def session_name(replica: str) -> str:
    """The `application_name` of every database session of `replica`'s worker (PostgreSQL keeps 63 bytes)."""
    return f"drbot-worker:{replica}"[:63]


def named_sessions(database_url: str, *, replica: str) -> str:
    """`database_url` with the worker's `application_name`, so a replica that takes over from a frozen one can end
    all of its sessions (its store's, its jobs', DBOS's). SQLite is returned as it is."""
    if not database_url.startswith("postgresql"):
        return database_url
    url = sa.make_url(database_url)
    return url.update_query_dict({"application_name": session_name(replica)}).render_as_string(hide_password=False)


class Fenced(Exception):
    """A write by a replica that is no longer the leader (a newer epoch took over)."""


@dataclass(frozen=True)
class Leader:
    replica: str
    epoch: int
    age: float
    """Seconds since its last heartbeat."""


def fence(conn: Connection, *, epoch: int) -> None:
    """Inside a write's transaction: refuse it (Fenced) unless `epoch` is still the leader's. The row is read
    FOR SHARE, so a takeover (which raises the epoch with an UPDATE of that row) waits for this transaction to
    end: a write either commits before the takeover or is refused, never in between."""
    current = conn.execute(sa.select(leader_table.c.epoch).where(leader_table.c.key == ROW)
                           .with_for_update(read=True)).scalar()
    if current != epoch:
        raise Fenced(f"this replica led at epoch {epoch}, but epoch {current} has taken over since")


DBOS_SCHEMA = "dbos"
"""Where DBOS keeps its checkpoints in drbot's PostgreSQL database (DBOS's default schema)."""

_FENCE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION drbot_fence_dbos() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me text := current_setting('application_name', true);
    leads text;
BEGIN
    IF me IS NULL OR me NOT LIKE 'drbot-worker:%' THEN
        RETURN NULL;
    END IF;
    SELECT replica INTO leads FROM drbot_leader WHERE key = '{ROW}' FOR SHARE;
    IF leads IS NULL OR me <> left('drbot-worker:' || leads, 63) THEN
        RAISE EXCEPTION 'drbot: % no longer leads (% does): its DBOS write is refused', me, leads
            USING ERRCODE = 'P0001';
    END IF;
    RETURN NULL;
END $$
"""


def fence_dbos(database_url: str) -> bool:
    """Fence DBOS's own writes as `fence` fences drbot's: a statement-level trigger on each of DBOS's tables
    refuses a write from a worker's session (`session_name`) unless that worker is the leader in `drbot_leader`
    (read FOR SHARE, so a takeover and a write are strictly ordered). Without it, a leader frozen between a step's
    end and DBOS's checkpoint of it could wake and record the step after a standby took over and began the same
    step: DBOS then leaves the new leader's execution waiting for the dead one's outcome. Idempotent; False while
    DBOS has not created its tables yet (the first launch: then nobody led before, so there is nobody to fence)."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool, connect_args=dict(KEEPALIVES))
    try:
        return _fence_dbos(engine)
    finally:
        engine.dispose()


def _fence_dbos(engine: sa.Engine) -> bool:
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY + 1})
        tables = conn.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind = 'r' AND c.relname <> 'dbos_migrations' AND NOT EXISTS "
            "(SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'drbot_fence')"),
            {"schema": DBOS_SCHEMA}).scalars().all()
        present = conn.execute(sa.text("SELECT count(*) FROM pg_namespace n JOIN pg_class c "
                                       "ON c.relnamespace = n.oid WHERE n.nspname = :schema"),
                               {"schema": DBOS_SCHEMA}).scalar()
        if not present:
            return False
        if tables:
            conn.execute(sa.text(_FENCE_FUNCTION))
        for table in tables:
            conn.execute(sa.text(f'CREATE TRIGGER drbot_fence BEFORE INSERT OR UPDATE OR DELETE ON '
                                 f'"{DBOS_SCHEMA}"."{table}" FOR EACH STATEMENT EXECUTE FUNCTION drbot_fence_dbos()'))
    return True


class Leadership:
    """Compete for leadership of one database; `on_elected(epoch)` and `on_lost(epoch)` are called from the
    thread that runs `run()` (start it in a daemon thread; `stop()` ends it and releases the lock)."""

    def __init__(self, database_url: str, *, replica: str, on_elected: Callable[[int], None],
                 on_lost: Callable[[int], None], poll: float = 0.5, beat: float = 1.0, stale: float = 5.0) -> None:
        if not database_url.startswith("postgresql"):
            raise ValueError("leadership needs PostgreSQL")
        self.replica = replica
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.poll, self.beat, self.stale = poll, beat, stale
        self.engine = sa.create_engine(database_url, poolclass=sa.NullPool, connect_args=dict(KEEPALIVES))
        create_tables(self.engine, leader_table.metadata)
        self.epoch: int | None = None
        self.previous: str | None = None
        """The replica that led before this one took over (set just before `on_elected`)."""
        self.paused = threading.Event()
        """Set by tests to stop renewing the heartbeat while keeping the session (a frozen leader)."""
        self._stop = threading.Event()
        self._conn: Connection | None = None

    # ------------------------------------------------------------------------------------------- queries

    def leader(self) -> Leader | None:
        """Who leads now, and how fresh its heartbeat is (None before anyone ever led)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(leader_table.c.replica, leader_table.c.epoch,
                                         sa.func.extract("epoch", sa.func.now() - leader_table.c.beat_at))
                               .where(leader_table.c.key == ROW)).first()
        return None if row is None else Leader(replica=row[0], epoch=int(row[1]), age=float(row[2]))

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    # ------------------------------------------------------------------------------------------- the loop

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.epoch is None:
                    self._try_to_lead()
                    wait = self.poll
                else:
                    self._renew()
                    wait = self.beat
            except sa.exc.DBAPIError as exc:  # the session is gone (terminated, network): we lead no more
                self._lose(f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0] if exc.orig else ''}")
                wait = self.poll
            self._stop.wait(wait)
        self._release()

    def stop(self) -> None:
        self._stop.set()

    def _session(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _try_to_lead(self) -> None:
        conn = self._session()
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar():
            self._replace_if_frozen(conn)
            return
        self.previous = conn.execute(sa.select(leader_table.c.replica).where(leader_table.c.key == ROW)).scalar()
        epoch = int(conn.execute(sa.text(
            "INSERT INTO drbot_leader (key, replica, epoch, backend, beat_at) "
            "VALUES (:row, :replica, 1, pg_backend_pid(), now()) "
            "ON CONFLICT (key) DO UPDATE SET replica = :replica, epoch = drbot_leader.epoch + 1, "
            "backend = pg_backend_pid(), beat_at = now() RETURNING epoch"),
            {"row": ROW, "replica": self.replica}).scalar_one())
        self.epoch = epoch
        log.warning("replica %s leads (epoch %d)", self.replica, epoch)
        self.on_elected(epoch)

    def _replace_if_frozen(self, conn: Connection) -> None:
        """The lock is held: if its holder's heartbeat is stale, end the holder's session (it is frozen)."""
        row = conn.execute(sa.text(
            "SELECT l.pid, d.replica, d.epoch, extract(epoch FROM now() - d.beat_at) "
            "FROM pg_locks l JOIN drbot_leader d ON d.key = :row AND d.backend = l.pid "
            "WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted"),
            {"row": ROW, "key": LOCK_KEY}).first()
        if row is None or float(row[3]) < self.stale:
            return
        log.warning("replica %s (epoch %s) has not beaten for %.1f s: ending its sessions", row[1], row[2], row[3])
        # Every session of its worker, not only the lock's: a transaction it froze in the middle of would hold
        # the leader row (see `fence`) and its writes would wait to commit when it wakes.
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = :name AND pid <> pg_backend_pid()"),
                     {"name": session_name(str(row[1]))})
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": int(row[0])})

    def _renew(self) -> None:
        if self.paused.is_set():
            return
        conn = self._session()
        renewed = conn.execute(sa.text(
            "UPDATE drbot_leader SET beat_at = now() WHERE key = :row AND epoch = :epoch AND backend = "
            "pg_backend_pid()"), {"row": ROW, "epoch": self.epoch}).rowcount
        if not renewed:
            self._lose("another replica has taken over")

    def _lose(self, why: str) -> None:
        if self.epoch is not None:
            epoch, self.epoch = self.epoch, None
            log.error("replica %s no longer leads (epoch %d): %s", self.replica, epoch, why)
            self.on_lost(epoch)
        if self._conn is not None:
            self._conn.invalidate()
            self._conn = None

    def _release(self) -> None:
        """Hand over: unlock (the next replica takes it at its next poll) and close the session."""
        if self._conn is not None:
            try:
                if self.epoch is not None:
                    self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            except sa.exc.DBAPIError:
                pass
            self._conn.close()
            self._conn = None
        self.epoch = None
        self.engine.dispose()



class Standing:
    """What the front says about leadership in `/healthz`, `/readyz` and `/metrics`: this replica's role, the
    leader's id, how many takeovers the database has seen, and the jobs waiting. Read from the database (the
    leader row), at most once every `cache` seconds. On SQLite the one `drbot serve` leads while its worker lives."""

    def __init__(self, database_url: str, *, replica: str, alive: Callable[[], bool], queue: Any = None,
                 stale: float = 5.0, cache: float = 0.5) -> None:
        self.replica = replica
        self.alive = alive
        self.queue = queue
        self.stale = stale
        self.cache = cache
        self.engine = (sa.create_engine(database_url, poolclass=sa.NullPool, connect_args=dict(KEEPALIVES))
                       if database_url.startswith("postgresql") else None)
        self._seen: tuple[float, Leader | None] = (-1e9, None)
        self._lock = threading.Lock()

    def leader(self) -> Leader | None:
        """The leader row (None on SQLite, or before anyone led). A database error propagates: the caller says
        the database is down."""
        if self.engine is None:
            return None
        with self._lock:
            at, found = self._seen
            if time.monotonic() - at < self.cache:
                return found
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(leader_table.c.replica, leader_table.c.epoch,
                                         sa.func.extract("epoch", sa.func.now() - leader_table.c.beat_at))
                               .where(leader_table.c.key == ROW)).first()
        found = None if row is None else Leader(replica=row[0], epoch=int(row[1]), age=float(row[2]))
        with self._lock:
            self._seen = (time.monotonic(), found)
        return found

    def view(self) -> dict[str, Any]:
        """{"replica", "role": "leader"|"standby", "leader": id or None} for the health endpoints."""
        if self.engine is None:
            leading = self.alive()
            return {"replica": self.replica, "role": "leader" if leading else "standby",
                    "leader": self.replica if leading else None}
        found = self.leader()
        current = found.replica if found is not None and found.age < self.stale else None
        role = "leader" if current == self.replica and self.alive() else "standby"
        return {"replica": self.replica, "role": role, "leader": current}

    def gauges(self) -> dict[str, float]:
        """`drbot_leader`, `drbot_takeovers_total` and `drbot_jobs_pending`."""
        view = self.view()
        found = self.leader()
        return {"drbot_leader": 1.0 if view["role"] == "leader" else 0.0,
                "drbot_takeovers_total": float(max(found.epoch - 1, 0)) if found is not None else 0.0,
                "drbot_jobs_pending": float(self.queue.pending()) if self.queue is not None else 0.0}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
