"""database.py's connections over real TCP: the keepalives every connection of the service carries."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port
from tests.tcp_proxy import PostgresProxy
from wcu_ai.database import check_pooled_connection, connect, connect_async, open_pool
from wcu_ai.settings import Settings


def socket_options(fd: int) -> dict[str, int]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


EXPECTED = {"keepalive": 1, "idle": 30, "interval": 10, "count": 3, "user_timeout_ms": 60_000}


@pytest.fixture
def over_tcp(db_url: str) -> Any:
    proxy = PostgresProxy(db_url, free_port())
    proxy.start()
    yield Settings(DATABASE_URL=proxy.url)
    proxy.stop()


def test_every_kind_of_connection_gives_up_on_a_vanished_server_within_a_minute(over_tcp: Settings) -> None:
    # Without these the kernel's defaults apply: 2 h idle before the first probe, SO_KEEPALIVE off.
    with connect(over_tcp) as conn:
        assert socket_options(conn.pgconn.socket) == EXPECTED

    async def pooled_and_dedicated() -> list[dict[str, int]]:
        dedicated = await connect_async(over_tcp)
        async with dedicated, open_pool(over_tcp) as pool, pool.connection() as pooled:
            return [socket_options(dedicated.pgconn.socket), socket_options(pooled.pgconn.socket)]

    assert asyncio.run(pooled_and_dedicated()) == [EXPECTED, EXPECTED]


def backend_state_change(db_url: str, pid: int) -> Any:
    """When the backend `pid` last started or ended a statement (pg_stat_activity), from another connection."""
    with connect(Settings(DATABASE_URL=db_url), autocommit=True) as conn:
        row = conn.execute("SELECT state_change FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return row["state_change"] if row else None


def test_a_pooled_connection_is_checked_without_a_round_trip_until_the_server_ends_it(db_url: str) -> None:
    """The pool's check sends nothing on a healthy idle connection; one the server terminated fails
    the check (so the pool replaces it instead of failing a request with it)."""

    async def scenario() -> tuple[Any, Any, type[BaseException] | None]:
        conn = await connect_async(Settings(DATABASE_URL=db_url))
        async with conn:
            pid = conn.info.backend_pid
            before = await asyncio.to_thread(backend_state_change, db_url, pid)
            await asyncio.sleep(0.05)  # a statement now would move state_change past `before`
            for _ in range(3):
                await check_pooled_connection(conn)
            after = await asyncio.to_thread(backend_state_change, db_url, pid)
            with connect(Settings(DATABASE_URL=db_url), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # The server's FATAL message and end of connection reach the socket.
            deadline = asyncio.get_running_loop().time() + 10
            failed: type[BaseException] | None = None
            while failed is None and asyncio.get_running_loop().time() < deadline:
                try:
                    await check_pooled_connection(conn)
                except psycopg.OperationalError as exc:
                    failed = type(exc)
                await asyncio.sleep(0.02)
            return before, after, failed

    before, after, failed = asyncio.run(scenario())
    assert before is not None and after == before
    assert failed is not None and issubclass(failed, psycopg.OperationalError)


def test_a_pool_serves_requests_on_after_its_connections_were_terminated(db_url: str) -> None:
    """Every pooled connection ended by the server (a failover, pg_terminate_backend): the next
    users get working connections, not errors, and within the pool's timeout: the dead ones are
    dropped at once (psycopg's own check waits 1 s, 2 s … between them, past a 1 s timeout)."""

    async def scenario() -> tuple[list[int], int]:
        settings = Settings(DATABASE_URL=db_url, db_pool_size=5, db_connect_timeout_seconds=1)
        async with open_pool(settings, min_size=5) as pool:
            held = [await pool.getconn() for _ in range(5)]
            pids = [c.info.backend_pid for c in held]
            for c in held:
                await pool.putconn(c)
            with connect(settings, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
            await asyncio.sleep(0.2)
            answers = []
            for _ in range(6):
                async with pool.connection() as conn:
                    row = await (await conn.execute("SELECT 1 AS one")).fetchone()
                    answers.append(row["one"])
            return answers, pool.get_stats()["connections_lost"]

    answers, lost = asyncio.run(scenario())
    assert answers == [1] * 6
    assert lost == 5  # wcu_db_pool_connections_lost counts them
