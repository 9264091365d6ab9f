"""Agno's storage as the service configures it, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from agno.run.agent import RunInput, RunOutput
from agno.run.base import RunStatus
from agno.session import AgentSession
from sqlalchemy import text

from wcu_ai.agno_storage import AgnoStorage, engine_options, get_agno_postgres_db
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings


def test_the_engines_get_the_connect_timeout_the_api_one_the_statement_timeout_and_hide_parameters() -> None:
    settings = Settings(
        DATABASE_URL="postgresql://app@localhost:1/x",
        db_statement_timeout_seconds=2.5,
        db_connect_timeout_seconds=4,
    )
    options = engine_options(settings, statement_timeout=True)
    assert options["hide_parameters"] is True
    assert options["connect_args"]["connect_timeout"] == 4 and options["pool_timeout"] == 4
    assert options["connect_args"]["options"].endswith(" -c statement_timeout=2500")
    unbounded = engine_options(
        Settings(DATABASE_URL="postgresql://app@localhost:1/x", db_statement_timeout_seconds=0),
        statement_timeout=True,
    )
    assert "statement_timeout" not in unbounded["connect_args"]["options"]
    runner = engine_options(settings, statement_timeout=False)  # the runner's statements have none
    assert "statement_timeout" not in runner["connect_args"]["options"] and runner["hide_parameters"]


def _session(session_id: str) -> AgentSession:
    return AgentSession(session_id=session_id, agent_id="assistant", user_id="ann", runs=[], created_at=1)


def _run(status: RunStatus, content: str) -> RunOutput:
    return RunOutput(
        run_id=str(uuid.uuid4()),
        agent_id="assistant",
        status=status,
        content=content,
        input=RunInput(input_content="q"),
    )


def _hold_lock(settings: Settings, session_id: str) -> uuid.UUID:
    """A run's lock on the session (migration 0005's table), as session_lock.lock_session takes it."""
    holder = uuid.uuid4()
    with psycopg.connect(settings.require_database_url()) as conn:
        conn.execute(
            "INSERT INTO ai_agent_session_locks (session_id, holder, expires_at)"
            " VALUES (%s, %s, now() + interval '1 minute')",
            (session_id, holder),
        )
    return holder


def test_a_run_storage_reads_its_session_once_writes_it_checked_and_redacted(settings: Settings) -> None:
    settings = settings.model_copy(update={"db_statement_timeout_seconds": 2})
    get_agno_postgres_db(settings)  # the runner's tables
    MigrationTool(settings).run_up()
    holder = _hold_lock(settings, "s1")

    async def main() -> dict[str, Any]:
        storage = AgnoStorage(settings)
        try:
            async with storage.engine.connect() as conn:
                timeout = (await conn.execute(text("SHOW statement_timeout"))).scalar()
            session = _session("s1")
            db = storage.run_storage(session, holder)
            assert await db.get_session("s1", deserialize=True) is session  # no query: the API's read
            session.upsert_run(_run(RunStatus.completed, "the answer"))
            session.upsert_run(_run(RunStatus.error, "Error code: 401 api_key=sk-secret"))
            await db.upsert_session(session)
            # A run that does not hold the session's lock (its lease ran out, another run took
            # it) writes nothing: its copy of the session is stale.
            fenced = storage.run_storage(_session("s1"), uuid.uuid4())
            await fenced.upsert_session(fenced.session)
            return {
                "timeout": timeout,
                "saved": db.saved,
                "fenced_saved": fenced.saved,
                "tables_reflected": sorted(storage.tables),
            }
        finally:
            await storage.close()

    result = asyncio.run(main())
    # The session write is our fenced SQL: it reflects no table.
    assert result == {"timeout": "2s", "saved": True, "fenced_saved": False, "tables_reflected": []}
    with psycopg.connect(settings.require_database_url()) as conn:
        [(runs,)] = conn.execute("SELECT runs FROM ai_sessions WHERE session_id = 's1'").fetchall()
    assert [(r["status"], r.get("content")) for r in runs] == [("COMPLETED", "the answer"), ("ERROR", None)]
    assert "sk-secret" not in str(runs)


def test_a_run_storage_never_creates_a_table_and_reports_an_unsaved_session(settings: Settings) -> None:
    def tables() -> set[str]:
        with psycopg.connect(settings.require_database_url()) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        return {r[0] for r in rows}

    before = tables()  # a database the runner has not initialised: no ai_sessions

    async def main() -> bool:
        storage = AgnoStorage(settings)
        try:
            db = storage.run_storage(_session("s1"), uuid.uuid4())
            await db.upsert_session(db.session)
            assert await db._get_table("approvals", create_table_if_not_found=True) is None
            return db.saved
        finally:
            await storage.close()

    assert asyncio.run(main()) is False
    assert tables() == before
