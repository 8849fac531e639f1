"""Shared fixtures. Each section belongs to one concern; append new sections below, with a heading."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runbooks.store import Store
from tests.doubles.fake_slack import TOKEN, FakeSlack
from tests.pg import PgServer, PostgresUnavailable, start_server, stop_server
from tests.slack_harness import DAVE, ServedDrbot

# =============================================================================================================
# Databases: a session-wide PostgreSQL server, and a `store` fixture that runs a test on SQLite and PostgreSQL
# =============================================================================================================


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A private PostgreSQL cluster for the whole session, stopped at the end even when tests fail.

    Without the binaries a developer's run skips the PostgreSQL cases; CI (CI is set) must have them, so there
    the same absence is a failure rather than a quiet skip.
    """
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    atexit.register(stop_server, server)  # also if the session is interrupted before fixture teardown
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """`postgresql+psycopg://postgres@127.0.0.1:<port>/drbot_test`, shared by the whole session."""
    return pg_server.url("drbot_test")


@pytest.fixture
def fresh_pg_url(pg_server: PgServer) -> str:
    """An empty database of its own for one test, on the session's server."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database (the server starts only
    when a PostgreSQL case runs, so SQLite-only runs never need it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'drbot.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_database()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A `Store` on empty tables, once per backend."""
    st = Store(database_url)
    try:
        yield st
    finally:
        st.close()


# =============================================================================================================
# Slack: a fake Web API (with an approver user group) and drbot served over real HTTP in front of it. Modules
# that need another shape of either define their own `fake` or `serve`, which takes precedence.
# =============================================================================================================


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN) as server:
        server.groups = {"S0SRE": [DAVE]}
        yield server


@pytest.fixture
def serve(tmp_path: Path, fake: FakeSlack) -> Iterator[Callable[..., ServedDrbot]]:
    """`serve(**kwargs)` starts a `ServedDrbot` on the fake; every one started is closed after the test."""
    made: list[ServedDrbot] = []

    def start(**kwargs: Any) -> ServedDrbot:
        bot = ServedDrbot(tmp_path, fake_base_url=fake.base_url, **kwargs)
        made.append(bot)
        return bot

    yield start
    for bot in made:
        bot.close()
