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
        add_missing_columns(conn, metadata)
        if also is not None:
            also(conn)


def add_missing_columns(conn: Connection, metadata: sa.MetaData) -> list[str]:
    """Upgrade a database made by an older drbot: add each column a table lacks (every column added after a
    release has a server default or is nullable, so existing rows stay valid). Returns "table.column" for each."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    added = []
    for table in metadata.sorted_tables:
        if table.name not in present:
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"drbot cannot add the column {table.name}.{column.name} to an existing database: "
                                   "it has no default (a bug: columns added after a release need one)")
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            name = conn.dialect.identifier_preparer.format_table(table)
            conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN {ddl}"))
            added.append(f"{table.name}.{column.name}")
    return added


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
