"""Queueing Agno's metrics calculation, against real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row

from wcu_ai.agents.metrics import METRICS_TASK, request_metrics
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def queued_calculations(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ai_server_tasks WHERE task_type = %s AND status = 'queued'", (METRICS_TASK,)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def runs_ending_at_once(db_url: str, settings: Settings, count: int, *, autocommit: bool) -> list[bool]:
    """`count` agent runs ending together, each queueing from a connection of its own (API pods)."""
    conns = [
        await psycopg.AsyncConnection.connect(db_url, autocommit=autocommit, row_factory=dict_row)
        for _ in range(count)
    ]
    try:
        go = asyncio.Event()

        async def one(conn: psycopg.AsyncConnection[dict[str, object]]) -> bool:
            await go.wait()
            queued = await request_metrics(conn, settings)
            if not autocommit:
                await conn.commit()
            return queued

        runs = [asyncio.create_task(one(conn)) for conn in conns]
        await asyncio.sleep(0.2)
        go.set()
        return await asyncio.gather(*runs)
    finally:
        for conn in conns:
            await conn.close()


@pytest.mark.parametrize("autocommit", [True, False])
def test_runs_ending_at_once_queue_one_calculation(migrated: Settings, db_url: str, autocommit: bool) -> None:
    for _ in range(5):
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM ai_server_tasks WHERE task_type = %s", (METRICS_TASK,))
        queued = asyncio.run(runs_ending_at_once(db_url, migrated, 20, autocommit=autocommit))
        # The check and the insert are one step: exactly one of them queues, the rest find it.
        assert (sum(queued), queued_calculations(db_url)) == (1, 1)
    # And a run after the calculation has started queues the next one.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE ai_server_tasks SET status = 'running' WHERE task_type = %s", (METRICS_TASK,))
    assert asyncio.run(runs_ending_at_once(db_url, migrated, 3, autocommit=autocommit)).count(True) == 1
