"""How the assistant is put together (no database connection is made)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from agno.session import AgentSession

from tests.fake_model import make
from wcu_ai.agents.catalog import ASSISTANT, AgentCatalog
from wcu_ai.agents.knowledge import DocumentSearch
from wcu_ai.agno_storage import AgnoStorage
from wcu_ai.settings import Settings


def test_the_assistant_uses_its_runs_storage_history_memory_and_no_telemetry() -> None:
    async def main() -> None:
        settings = Settings(DATABASE_URL="postgresql://app@localhost:1/nowhere", agent_history_runs=3)
        pool: Any = None  # the search tool takes connections only when called
        storage = AgnoStorage(settings)
        try:
            catalog = AgentCatalog(settings, make(), storage, DocumentSearch(pool, None, None, limit=5), pool)
            run_db = storage.run_storage(
                AgentSession(session_id="s1", agent_id=ASSISTANT.id, user_id="ada"), uuid.uuid4()
            )
            agent = catalog.build(ASSISTANT.id, run_db)
            assert agent.db is run_db
            assert (run_db.session_table_name, run_db.memory_table_name, run_db.metrics_table_name) == (
                "ai_sessions",
                "ai_memories",
                "ai_metrics",
            )
            assert run_db.db_engine is storage.engine  # one engine (and pool) for every run
            assert agent.telemetry is False
            assert (agent.add_history_to_context, agent.num_history_runs) == (True, 3)
            assert agent.enable_agentic_memory is True
            assert [t.__name__ for t in agent.tools or []] == ["search_documents"]
            assert catalog.info("nobody") is None
        finally:
            await storage.close()

    asyncio.run(main())
