"""open_agents: Agno's agent and storage modules load off the API's start path (no connection)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fake_model import ScriptedModel, make
from wcu_ai.agents.catalog import ASSISTANT, open_agents
from wcu_ai.agents.model import ModelCheck
from wcu_ai.settings import Settings

SETTINGS = Settings(DATABASE_URL="postgresql://app@localhost:1/nowhere")
POOL: Any = None  # the search tool takes connections only when called


def test_the_catalog_loads_in_the_background_and_is_the_same_for_every_request() -> None:
    async def main() -> None:
        async with open_agents(SETTINGS, make(), POOL, None) as agents:
            assert agents is not None
            first, second = await asyncio.gather(agents.catalog(), agents.catalog())
            assert first is second
            assert str(first.storage.engine.url).startswith("postgresql+psycopg://")
            assert ASSISTANT.id in first.agents

    asyncio.run(main())


def test_a_checked_model_is_built_with_the_catalog_off_the_start_path() -> None:
    """`wcu-ai api` checks WCU_AGENT_MODEL in a child before serving; the model is built here, later."""

    async def main() -> None:
        check = ModelCheck.start("python:tests.fake_model:make")
        assert check is not None
        check.wait()
        async with open_agents(SETTINGS, check, POOL, None) as agents:
            assert agents is not None
            catalog = await agents.catalog()
            assert isinstance(catalog.model, ScriptedModel)

    asyncio.run(main())


def test_without_a_model_there_is_nothing_to_load() -> None:
    async def main() -> None:
        async with open_agents(SETTINGS, None, POOL, None) as agents:
            assert agents is None

    asyncio.run(main())


def test_leaving_before_the_load_finished_waits_for_it() -> None:
    async def main() -> None:
        async with open_agents(SETTINGS, make(), POOL, None):
            pass  # the API stopped at once: the loading thread is waited for, its engine disposed

    asyncio.run(main())
