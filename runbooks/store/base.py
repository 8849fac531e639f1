"""The connection every aggregate shares: the SQLAlchemy engine, the tables created on first use, and `tx()`, the
one way to write.

SQLite allows one writer at a time and PostgreSQL's audit chain needs a total order of writers, so every write
goes through `tx()`, which serialises writers in this process and takes the database's write lock up front.
Reads open a plain connection (`self.engine.connect()`) and never wait for a writer.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runbooks.store.tables import events_newest, meta, metadata


class StoreBase:
    """Owns the engine and the write transaction; each aggregate (incidents, runs, approvals, events, provider
    state) is a subclass adding the methods for its tables, and `Store` is all of them together."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            _sqlite_pragmas(self.engine)
        self._write_lock = threading.RLock()
        self.fence: Callable[[Connection], None] | None = None
        """Called first in every write transaction: a replica that no longer leads raises there, so it writes
        nothing (set by the leading worker of `drbot serve`, see `bot.leader.fence`)."""
        with schema_lock(self.engine) as conn:
            metadata.create_all(conn)
            # `create_all` adds indexes only with the tables it creates: a database made before an index was
            # added gets it here.
            events_newest.create(conn, checkfirst=True)
        self.instance_id = self._instance_id()

    def _instance_id(self) -> str:
        """A random id made when the tables are first created. Durable workflow ids include it, so a wiped or
        replaced database never meets checkpoints that DBOS kept for an earlier one's `R-1`."""
        with self.tx() as conn:
            found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "instance_id")).scalar()
            if found is None:
                found = uuid.uuid4().hex[:12]
                conn.execute(meta.insert().values(key="instance_id", value=found))
            return str(found)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction. SQLite allows one writer at a time: serialise in-process writers."""
        with self._write_lock, self.engine.connect() as conn:
            conn.info["drbot_write"] = True
            with conn.begin():
                if self.is_postgres:
                    # The audit chain needs a total order of writers across processes.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
                if self.fence is not None:
                    self.fence(conn)
                yield conn


SCHEMA_LOCK = 0x64726F73  # "dros": replicas starting at once on a new PostgreSQL database create tables in turn


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A transaction in which to create tables: on PostgreSQL it holds an advisory lock, so that several replicas
    starting together on an empty database do not collide in `CREATE TABLE` (a duplicate pg_type key)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        yield conn


def _sqlite_pragmas(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's `begin` event below emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A write transaction takes SQLite's write lock before its first read (the last audit hash, the next
        # incident number), so another process writing at the same moment makes it wait, not collide.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("drbot_write", False) else "BEGIN")
