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

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runbooks.sqldb import WRITE, create_tables, make_engine
from runbooks.store.tables import events_newest, meta, metadata


class StoreBase:
    """Owns the engine and the write transaction; each aggregate (incidents, runs, approvals, events, provider
    state) is a subclass adding the methods for its tables, and `Store` is all of them together."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self._write_lock = threading.RLock()
        self.fence: Callable[[Connection], None] | None = None
        """Called first in every write transaction: a replica that no longer leads raises there, so it writes
        nothing (set by the leading worker of `drbot serve`, see `bot.leader.fence`)."""
        # `create_all` adds indexes only with the tables it creates: a database made before an index was added
        # gets it here.
        create_tables(self.engine, metadata, also=lambda conn: events_newest.create(conn, checkfirst=True))
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

    def check_fence(self) -> None:
        """Raise (through `fence`) when this replica no longer leads; nothing when no fence is set."""
        if self.fence is not None:
            with self.engine.connect() as conn:
                self.fence(conn)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction. SQLite allows one writer at a time: serialise in-process writers."""
        with self._write_lock, self.engine.connect() as conn:
            conn.info[WRITE] = True  # SQLite: take the write lock before the first read
            with conn.begin():
                if self.is_postgres:
                    # The audit chain needs a total order of writers across processes.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
                if self.fence is not None:
                    self.fence(conn)
                yield conn
