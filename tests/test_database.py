"""database.py's connections over real TCP: the keepalives every connection of the service carries."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from tests.conftest import free_port
from tests.tcp_proxy import PostgresProxy
from wcu_ai.database import connect, connect_async, open_pool
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
