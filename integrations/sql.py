"""A read-only integrity check over SQLAlchemy: one SELECT, one number, against a restored database.

Why this exists: after a restore the cloud API says the instance is `available`, not that the data is there. Only
a query answers that, so the cloud providers' `database.integrity_check` connects to the restored instance and
counts rows. The connection is the riskiest thing drbot does to a database, so four layers keep it read-only and
keep the credentials out of sight:

1. the query must be a single SELECT/WITH statement without a write keyword (the sandbox's rule, same message);
2. it runs inside `SET TRANSACTION READ ONLY` with `SET LOCAL statement_timeout`, so a write hidden in a
   function (`SELECT purge()`, `nextval`, `SELECT … INTO`) is refused by PostgreSQL itself, and the transaction
   is always rolled back;
3. the URL names a read-only user (drbot.yml `integrity.url_env` names the environment variable that holds it;
   the value comes from `bot.config.process_environment()`, never from this module reading the environment);
4. the URL is only ever shown with `hide_password=True`, and every driver message is redacted, with the literal
   password removed as well, before it becomes a `ProviderError`.

Errors: connection refused, timeouts, an unresolvable host and a busy server are `TransientError` (the engine
retries); a bad password, an unknown user or database, a refused query or a result that is not one number are
`PermanentError`, each naming the drbot.yml key to fix. Only PostgreSQL URLs are accepted for now.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from runbooks.errors import PermanentError, ProviderError, TransientError
from runbooks.redact import MASK, redact_text
from runbooks.timeline import parse_duration

DEFAULT_PORT = 5432
DEFAULT_TIMEOUT = 30.0
URL_FORM = "postgresql+psycopg://readonly:<password>@placeholder/app"
EXAMPLE_BLOCK = "integrity: {url_env: PROD_DB_READONLY_URL, host: 127.0.0.1, port: 5432, timeout: 30s}"
QUERY_EXAMPLE = "SELECT count(*) FROM documents"
_WRITE_WORDS = re.compile(r"\b(insert|update|delete|drop|alter|truncate|create|grant|revoke|copy|vacuum|into|merge|"
                          r"call|lock)\b", re.I)
# Connection failures that retrying cannot fix: credentials, names, TLS and pg_hba set-up.
_PERMANENT_CONNECT = re.compile(r"authentication failed|does not exist|no pg_hba\.conf entry|password|"
                                r"permission denied|ssl|certificate|invalid (dsn|connection option)", re.I)
_TRANSIENT_STATES = frozenset({"57014", "57P01", "57P02", "57P03", "53300", "53400", "40001", "40P01"})


def query_problem(query: str) -> str:
    """One read-only statement, as a careful integrity check should be (mirrors the sandbox's rule)."""
    text = query.strip().rstrip(";")
    if not re.match(r"^(select|with)\b", text, re.I) or _WRITE_WORDS.search(text) or ";" in text:
        return (f"integrity_check runs one read-only query; got {query!r}. Use a single SELECT, e.g. "
                f"`{QUERY_EXAMPLE}`.")
    return ""


@dataclass(frozen=True)
class IntegritySettings:
    """drbot.yml `environments.<env>.database.integrity`; `where` is that key path, for messages."""

    where: str
    url_env: str
    host: str | None = None
    port: int | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def parse(cls, block: Any, *, where: str, provider: str) -> IntegritySettings:
        """Read the block or refuse with a sentence naming the key and the right form."""
        if block is None:
            raise _config(f"{where} is missing, so drbot cannot connect to the restored database to check it; add "
                          f"`{EXAMPLE_BLOCK}` there in drbot.yml (host/port only when connecting through a tunnel "
                          f"or cloud-sql-proxy; otherwise the restored instance's endpoint is used) and export "
                          f"PROD_DB_READONLY_URL={URL_FORM}.", provider)
        if not isinstance(block, Mapping):
            raise _config(f"{where} must be a mapping such as `{EXAMPLE_BLOCK}`.", provider)
        unknown = sorted(set(block) - {"url_env", "host", "port", "timeout"})
        if unknown:
            raise _config(f"{where}: unknown key {', '.join(unknown)}; the keys are url_env, host, port and timeout, "
                          f"e.g. `{EXAMPLE_BLOCK}`.", provider)
        url_env = block.get("url_env")
        if not url_env or not isinstance(url_env, str):
            raise _config(f"{where}.url_env is missing; set it to the NAME of the environment variable holding the "
                          f"read-only URL, e.g. `url_env: PROD_DB_READONLY_URL` with "
                          f"PROD_DB_READONLY_URL={URL_FORM}.", provider)
        host = block.get("host")
        if host is not None and (not isinstance(host, str) or not host.strip()):
            raise _config(f"{where}.host must be a host name or address, e.g. `host: 127.0.0.1`.", provider)
        port = block.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise _config(f"{where}.port must be a TCP port number, e.g. `port: 5432`; got {port!r}.", provider)
        return cls(where=where, url_env=url_env, host=host.strip() if host else None, port=port,
                   timeout=_timeout(block.get("timeout", DEFAULT_TIMEOUT), where=where, provider=provider))

    def url(self, environ: Mapping[str, str], *, provider: str) -> sa.URL:
        """The read-only URL from the environment; its value is never repeated in a message."""
        raw = environ.get(self.url_env, "").strip()
        if not raw:
            raise _config(f"{self.where}.url_env names `{self.url_env}`, but that environment variable is not set; "
                          f"export {self.url_env}={URL_FORM} (a read-only user's credentials and the database "
                          "name; the host is replaced by the endpoint or integrity.host).", provider)
        try:
            url = sa.make_url(raw)
        except (sa.exc.ArgumentError, ValueError):
            url = None
        if url is None or not url.database:
            raise _config(f"The environment variable {self.url_env} ({self.where}.url_env) does not hold a "
                          f"SQLAlchemy URL with a database name; set it to the form {URL_FORM}.", provider)
        if url.get_backend_name() != "postgresql":
            raise _config(f"The environment variable {self.url_env} ({self.where}.url_env) holds a "
                          f"`{url.drivername}` URL; integrity checks support PostgreSQL only, in the form "
                          f"{URL_FORM}.", provider)
        return url


def shown(url: sa.URL) -> str:
    """The URL as people may see it: never with its password."""
    return url.render_as_string(hide_password=True)


def count_rows(*, url: sa.URL, query: str, timeout: float, where: str, provider: str) -> int | float:
    """Run `query` read-only against `url` and return its single number.

    The raw DBAPI cursor runs the user's query so that no layer parses it for bind parameters (`LIKE 'a%'` and
    `'10:00'::time` stay what they are); the transaction is rolled back whatever happens.
    """
    problem = query_problem(query)
    if problem:
        raise PermanentError(problem, provider=provider, code="InvalidQuery")
    try:
        engine = sa.create_engine(url, poolclass=NullPool, hide_parameters=True,
                                  connect_args={"connect_timeout": max(2, math.ceil(timeout))})
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise PermanentError(f"The database driver for `{url.drivername}` is not installed ({type(exc).__name__}); "
                             "install it with `pip install 'drbot[postgres]'` (psycopg 3).", provider=provider,
                             code="SqlDriverMissing") from None
    try:
        driver_error = engine.dialect.loaded_dbapi.Error
        try:
            connection = engine.raw_connection()  # the driver's own errors come through unwrapped here
        except (sa.exc.DBAPIError, driver_error) as exc:
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
            raise translate(cause, url=url, where=where, provider=provider, connecting=True) from None
        try:
            cursor = connection.cursor()
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", (str(int(timeout * 1000)),))
            cursor.execute(query)
            width = len(cursor.description or ())
            rows = cursor.fetchmany(2)
        except driver_error as exc:
            raise translate(exc, url=url, where=where, provider=provider, connecting=False) from None
        finally:
            _quietly_close(connection)
    finally:
        engine.dispose()
    return _number(rows, width=width, query=query, provider=provider)


def _number(rows: Sequence[Any], *, width: int, query: str, provider: str) -> int | float:
    """One row of one numeric column; the value itself is never echoed (a query may select private data)."""
    fix = f"write a query that returns one number, e.g. `{QUERY_EXAMPLE}`"
    if len(rows) != 1 or width != 1:
        shape = "no row" if not rows else ("more than one row" if len(rows) > 1 else f"{width} columns")
        raise PermanentError(f"The integrity query {query!r} returned {shape}; {fix}.", provider=provider,
                             code="NotANumber")
    value = rows[0][0]
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or not math.isfinite(value):
        kind = "NULL" if value is None else f"a {type(value).__name__}"
        raise PermanentError(f"The integrity query {query!r} returned {kind}, not a number; {fix}.",
                             provider=provider, code="NotANumber")
    return int(value) if value == int(value) else float(value)


def translate(exc: BaseException, *, url: sa.URL, where: str, provider: str, connecting: bool) -> ProviderError:
    """A driver error as a `ProviderError` that names the key to fix; secrets are removed from the text."""
    text = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
    state = str(getattr(exc, "sqlstate", "") or "")
    target = f"{url.host}:{url.port or DEFAULT_PORT}/{url.database}"
    url_key = f"{where}.url_env"
    if connecting:
        if _PERMANENT_CONNECT.search(text):
            return PermanentError(f"Could not log in to {target} as `{url.username}` ({text}); fix the read-only "
                                  f"user, password or database name in the URL that {url_key} names "
                                  f"(form: {URL_FORM}).", provider=provider, code="SqlAuthFailed")
        return TransientError(f"Could not connect to {target} ({text}); check that the restored instance accepts "
                              f"connections there, or set {where}.host/port to a tunnel or proxy such as "
                              "cloud-sql-proxy on 127.0.0.1.", provider=provider, code="SqlConnectFailed")
    if state == "57014":
        return TransientError(f"The integrity query on {target} was cancelled by the statement timeout ({text}); "
                              f"raise {where}.timeout or make the query cheaper.", provider=provider,
                              code="SqlTimeout")
    if state in _TRANSIENT_STATES or state.startswith("08"):
        return TransientError(f"The database at {target} dropped the integrity query ({text}); it will be "
                              "retried.", provider=provider, code=f"Sql{state or 'Error'}")
    if state == "25006":
        return PermanentError(f"The integrity query tried to write and the READ ONLY transaction refused it "
                              f"({text}); nothing was changed. Use a query that only reads, e.g. "
                              f"`{QUERY_EXAMPLE}`.", provider=provider, code="SqlReadOnly")
    return PermanentError(f"The integrity query failed on {target} ({text}); fix the step's query (the "
                          f"environment's settings.integrity_query) or the grants of the user that {url_key} "
                          "names.", provider=provider, code=f"Sql{state or 'Error'}")


def _scrub(text: str, url: sa.URL) -> str:
    cleaned = redact_text(text)
    password = url.password
    if password:
        cleaned = cleaned.replace(str(password), MASK)
    return cleaned


def _quietly_close(connection: Any) -> None:
    """Roll back (nothing was written, but a READ ONLY transaction still ends) and close; a dead connection
    must not hide the error that killed it."""
    for call in (connection.rollback, connection.close):
        with contextlib.suppress(Exception):  # best effort on a connection that may already be gone
            call()


def _timeout(value: Any, *, where: str, provider: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError:
            seconds = 0.0
        if seconds > 0:
            return seconds
    raise _config(f"{where}.timeout must be a duration such as `timeout: 30s` (or a number of seconds); got "
                  f"{value!r}.", provider)


def _config(message: str, provider: str) -> PermanentError:
    """Configuration refusals travel as `PermanentError`: the engine turns those into a step failure and a
    decision, whereas a `ConfigError` at run time would be a bug."""
    return PermanentError(message, provider=provider, code="IntegrityNotConfigured")
