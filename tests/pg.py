"""A throw-away PostgreSQL server for the test session, built from Debian's `postgresql` package.

Tests must prove that the store behaves the same on PostgreSQL as on SQLite (the HA deployment runs the same
code), so the session starts a private cluster on a free loopback port instead of relying on a server that may
or may not be there. initdb refuses to run as root, so on a root machine (CI, containers) the cluster runs as the
`postgres` system user that the Debian package creates (or `nobody` when that user is missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

INSTALL_HINT = "install it with `apt-get install -y postgresql` (Debian/Ubuntu) or put initdb and pg_ctl on PATH"
TEST_DATABASE = "drbot_test"


class PostgresUnavailable(RuntimeError):
    """The machine has no PostgreSQL binaries (or no driver); the message says how to get them."""


def find_binaries() -> tuple[Path, Path]:
    """Return (initdb, pg_ctl): Debian keeps them out of PATH under /usr/lib/postgresql/<major>/bin."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        initdb, pg_ctl = Path(bindir) / "initdb", Path(bindir) / "pg_ctl"
        if initdb.exists() and pg_ctl.exists():
            return initdb, pg_ctl
    initdb_path, pg_ctl_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb_path and pg_ctl_path:
        return Path(initdb_path), Path(pg_ctl_path)
    raise PostgresUnavailable(f"PostgreSQL server binaries (initdb, pg_ctl) were not found; {INSTALL_HINT}")


def _major(bindir: str) -> int:
    version = Path(bindir).parent.name
    return int(version) if version.isdigit() else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_user() -> str | None:
    """The user to run the cluster as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root, and neither a `postgres` nor a `nobody` user exists to run "
                              f"PostgreSQL as (initdb refuses root); {INSTALL_HINT}")


@dataclass
class PgServer:
    """One running cluster. `url(name)` gives a SQLAlchemy URL; `new_database()` an empty database for one test."""

    root: Path
    port: int
    pg_ctl: Path
    user: str | None
    _created: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: bool = False

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        """Written by the server itself (so owned by the service user); pg_ctl's own output goes elsewhere."""
        return self.root / "server.log"

    @property
    def ctl_log(self) -> Path:
        return self.root / "pg_ctl.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def new_database(self) -> str:
        """A database no other test has touched, so tests never see each other's rows or sequences."""
        with self._lock:
            self._created += 1
            name = f"t{self._created}"
        return self.create_database(name)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        _run_as(self.user, [str(self.pg_ctl), "-D", str(self.datadir), "-l", str(self.logfile),
                            "-o", options, "-w", "-t", "60", "start"], cwd=self.root, log=self.ctl_log,
                also=self.logfile)
        self._running = True

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        _run_as(self.user, [str(self.pg_ctl), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                cwd=self.root, log=self.ctl_log, check=False)


def start_server() -> PgServer:
    """initdb a fresh cluster in a private temp dir and start it; the caller must `stop_server` it.

    On any failure the half-built cluster is stopped and removed before the error (with the server log) is raised.
    """
    try:
        import psycopg  # noqa: F401  (the driver the URL names)
    except ImportError as exc:
        raise PostgresUnavailable("the psycopg driver is missing; install it with `pip install -e '.[dev]'` "
                                  "(or `pip install 'psycopg[binary]'`)") from exc
    initdb, pg_ctl = find_binaries()
    user = _service_user()
    # Not pytest's tmp_path: its parents are private to root, and the service user must reach the data dir.
    root = Path(tempfile.mkdtemp(prefix="drbot-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PgServer(root=root, port=free_port(), pg_ctl=pg_ctl, user=user)
    try:
        _run_as(user, [str(initdb), "-D", str(server.datadir), "-A", "trust", "-U", "postgres", "--locale=C",
                       "-E", "UTF8", "--no-sync"], cwd=root, log=root / "initdb.log")
        for attempt in range(3):  # the free port can be taken between free_port() and the bind
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = free_port()
        server.create_database(TEST_DATABASE)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PgServer) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _run_as(user: str | None, argv: list[str], *, cwd: Path, log: Path, also: Path | None = None,
            check: bool = True) -> None:
    """Run a PostgreSQL tool, as `user` when given. Output goes to a file, never a pipe: the postmaster that
    `pg_ctl start` leaves behind would hold a pipe open and hang the call."""
    if user is not None:
        if shutil.which("runuser"):
            argv = ["runuser", "-u", user, "--", *argv]
        else:
            argv = ["su", user, "-s", "/bin/sh", "-c", shlex.join(argv)]
    with open(log, "ab") as out:
        code = subprocess.call(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               timeout=120)
    if check and code != 0:
        tails = "".join(f"\n--- {path} ends with:\n{path.read_text(errors='replace')[-3000:]}"
                        for path in (log, also) if path is not None and path.exists())
        raise RuntimeError(f"`{shlex.join(argv)}` exited {code}{tails}")
