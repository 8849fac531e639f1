"""`database.integrity_check` on the cloud database providers, against the session's real PostgreSQL server.

The server stands in for the restored instance: `integrity.host/port` point at it (as they would at a tunnel or
cloud-sql-proxy), a read-only role logs in with a password (scram, through a pg_hba line for that role only), and
the cloud API is never asked for an endpoint unless a test says so — then it is a local double, and nothing
connects to the address it reports.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bot.wiring import ProviderRegistry
from integrations.gcp import CloudSql
from runbooks.errors import PermanentError, TransientError
from runbooks.ports import SystemClock
from tests.doubles.fake_cloudsql import fake_cloudsql
from tests.pg import PgServer, free_port

pytestmark = pytest.mark.postgres

ROLE = "drbot_integrity_ro"
PASSWORD = "ro-S3cret-pw-42"
URL_ENV = "PROD_DB_READONLY_URL"
ROWS = 7
COUNT = "SELECT count(*) FROM documents"
WRITE_REFUSED = "integrity_check runs one read-only query"


@dataclass
class RestoredDb:
    """A database with `documents` rows that the read-only role may only SELECT; `admin` is the superuser URL."""

    server: PgServer
    name: str
    admin: str

    @property
    def port(self) -> int:
        return self.server.port

    def readonly_url(self, password: str = PASSWORD) -> str:
        """What an operator exports: the host is a placeholder, replaced by integrity.host or the endpoint."""
        return f"postgresql+psycopg://{ROLE}:{password}@placeholder/{self.name}"

    def integrity(self, **changes: Any) -> dict[str, Any]:
        return {"url_env": URL_ENV, "host": "127.0.0.1", "port": self.port, "timeout": "5s", **changes}

    def rows(self) -> int:
        engine = sa.create_engine(self.admin)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM documents")).scalar_one())
        finally:
            engine.dispose()

    def execute(self, *statements: str) -> None:
        engine = sa.create_engine(self.admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()


def _require_password_for_role(server: PgServer) -> None:
    """The test cluster trusts everyone; make only our role log in with a password (scram), then wait for the
    reload to take effect so that a wrong password is really refused."""
    hba = server.datadir / "pg_hba.conf"
    line = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        hba.write_text(line + text)
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ROLE}).first()
            if exists is None:
                conn.exec_driver_sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
    finally:
        admin.dispose()
    wrong = sa.create_engine(f"postgresql+psycopg://{ROLE}:not-it@127.0.0.1:{server.port}/postgres")
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            try:
                wrong.connect().close()
            except sa.exc.OperationalError:
                return
            time.sleep(0.05)
    finally:
        wrong.dispose()
    raise AssertionError("pg_hba.conf reload did not take effect")


def make_restored_db(server: PgServer, *, rows: int = ROWS) -> RestoredDb:
    """A fresh database playing the restored instance: `documents` with `rows` rows, readable by the role."""
    _require_password_for_role(server)
    admin = server.new_database()
    db = RestoredDb(server=server, name=sa.make_url(admin).database or "", admin=admin)
    db.execute("CREATE TABLE documents (id serial PRIMARY KEY, title text NOT NULL)",
               f"INSERT INTO documents (title) SELECT 'doc-' || g FROM generate_series(1, {rows}) g",
               f"GRANT SELECT ON documents TO {ROLE}")
    return db


@pytest.fixture
def restored(pg_server: PgServer) -> RestoredDb:
    return make_restored_db(pg_server)


def cloudsql(db: RestoredDb, *, integrity: Any = None, environ: dict[str, str] | None = None,
             **settings: Any) -> CloudSql:
    """The real provider; with `integrity.host` set it never asks the Admin API anything for this action."""
    config: dict[str, Any] = {"project": "p", "instance": "prod-pg", "credentials": "anonymous", **settings}
    if integrity is not None:
        config["integrity"] = integrity
    return CloudSql(environment="prod", resource="database", settings=config,
                    environ={URL_ENV: db.readonly_url()} if environ is None else environ)


def run(provider: CloudSql, query: str, **params: Any) -> dict[str, Any]:
    op = provider.start(action="database.integrity_check",
                        params={"instance": "prod-pg-pitr-r1", "query": query, **params}, run_id="R-1")
    status = provider.poll(operation=op)
    assert status.done and not status.failed
    return status.outputs


# ---- the happy path


def test_count_comes_back_with_instance_and_host(restored: RestoredDb) -> None:
    provider = cloudsql(restored, integrity=restored.integrity())
    assert "integrity_check" in provider.actions()
    assert provider.preflight(action="database.integrity_check",
                              params={"instance": "prod-pg-pitr-r1", "query": COUNT}) == []
    outputs = run(provider, COUNT)
    assert outputs == {"count": ROWS, "instance": "prod-pg-pitr-r1", "host": "127.0.0.1"}


def test_percent_signs_and_casts_are_not_bind_parameters(restored: RestoredDb) -> None:
    provider = cloudsql(restored, integrity=restored.integrity())
    assert run(provider, "SELECT count(*) FROM documents WHERE title LIKE 'doc-%' AND '10:00'::time < '11:00'"
               )["count"] == ROWS


def test_min_count_is_verified_only_when_asked(restored: RestoredDb) -> None:
    provider = cloudsql(restored, integrity=restored.integrity())
    params = {"instance": "prod-pg-pitr-r1", "query": COUNT}
    assert provider.verify(action="database.integrity_check", params=params, outputs={"count": 0}) == []
    problems = provider.verify(action="database.integrity_check", params={**params, "min_count": 10},
                               outputs={"count": ROWS})
    assert len(problems) == 1 and "returned 7, below the minimum 10" in problems[0]


# ---- read-only, by rule and by transaction


@pytest.mark.parametrize("query", [
    "DELETE FROM documents",
    "SELECT 1; DROP TABLE documents",
    "INSERT INTO documents (title) VALUES ('x') RETURNING id",
    "WITH d AS (DELETE FROM documents RETURNING 1) SELECT count(*) FROM d",
])
def test_write_statements_are_refused_and_change_nothing(restored: RestoredDb, query: str) -> None:
    provider = cloudsql(restored, integrity=restored.integrity(), environ={URL_ENV: restored.admin})
    params = {"instance": "prod-pg-pitr-r1", "query": query}
    problems = provider.preflight(action="database.integrity_check", params=params)
    assert len(problems) == 1 and problems[0].startswith(WRITE_REFUSED)
    assert "`SELECT count(*) FROM documents`" in problems[0]
    with pytest.raises(PermanentError, match=WRITE_REFUSED):
        provider.start(action="database.integrity_check", params=params, run_id="R-1")
    assert restored.rows() == ROWS


def test_the_read_only_transaction_stops_writes_the_rule_cannot_see(restored: RestoredDb) -> None:
    """Even the superuser's URL cannot write: a SECURITY DEFINER function that deletes, and nextval, pass the
    rule (they look like SELECTs) and are refused by PostgreSQL's READ ONLY transaction."""
    restored.execute("CREATE FUNCTION purge_documents() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS "
                     "$$ WITH d AS (DELETE FROM documents RETURNING 1) SELECT count(*) FROM d $$",
                     "CREATE SEQUENCE documents_seq", f"GRANT USAGE ON SEQUENCE documents_seq TO {ROLE}")
    for environ in ({URL_ENV: restored.readonly_url()}, {URL_ENV: restored.admin}):
        provider = cloudsql(restored, integrity=restored.integrity(), environ=environ)
        for query in ("SELECT purge_documents()", "SELECT nextval('documents_seq')"):
            with pytest.raises(PermanentError, match="READ ONLY transaction refused it") as caught:
                run(provider, query)
            assert caught.value.code == "SqlReadOnly" and "read-only transaction" in caught.value.message
    assert restored.rows() == ROWS
    engine = sa.create_engine(restored.admin)  # and the sequence did not move

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT last_value, is_called FROM documents_seq")).one() == (1, False)
    engine.dispose()


# ---- failures: permanent, transient, and never the password


def test_wrong_password_is_permanent_and_never_shows_the_password(restored: RestoredDb) -> None:
    wrong = "Wr0ng-but-secret-9"
    provider = cloudsql(restored, integrity=restored.integrity(), environ={URL_ENV: restored.readonly_url(wrong)})
    with pytest.raises(PermanentError) as caught:
        run(provider, COUNT)
    text = caught.value.message
    assert caught.value.code == "SqlAuthFailed" and not isinstance(caught.value, TransientError)
    assert "password authentication failed" in text and f"`{ROLE}`" in text
    assert "environments.prod.database.integrity.url_env" in text
    assert wrong not in text and PASSWORD not in text and wrong not in repr(caught.value.args)
    plan = provider.plan(action="database.integrity_check", params={"instance": "x", "query": COUNT})
    assert wrong not in str(plan) and f"{ROLE}:***@127.0.0.1:{restored.port}/{restored.name}" in plan["url"]


def test_nothing_listening_is_transient_and_names_the_override(restored: RestoredDb) -> None:
    provider = cloudsql(restored, integrity=restored.integrity(port=free_port()))
    with pytest.raises(TransientError) as caught:
        run(provider, COUNT)
    assert "Connection refused" in caught.value.message
    assert "environments.prod.database.integrity.host/port" in caught.value.message
    assert PASSWORD not in caught.value.message


def test_statement_timeout_is_transient(restored: RestoredDb) -> None:
    provider = cloudsql(restored, integrity=restored.integrity(timeout="1s"))
    began = time.monotonic()
    with pytest.raises(TransientError, match="statement timeout") as caught:
        run(provider, "SELECT count(*) FROM (SELECT pg_sleep(5)) AS s")
    assert time.monotonic() - began < 4
    assert "environments.prod.database.integrity.timeout" in caught.value.message


@pytest.mark.parametrize(("query", "shape"), [
    ("SELECT title FROM documents ORDER BY id LIMIT 1", "a str, not a number"),
    ("SELECT id FROM documents", "more than one row"),
    ("SELECT count(*), max(id) FROM documents", "2 columns"),
    ("SELECT max(id) FROM documents WHERE false", "NULL, not a number"),
])
def test_a_result_that_is_not_one_number_is_refused_without_echoing_data(restored: RestoredDb, query: str,
                                                                         shape: str) -> None:
    provider = cloudsql(restored, integrity=restored.integrity())
    with pytest.raises(PermanentError, match="returned") as caught:
        run(provider, query)
    assert shape in caught.value.message and "doc-1" not in caught.value.message


def test_unknown_table_is_permanent_and_points_at_the_query(restored: RestoredDb) -> None:
    provider = cloudsql(restored, integrity=restored.integrity())
    with pytest.raises(PermanentError, match='relation "nope" does not exist') as caught:
        run(provider, "SELECT count(*) FROM nope")
    assert "settings.integrity_query" in caught.value.message


# ---- configuration sentences


def test_missing_variable_and_missing_block_are_preflight_sentences(restored: RestoredDb) -> None:
    params = {"instance": "prod-pg-pitr-r1", "query": COUNT}
    unset = cloudsql(restored, integrity=restored.integrity(), environ={})
    problems = unset.preflight(action="database.integrity_check", params=params)
    assert problems == ["environments.prod.database.integrity.url_env names `PROD_DB_READONLY_URL`, but that "
                        "environment variable is not set; export PROD_DB_READONLY_URL=postgresql+psycopg://"
                        "readonly:<password>@placeholder/app (a read-only user's credentials and the database name; "
                        "the host is replaced by the endpoint or integrity.host)."]
    with pytest.raises(PermanentError, match="PROD_DB_READONLY_URL"):
        unset.start(action="database.integrity_check", params=params, run_id="R-1")

    none = cloudsql(restored)
    (problem,) = none.preflight(action="database.integrity_check", params=params)
    assert problem.startswith("environments.prod.database.integrity is missing")
    assert "`integrity: {url_env: PROD_DB_READONLY_URL, host: 127.0.0.1, port: 5432, timeout: 30s}`" in problem

    bad = cloudsql(restored, integrity={"url": "postgresql://x"})
    (problem,) = bad.preflight(action="database.integrity_check", params=params)
    assert "unknown key url" in problem and "url_env" in problem

    garbage = cloudsql(restored, integrity=restored.integrity(), environ={URL_ENV: "not a url:hunter2"})
    (problem,) = garbage.preflight(action="database.integrity_check", params=params)
    assert "does not hold a SQLAlchemy URL" in problem and "hunter2" not in problem

    mysql = cloudsql(restored, integrity=restored.integrity(), environ={URL_ENV: "mysql+pymysql://u:p@h/app"})
    (problem,) = mysql.preflight(action="database.integrity_check", params=params)
    assert "PostgreSQL only" in problem


def test_the_environment_arrives_through_bot_config(restored: RestoredDb, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Any) -> None:
    """Built the way production builds it (wiring → builder → provider), the variable is found."""
    from runbooks.store import Store

    monkeypatch.setenv(URL_ENV, restored.readonly_url())
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    registry = ProviderRegistry(state=store, clock=SystemClock(), speed=1.0)
    provider = registry(environment="prod", resource="database",
                        config={"provider": "cloudsql", "project": "p", "instance": "prod-pg",
                                "credentials": "anonymous", "integrity": restored.integrity()})
    assert provider.preflight(action="database.integrity_check",
                              params={"instance": "prod-pg-pitr-r1", "query": COUNT}) == []
    op = provider.start(action="database.integrity_check", params={"instance": "i", "query": COUNT}, run_id="R-1")
    assert provider.poll(operation=op).outputs["count"] == ROWS
    store.close()


# ---- the endpoint from the cloud API, and `drbot check`


@pytest.fixture
def cloudsql_api() -> Iterator[tuple[Any, str]]:
    with fake_cloudsql(project="p", now=lambda: datetime.now(UTC)) as (world, url):
        world.seed("prod-pg")
        world.seed("prod-pg-pitr-r1")
        yield world, url


def test_plan_shows_the_endpoint_source_and_no_password(restored: RestoredDb,
                                                        cloudsql_api: tuple[Any, str]) -> None:
    world, url = cloudsql_api
    provider = cloudsql(restored, integrity={"url_env": URL_ENV}, endpoint_url=url)
    ip = world.instances["prod-pg-pitr-r1"]["ipAddresses"][0]["ipAddress"]
    plan = provider.plan(action="database.integrity_check", params={"instance": "prod-pg-pitr-r1", "query": COUNT})
    assert plan["host"] == ip and plan["port"] == 5432
    assert plan["host_source"] == "the endpoint cloudsql reports for `prod-pg-pitr-r1`"
    assert plan["url"] == f"postgresql+psycopg://{ROLE}:***@{ip}:5432/{restored.name}"
    assert PASSWORD not in str(plan)
    missing = provider.preflight(action="database.integrity_check", params={"instance": "gone", "query": COUNT})
    assert missing == ["Instance `gone` does not exist, so there is nothing to check; run the restore first, or "
                       "check the step's `instance`."]

    override = cloudsql(restored, integrity=restored.integrity(), endpoint_url=url)
    plan = override.plan(action="database.integrity_check", params={"instance": "prod-pg-pitr-r1", "query": COUNT})
    assert plan["host"] == "127.0.0.1" and plan["port"] == restored.port
    assert "integrity.host (a tunnel or proxy" in plan["host_source"]


def test_probe_checks_the_variable_without_connecting(restored: RestoredDb, cloudsql_api: tuple[Any, str]) -> None:
    _, url = cloudsql_api
    nowhere = {"url_env": URL_ENV, "host": "127.0.0.1", "port": free_port()}  # a connection would fail
    assert cloudsql(restored, integrity=nowhere, endpoint_url=url).probe() == []
    assert cloudsql(restored, endpoint_url=url).probe() == []  # no block: nothing to check
    (problem,) = cloudsql(restored, integrity=nowhere, endpoint_url=url, environ={}).probe()
    assert "integrity.url_env names `PROD_DB_READONLY_URL`, but that environment variable is not set" in problem

