"""Who this `drbot serve` is, and whether it may run beside others.

Each serving process has a replica id (`DRBOT_REPLICA_ID`, by default the host name and the process id) that
names it in the log and in `/healthz`. Several replicas need PostgreSQL (see the README, "Run drbot highly
available"): on SQLite, one file has one writer, so a second `drbot serve` on the same database refuses to start
with a sentence that says so, rather than two engines resuming the same runs. The guard is an exclusive lock on a
file beside the database, which the operating system releases when the process ends however it ends (kill -9
included), so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from bot.config import Settings
from runbooks.errors import ConfigError

__all__ = ["SingleServer", "replica_id", "serving_alone"]


def replica_id(settings: Settings) -> str:
    """`DRBOT_REPLICA_ID`, or `<host name>-<pid>`."""
    return settings.drbot_replica_id or f"{socket.gethostname()}-{os.getpid()}"


class SingleServer(ConfigError):
    """A second `drbot serve` on one SQLite database."""


def _sqlite_file(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.partition(":///")[2]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def serving_alone(settings: Settings, *, replica: str) -> Iterator[None]:
    """While inside, this process is the only `drbot serve` on its SQLite database (SingleServer otherwise);
    on PostgreSQL any number may serve and this does nothing."""
    database = _sqlite_file(settings.drbot_database_url)
    if database is None:
        yield
        return
    lock_path = database.with_name(database.name + ".serve.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise SingleServer(
                f"Another drbot serve is already running on {database} ({holder}). One SQLite database takes one "
                f"drbot serve; several replicas (high availability) need PostgreSQL: set "
                f"DRBOT_DATABASE_URL=postgresql+psycopg://… for every replica.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"replica {replica}, pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock (the OS does it too if this process dies)
