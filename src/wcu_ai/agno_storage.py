"""Agno's PostgreSQL storage, with the service's table names and timeouts.

Agno creates its tables lazily on first write. The runner owns the schema, so it forces the four
tables the service uses at start-up (get_agno_postgres_db, synchronous: the runner calls it in a
thread); the API only ever reads and writes rows in tables that already exist, through Agno's
asynchronous storage (AgnoStorage), so a slow or locked table never holds up its event loop. A
run's write of its session is our own SQL on that engine (agents/queries.sql store_session),
fenced by the run's session lock.

Both engines get the service's connect timeout and hide SQL parameters from their errors (they
hold prompts and replies; Agno logs those errors); the API's also WCU_DB_STATEMENT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from wcu_ai.agents.history import redact_failed_runs
from wcu_ai.agents.sessions import Q as SESSION_Q
from wcu_ai.agents.sessions import lock_timeout_params
from wcu_ai.database import connect_kwargs, sqlalchemy_url
from wcu_ai.logconfig import route_agno_logs
from wcu_ai.settings import Settings, load_settings

if TYPE_CHECKING:
    from agno.db.postgres import PostgresDb
    from agno.session import AgentSession
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

# Agno table type -> the service's table name.
AGNO_TABLES = {
    "sessions": "ai_sessions",
    "memories": "ai_memories",
    "metrics": "ai_metrics",
    "versions": "ai_versions",
}


def engine_options(settings: Settings, *, statement_timeout: bool) -> dict[str, Any]:
    """SQLAlchemy engine arguments for Agno's storage: our connection settings and timeouts.

    statement_timeout: the API's WCU_DB_STATEMENT_TIMEOUT_SECONDS (a request's storage); the
    runner's statements have none (its metrics calculation reads whole days of sessions).
    """
    from agno.db.utils import json_serializer

    kwargs = connect_kwargs(settings)
    timeout_ms = int(settings.db_statement_timeout_seconds * 1000) if statement_timeout else 0
    if timeout_ms:
        kwargs["options"] += f" -c statement_timeout={timeout_ms}"
    return {
        "connect_args": kwargs,
        "pool_size": settings.db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.db_connect_timeout_seconds,
        "pool_pre_ping": True,
        "pool_recycle": 3600,
        # Statement errors would quote their parameters: the runs JSON, that is prompts and replies.
        "hide_parameters": True,
        "json_serializer": json_serializer,
    }


def build_agno_postgres_db(settings: Settings) -> PostgresDb:
    """Agno's synchronous PostgresDb for our schema and table names (the runner's); creates nothing."""
    from agno.db.postgres import PostgresDb  # Agno is heavy to import: keep it off import paths.
    from sqlalchemy import create_engine

    route_agno_logs()

    return PostgresDb(
        db_engine=create_engine(
            sqlalchemy_url(settings), **engine_options(settings, statement_timeout=False)
        ),
        db_schema=settings.db_schema,
        session_table=AGNO_TABLES["sessions"],
        memory_table=AGNO_TABLES["memories"],
        metrics_table=AGNO_TABLES["metrics"],
        versions_table=AGNO_TABLES["versions"],
        id="wcu-ai",
    )


def ensure_agno_tables(db: PostgresDb) -> None:
    # Versions first: Agno records every table it creates in ai_versions.
    for table_type in ("versions", "sessions", "memories", "metrics"):
        # _get_table is Agno 2.9's own lazy-create path (pinned in pyproject.toml).
        table = db._get_table(table_type=table_type, create_table_if_not_found=True)
        if table is None:
            raise RuntimeError(f"Agno did not create its {table_type} table")


@functools.cache
def _cached_db(settings: Settings) -> PostgresDb:
    db = build_agno_postgres_db(settings)
    ensure_agno_tables(db)
    return db


def get_agno_postgres_db(settings: Settings | None = None) -> PostgresDb:
    """Agno's PostgresDb with ai_sessions, ai_memories, ai_metrics and ai_versions created (cached)."""
    settings = settings or load_settings()
    settings.require_database_url()
    return _cached_db(settings)


class AgnoStorage:
    """The API's side of Agno's storage: one async engine, and the tables as reflected once.

    Each run gets its own RunStorage on this engine (run_storage): Agno's session I/O answers
    None for a read that failed and then starts the session afresh, overwriting its stored runs,
    and it swallows a failed write. A run therefore starts from the session the API read itself
    (under the session's lock), and its storage records whether the run was written.
    """

    def __init__(self, settings: Settings) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        route_agno_logs()
        self.settings = settings
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(settings), **engine_options(settings, statement_timeout=True)
        )
        self.tables: dict[str, Table] = {}
        _run_storage_class()  # Agno's storage module loads here (the API's loading thread), not in a run

    def run_storage(self, session: AgentSession, holder: uuid.UUID) -> Any:
        """A RunStorage (an Agno AsyncPostgresDb) for one run of this session, which holds its
        lock as `holder` (session_lock.SessionLock.holder)."""
        return _run_storage_class()(self, session, holder)

    async def close(self) -> None:
        await self.engine.dispose()


@functools.cache
def _run_storage_class() -> type[Any]:
    """RunStorage, defined on first use: it subclasses Agno's AsyncPostgresDb (a heavy import)."""
    from agno.db.postgres import AsyncPostgresDb
    from agno.db.utils import json_serializer

    class RunStorage(AsyncPostgresDb):
        """Agno's async storage for one run of one session.

        - The session is the one the API read before the run: Agno does not read it again.
        - Tables are never created (the runner's), and are reflected once per process, not on
          every call as Agno does; tables the service does not use (approvals, traces …) are
          absent.
        - Before the session is written, failed runs lose the error text Agno put in their
          content and events (a provider's error can quote a key); `saved` says whether the
          write went through.
        - The session is written only while this run still holds its lock (fenced): a run whose
          lease ran out during a database stall, and whose session another run has taken and
          stored since, would otherwise write its stale copy over that run's turn.
        """

        def __init__(self, storage: AgnoStorage, session: AgentSession, holder: uuid.UUID) -> None:
            super().__init__(
                id="wcu-ai",
                db_engine=storage.engine,
                db_schema=storage.settings.db_schema,
                session_table=AGNO_TABLES["sessions"],
                memory_table=AGNO_TABLES["memories"],
                metrics_table=AGNO_TABLES["metrics"],
                versions_table=AGNO_TABLES["versions"],
                create_schema=False,
            )
            self._tables = storage.tables
            self.session = session
            self.holder = holder
            self.saved = False

        async def _get_table(self, table_type: str, create_table_if_not_found: bool | None = False) -> Any:
            if table_type not in AGNO_TABLES:
                return None
            table = self._tables.get(table_type)
            if table is None:
                table = await super()._get_table(table_type=table_type, create_table_if_not_found=False)
                if table is not None:
                    self._tables[table_type] = table
            return table

        async def get_session(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
            if session_id == self.session.session_id and kwargs.get("deserialize", True) is not False:
                return self.session
            return await super().get_session(session_id, *args, **kwargs)

        async def upsert_session(self, session: Any, deserialize: bool | None = True) -> Any:
            from agno.session import AgentSession

            if not (isinstance(session, AgentSession) and session.session_id == self.session.session_id):
                return await super().upsert_session(session, deserialize=deserialize)
            redact_failed_runs(session)
            try:
                self.saved = await self._fenced_write(session)
            except Exception as exc:
                # Never raised to Agno (it prints tracebacks) nor logged with text: it can quote prompts.
                error = getattr(exc, "orig", None) or exc
                logger.warning(
                    "could not store a run's session",
                    extra={"action": "agents.session_not_stored", "error": type(error).__name__},
                )
                self.saved = False
            if not self.saved:
                return None
            return session if deserialize is not False else session.to_dict()

        async def _fenced_write(self, session: AgentSession) -> bool:
            """Writes the session in one transaction with the check that this run holds its lock."""
            from agno.utils.string import sanitize_postgres_strings

            row = session.to_dict()
            fence = {"session_id": session.session_id, "holder": self.holder}

            def jsonb(key: str) -> Jsonb | None:
                value = row.get(key)
                return (
                    None if value is None else Jsonb(sanitize_postgres_strings(value), dumps=json_serializer)
                )

            params = {
                "session_id": session.session_id,
                "agent_id": row.get("agent_id"),
                "user_id": row.get("user_id"),
                "created_at": row.get("created_at"),
                **{k: jsonb(k) for k in ("runs", "agent_data", "session_data", "summary", "metadata")},
            }
            async with self.db_engine.begin() as conn:
                await conn.exec_driver_sql(SESSION_Q["bound_lock_wait"], lock_timeout_params())
                if (await conn.exec_driver_sql(SESSION_Q["session_lock_held"], fence)).first() is None:
                    logger.warning(
                        "a run that lost its session's lock did not store its answer",
                        extra={"action": "agents.session_write_fenced", "session_id": session.session_id},
                    )
                    return False
                return (await conn.exec_driver_sql(SESSION_Q["store_session"], params)).first() is not None

    return RunStorage
