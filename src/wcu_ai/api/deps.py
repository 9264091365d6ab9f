"""Request dependencies: settings, a pooled connection, API-key auth."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from wcu_ai.settings import Settings

# The dependencies are coroutines although they do not wait: FastAPI runs a plain function in its
# thread pool, a thread hop on every request for a dictionary lookup.


async def get_settings(request: Request) -> Settings:
    return request.state.settings


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.state.pool


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in autocommit: each statement commits as it completes.

    The routes on ConnDep write with one statement, or only read; at READ COMMITTED each statement
    sees the database as it is when it starts, in a transaction or not (a route reading twice
    handles a row gone in between: /text), so BEGIN and COMMIT would be two more round trips on
    every request for nothing. A route that must write twice atomically opens `conn.transaction()`.
    The pool's other users (agents, uploads) get the pool's default back.
    """
    # No connection in time (PoolTimeout) or a server gone mid-request: api/app.py answers 503.
    pool: AsyncConnectionPool = request.state.pool
    async with pool.connection() as conn:
        await conn.set_autocommit(True)  # a flag: the connection is idle, nothing is sent
        try:
            yield conn
        finally:
            # Not idle: cancelled mid-statement or broken; the pool discards such a connection.
            if conn.pgconn.transaction_status == TransactionStatus.IDLE:
                await conn.set_autocommit(False)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
# scope="function": the connection goes back to the pool before the response is sent, and a route's
# write (DELETE) has committed with its statement, so a failure is answered 503 instead of breaking
# a response already started, and a write is never reported done before it is committed.
ConnDep = Annotated[AsyncConnection[Any], Depends(get_conn, scope="function")]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_api_key(request: Request) -> None:
    """Bearer API keys from WCU_API_KEYS; compared in constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers=_CHALLENGE,
        )
    keys: tuple[str, ...] = request.state.settings.api_keys
    candidate = token.strip().encode()
    # Every key is compared so the time taken does not reveal which one nearly matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    if not matched:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)
