"""Request dependencies: settings, a pooled connection, API-key auth."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from wcu_ai.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.state.settings


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.state.pool


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    # No connection in time (PoolTimeout) or a server gone mid-request: api/app.py answers 503.
    pool: AsyncConnectionPool = request.state.pool
    async with pool.connection() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
# scope="function": the transaction commits before the response is sent, so a failed COMMIT (the
# database went away) is answered 503 instead of breaking a response already started, and a write
# (DELETE) is never reported done before it is committed.
ConnDep = Annotated[AsyncConnection[Any], Depends(get_conn, scope="function")]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require_api_key(request: Request) -> None:
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
