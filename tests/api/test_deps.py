"""api/deps.py: the connection a route gets, and what the pool gets back."""

from __future__ import annotations

import asyncio
import contextlib

from psycopg.pq import TransactionStatus
from starlette.requests import Request

from wcu_ai.api.deps import get_conn
from wcu_ai.database import open_pool
from wcu_ai.settings import Settings


def test_a_route_connection_commits_each_statement_and_goes_back_to_the_pool_as_it_came(db_url: str) -> None:
    """No BEGIN/COMMIT round trips for a route's single statement; the agents and uploads, which
    share the pool and rely on its transactions, get a connection in the pool's default mode."""

    async def scenario() -> tuple[bool, TransactionStatus, bool, bool]:
        async with open_pool(Settings(DATABASE_URL=db_url, db_pool_size=1), min_size=1) as pool:
            request = Request({"type": "http", "headers": [], "state": {"pool": pool}})
            dependency = get_conn(request)
            conn = await anext(dependency)
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (n int)")
            await conn.execute("INSERT INTO seen VALUES (1)")
            during = (conn.autocommit, conn.info.transaction_status)
            with contextlib.suppress(StopAsyncIteration):
                await anext(dependency)
            async with pool.connection() as again:
                return (*during, again is conn, again.autocommit)

    autocommit, status, same, autocommit_after = asyncio.run(scenario())
    assert autocommit and status == TransactionStatus.IDLE  # committed: nothing left open
    assert same and not autocommit_after
