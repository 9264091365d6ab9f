"""The API's reads and writes of sessions and memories: named SQL on Agno's tables.

Agno's storage answers a read that failed as "no such row" (an empty list, None) and logs the
error: a database stall would have answered 404 and empty histories, and a run would have
started its session afresh. These queries raise instead (the app answers 503). Rows become
Agno's own AgentSession (AgentSession.from_dict, what Agno's storage does with the same row).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from wcu_ai.database import load_queries
from wcu_ai.errors import SessionStorageLockedError

if TYPE_CHECKING:
    from agno.session import AgentSession

Q = load_queries("wcu_ai.agents", "queries.sql")

# How long a statement of a run's session (its lock, its claim, its write) waits for a lock held
# by another transaction. Without it a locked ai_sessions held every starting run's pooled
# connection until the statement timeout (30 s), and the pool ran dry for every other request.
LOCK_TIMEOUT_SECONDS = 3.0


def lock_timeout_params() -> dict[str, str]:
    return {"lock_timeout": f"{int(LOCK_TIMEOUT_SECONDS * 1000)}ms"}


def locked_error() -> SessionStorageLockedError:
    return SessionStorageLockedError(
        f"the agent's sessions stayed locked in the database by another transaction for more than "
        f"{LOCK_TIMEOUT_SECONDS:g} s; retry later"
    )


@contextlib.asynccontextmanager
async def session_transaction(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in one transaction whose lock waits end after LOCK_TIMEOUT_SECONDS.

    A wait that ran out is SessionStorageLockedError (503), once the connection is rolled back.
    """
    try:
        async with pool.connection() as conn:
            await conn.execute(Q["bound_lock_wait"], lock_timeout_params())
            yield conn
    except psycopg.errors.LockNotAvailable:
        raise locked_error() from None


def session_of_row(row: dict[str, Any]) -> AgentSession:
    from agno.session import AgentSession

    session = AgentSession.from_dict(row)
    if session is None:  # from_dict's answer to a row without session_id, which the key forbids
        raise ValueError("an ai_sessions row without session_id")
    return session


def owned(row: dict[str, Any] | None, *, agent_id: str, user_id: str | None) -> bool:
    """The row is a session of this agent (and of this user, when one is named) (pure)."""
    if row is None or row["session_type"] != "agent" or row["agent_id"] != agent_id:
        return False
    return user_id is None or row["user_id"] == user_id


async def claim_session(
    conn: AsyncConnection[Any], session_id: str, *, agent_id: str, user_id: str
) -> dict[str, Any]:
    """The session's row, created for this agent and user when new (call under the session's lock)."""
    params = {"session_id": session_id, "agent_id": agent_id, "user_id": user_id}
    await conn.execute(Q["claim_session"], params)
    row = await (await conn.execute(Q["session"], params)).fetchone()
    if row is None:  # inserted or already there, in this transaction: it cannot be missing
        raise RuntimeError("claim_session found no row")
    return row


async def session_row(conn: AsyncConnection[Any], session_id: str) -> dict[str, Any] | None:
    return await (await conn.execute(Q["session"], {"session_id": session_id})).fetchone()


async def user_sessions(
    conn: AsyncConnection[Any], *, agent_id: str, user_id: str, limit: int, page: int
) -> list[AgentSession]:
    params = {"agent_id": agent_id, "user_id": user_id, "limit": limit, "offset": (page - 1) * limit}
    rows = await (await conn.execute(Q["user_sessions"], params)).fetchall()
    return [session_of_row(r) for r in rows]


async def delete_session(conn: AsyncConnection[Any], session_id: str, *, agent_id: str, user_id: str) -> bool:
    params = {"session_id": session_id, "agent_id": agent_id, "user_id": user_id}
    return (await conn.execute(Q["delete_session"], params)).rowcount > 0


async def user_memories(
    conn: AsyncConnection[Any], user_id: str, *, limit: int, page: int
) -> list[dict[str, Any]]:
    params = {"user_id": user_id, "limit": limit, "offset": (page - 1) * limit}
    return await (await conn.execute(Q["user_memories"], params)).fetchall()
