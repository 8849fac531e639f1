"""How drbot opens a SQL database, for every table set it keeps (the store, the jobs table, the leader row): one
engine recipe and one way to create tables, so SQLite and several PostgreSQL replicas behave the same everywhere.

- SQLite: WAL, a 30 s busy timeout, and a write transaction that takes the write lock up front (`BEGIN
  IMMEDIATE`), so another process writing at the same moment makes it wait, not collide.
- PostgreSQL: tables are created under an advisory lock, so replicas starting together on an empty database do
  not collide in `CREATE TABLE` (a duplicate pg_type key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["SCHEMA_LOCK", "WRITE", "create_tables", "make_engine"]

SCHEMA_LOCK = 0x64726F73  # "dros"
WRITE = "drbot_write"
"""Set `conn.info[WRITE] = True` before `begin()` to make a SQLite transaction take the write lock up front."""


def make_engine(url: str, *, immediate: bool = False, **kwargs: Any) -> Engine:
    """An engine for `url`. On SQLite, `immediate=True` makes every transaction `BEGIN IMMEDIATE`; otherwise only
    those whose connection is marked `WRITE`."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, **kwargs)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
    _sqlite_events(engine, immediate=lambda conn: immediate or bool(conn.info.pop(WRITE, False)))
    return engine


def create_tables(engine: Engine, metadata: sa.MetaData, *, also: Callable[[Connection], None] | None = None) -> None:
    """Create `metadata`'s tables (and `also(conn)`, e.g. an index added later) in one transaction, on PostgreSQL
    under the advisory lock `SCHEMA_LOCK`."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(conn)
        if also is not None:
            also(conn)


def _sqlite_events(engine: Engine, *, immediate: Callable[[Connection], bool]) -> None:
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the `begin` event below emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate(conn) else "BEGIN")
