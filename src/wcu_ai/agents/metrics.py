"""Agno's daily metrics in ai_metrics, calculated by the runner off the request path.

Agno aggregates metrics from the sessions table with PostgresDb.calculate_metrics(), which
rescans every session of the days not yet complete. That is a batch job, not request work: after
a run the API queues one calculate_agent_metrics task (unless one is already waiting), delayed
by WCU_AGENT_METRICS_DELAY_SECONDS so that a busy minute costs one calculation, and the
singleton runner works it with its retries, so API pods never compete on the same upsert.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection

from wcu_ai.agno_storage import get_agno_postgres_db
from wcu_ai.database import load_queries, lock_key
from wcu_ai.settings import Settings
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import Task
from wcu_ai.tasks.registry import TaskContext

METRICS_TASK = "calculate_agent_metrics"

Q = load_queries("wcu_ai.agents", "queries.sql")


async def request_metrics(conn: AsyncConnection[Any], settings: Settings) -> bool:
    """Queues a calculation unless one is waiting already; True when this call queued it."""
    async with conn.transaction():
        await conn.execute(Q["lock_metrics_queueing"], {"key": lock_key(METRICS_TASK, settings.db_schema)})
        row = await (await conn.execute(Q["metrics_task_queued"], {"task_type": METRICS_TASK})).fetchone()
        if row is not None and row["queued"]:
            return False
        await queue.enqueue(conn, METRICS_TASK, delay_seconds=settings.agent_metrics_delay_seconds)
        return True


async def calculate_agent_metrics(task: Task, ctx: TaskContext) -> dict[str, Any]:
    """The runner's handler: Agno's calculation, in a thread (its storage is synchronous)."""
    db = get_agno_postgres_db(ctx.settings)
    records = await asyncio.to_thread(db.calculate_metrics)
    return {"days": sorted(str(r["date"]) for r in records or [])}
