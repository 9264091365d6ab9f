"""How the assistant is put together (no database connection is made)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.fake_model import make
from wcu_ai.agents.catalog import ASSISTANT, AgentCatalog
from wcu_ai.agents.knowledge import DocumentSearch
from wcu_ai.agno_storage import build_agno_postgres_db
from wcu_ai.errors import DatabaseUnavailableError
from wcu_ai.settings import Settings


def test_the_assistant_uses_the_runner_tables_history_memory_and_no_telemetry() -> None:
    settings = Settings(DATABASE_URL="postgresql://app@localhost:1/nowhere", agent_history_runs=3)
    pool: Any = None  # the search tool takes connections only when called
    db = build_agno_postgres_db(settings)
    catalog = AgentCatalog(settings, make(), db, DocumentSearch(pool, None, None, limit=5))
    agent = catalog.build(ASSISTANT.id)
    assert agent.db is db
    assert (db.session_table_name, db.memory_table_name, db.metrics_table_name) == (
        "ai_sessions",
        "ai_memories",
        "ai_metrics",
    )
    assert agent.telemetry is False
    assert (agent.add_history_to_context, agent.num_history_runs) == (True, 3)
    assert agent.enable_agentic_memory is True
    assert [t.__name__ for t in agent.tools or []] == ["search_documents"]
    assert catalog.info("nobody") is None


def _dropped() -> None:
    raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def test_storage_whose_connection_drops_is_database_unavailable() -> None:
    settings = Settings(DATABASE_URL="postgresql://app@127.0.0.1:1/nowhere")
    pool: Any = None
    catalog = AgentCatalog(
        settings, make(), build_agno_postgres_db(settings), DocumentSearch(pool, None, None, limit=5)
    )
    with pytest.raises(DatabaseUnavailableError, match="retry later"):
        asyncio.run(catalog._storage(_dropped))
