"""Connections to PostgreSQL.

Every connection the service opens goes through here so that the schema (WCU_DB_SCHEMA) is on
the search_path and connection failures become one actionable DatabaseUnavailableError without
the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from wcu_ai.errors import DatabaseUnavailableError, MigrationError
from wcu_ai.settings import Settings

# TCP keepalives and a user timeout on every connection's client socket (libpq parameters; a Unix
# socket ignores them). Without them a connection whose server vanished without a word (a host
# that died, a silent network partition) waits on the kernel's defaults, two hours and more: the
# leader would keep "leading" on a lock connection that is gone, a request would hang past its
# statement timeout, which the server can no longer apply. With them the kernel gives up after
# about a minute: 30 s idle, then 3 probes 10 s apart, or 60 s of data sent and not acknowledged.
# A long statement is unaffected (the server's kernel acknowledges the probes while it computes),
# and so is a server whose process is frozen but whose kernel answers: that case is bounded by the
# callers (the metrics' queue read aborts itself; the leader's lock stays, deployment.md).
TCP_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


def connect_kwargs(settings: Settings, *, statement_timeout_seconds: float | None = None) -> dict[str, Any]:
    # public stays on the path so an extension installed there (pgvector on RDS) resolves.
    search_path = settings.db_schema if settings.db_schema == "public" else f"{settings.db_schema},public"
    options = f"-c search_path={search_path}"
    if statement_timeout_seconds:
        # Set at connection start: every statement on the connection, with no SET round trip.
        options += f" -c statement_timeout={max(1, round(statement_timeout_seconds * 1000))}"
    return {
        "options": options,
        "connect_timeout": max(1, int(settings.db_connect_timeout_seconds)),
        "application_name": "wcu-ai",
        **TCP_KEEPALIVE,
    }


def conninfo(settings: Settings) -> str:
    url = settings.require_database_url()
    # SQLAlchemy-style URLs are accepted in DATABASE_URL too; libpq wants the plain scheme.
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_url(settings: Settings) -> str:
    url = conninfo(settings)
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def unavailable(settings: Settings, exc: BaseException) -> DatabaseUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailableError(
        f"cannot connect to the database at {settings.database_url_redacted} (DATABASE_URL): {reason}"
    )


@contextlib.contextmanager
def connect(settings: Settings, *, autocommit: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A synchronous connection (migrations, CLI)."""
    try:
        conn = psycopg.connect(
            conninfo(settings), autocommit=autocommit, row_factory=dict_row, **connect_kwargs(settings)
        )
    except psycopg.OperationalError as exc:
        raise unavailable(settings, exc) from None
    with conn:
        yield conn


async def connect_async(
    settings: Settings, *, autocommit: bool = True
) -> psycopg.AsyncConnection[dict[str, Any]]:
    """A dedicated asynchronous connection (runner leadership lock, LISTEN)."""
    try:
        return await psycopg.AsyncConnection.connect(
            conninfo(settings), autocommit=autocommit, row_factory=dict_row, **connect_kwargs(settings)
        )
    except psycopg.OperationalError as exc:
        raise unavailable(settings, exc) from None


@contextlib.asynccontextmanager
async def open_pool(
    settings: Settings,
    *,
    min_size: int = 1,
    wait: bool = True,
    statement_timeout_seconds: float | None = None,
) -> AsyncIterator[AsyncConnectionPool]:
    """A connection pool; with wait=False it opens even while the database is down.

    statement_timeout_seconds (the API's, WCU_DB_STATEMENT_TIMEOUT_SECONDS) makes PostgreSQL cancel
    any statement of the pool's connections that runs longer; None or 0: no limit (the runner's).
    """
    kwargs = connect_kwargs(settings, statement_timeout_seconds=statement_timeout_seconds)
    pool = CheckedPool(
        conninfo(settings),
        min_size=min(min_size, settings.db_pool_size),
        max_size=settings.db_pool_size,
        kwargs={"row_factory": dict_row, **kwargs},
        # No check=: CheckedPool checks before lending, without psycopg's back-off between failures.
        timeout=settings.db_connect_timeout_seconds,
        open=False,
        name="wcu-ai",
    )
    try:
        await pool.open(wait=wait, timeout=settings.db_connect_timeout_seconds)
    except Exception as exc:
        await pool.close()
        raise unavailable(settings, exc) from None
    try:
        yield pool
    finally:
        await pool.close()


class CheckedPool(AsyncConnectionPool):
    """psycopg's pool, whose connections are checked before they are lent (check_pooled_connection).

    psycopg's own check= waits 1 s, then 2, 4 …, after each connection that fails it: after a
    server restart every idle connection is dead, and a request walked them one back-off at a
    time into its 10 s timeout (503) while /health/ready reported the database down. Here the
    dead ones are dropped one after the other at once; the pool opens new ones as it needs them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lost = 0

    async def getconn(self, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            conn = await super().getconn(max(0.0, deadline - time.monotonic()))
            try:
                await check_pooled_connection(conn)
            except psycopg.Error:
                self._lost += 1
                await self.putconn(conn)  # broken: the pool closes it and opens another
                continue
            except BaseException:
                await self.putconn(conn)
                raise
            return conn

    def get_stats(self) -> dict[str, int]:
        stats = super().get_stats()
        stats["connections_lost"] = stats.get("connections_lost", 0) + self._lost
        return stats


async def check_pooled_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check of an idle connection before handing it out; a round trip only when needed.

    An idle connection has nothing to read. When a server ends a connection (a restart, a failover,
    pg_terminate_backend, idle_session_timeout) it sends its FATAL error and closes the socket, so
    the socket reads: only then is psycopg's round-trip check made, and a connection failing it is
    replaced. Polling is a system call; the round trip was one more on every request. A peer gone
    without a word answers neither: TCP_KEEPALIVE bounds that case.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    waiting = select.poll()
    waiting.register(conn.fileno(), select.POLLIN)
    if waiting.poll(0):
        await AsyncConnectionPool.check_connection(conn)


def lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for one purpose in one schema."""
    digest = hashlib.sha256(f"wcu_ai:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(
    conn: psycopg.Connection[Any], key: int, timeout_seconds: float, *, what: str
) -> Iterator[None]:
    """A session-level advisory lock held for the block; waits at most timeout_seconds."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout_seconds * 1000)}ms",))
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    except psycopg.errors.LockNotAvailable:
        raise MigrationError(
            f"another {what} held the lock for {timeout_seconds:.0f}s; if no runner or `wcu-ai migrate` "
            f"is running, end the stale session holding pg_advisory_lock({key}) (see pg_locks)"
        ) from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', '0', false)")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def load_queries(package: str, filename: str) -> dict[str, str]:
    """Named queries from a .sql file: each starts with a `-- name: <name>` line."""
    from importlib import resources

    text = (resources.files(package) / filename).read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: <end>"]:
        if line.startswith("-- name: "):
            if name is not None:
                queries[name] = "\n".join(lines).strip().rstrip(";")
            name, lines = line.removeprefix("-- name: ").strip(), []
        elif name is not None and not line.startswith("--"):
            lines.append(line)
    return queries
