"""The API's own SQL on Agno's tables, against real PostgreSQL with the runner's Agno tables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from wcu_ai.agents import sessions
from wcu_ai.agno_storage import get_agno_postgres_db
from wcu_ai.database import open_pool
from wcu_ai.settings import Settings


@pytest.fixture
def agno_tables(settings: Settings) -> Settings:
    get_agno_postgres_db(settings)  # what the runner does at start
    return settings


def with_conn[T](settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_pool(settings) as pool, pool.connection() as conn:
            return await body(conn)

    return asyncio.run(main())


def test_the_first_claim_of_a_session_owns_it_and_later_claims_find_it_taken(agno_tables: Settings) -> None:
    async def body(conn: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        first = await sessions.claim_session(conn, "s1", agent_id="assistant", user_id="ann")
        second = await sessions.claim_session(conn, "s1", agent_id="assistant", user_id="ben")
        return first, second

    first, second = with_conn(agno_tables, body)
    assert (first["user_id"], second["user_id"]) == ("ann", "ann")
    assert sessions.owned(second, agent_id="assistant", user_id="ann")
    assert not sessions.owned(second, agent_id="assistant", user_id="ben")
    assert not sessions.owned(second, agent_id="other", user_id="ann")
    assert sessions.owned(second, agent_id="assistant", user_id=None)
    assert not sessions.owned(None, agent_id="assistant", user_id=None)
    session = sessions.session_of_row(first)
    assert (session.session_id, session.user_id, session.runs) == ("s1", "ann", [])


def test_a_delete_takes_only_the_owners_session(agno_tables: Settings) -> None:
    async def body(conn: Any) -> list[bool]:
        await sessions.claim_session(conn, "s1", agent_id="assistant", user_id="ann")
        return [
            await sessions.delete_session(conn, "s1", agent_id="assistant", user_id="ben"),
            await sessions.delete_session(conn, "s1", agent_id="assistant", user_id="ann"),
            await sessions.delete_session(conn, "s1", agent_id="assistant", user_id="ann"),
        ]

    assert with_conn(agno_tables, body) == [False, True, False]


def test_a_database_that_fails_raises_instead_of_answering_nothing(agno_tables: Settings) -> None:
    # Agno's own reads answered [] and None here: a stall looked like "no sessions".
    with psycopg.connect(agno_tables.require_database_url(), autocommit=True) as conn:
        conn.execute("ALTER TABLE ai_sessions RENAME TO ai_sessions_gone")

    async def body(conn: Any) -> None:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await sessions.user_sessions(conn, agent_id="assistant", user_id="ann", limit=5, page=1)

    with_conn(agno_tables, body)
