"""Retention of finished tasks: deleted once older than WCU_TASK_RETENTION_DAYS, in bounded batches.

Finished means succeeded, failed or cancelled; a queued or running task is never deleted, however
old. Each batch is its own short transaction through the partial index of finished rows
(migration 0006), so a prune holds no lock for long and a busy queue goes on meanwhile. The
runner works `prune_tasks` on a schedule (task_runner.schedule); operators run the same deletion
with `wcu-ai tasks prune`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from wcu_ai.tasks import queue
from wcu_ai.tasks.model import Task
from wcu_ai.tasks.registry import TaskContext

logger = logging.getLogger(__name__)

PRUNE_TASK = "prune_tasks"
SECONDS_PER_DAY = 86400
#: Rows per DELETE: a short transaction that one index range scan serves.
BATCH_ROWS = 1000
#: Batches per prune: a million rows at most; the next scheduled run goes on from there.
MAX_BATCHES = 1000


@dataclass(frozen=True)
class PruneReport:
    cutoff: datetime
    deleted: int
    #: False when the prune stopped at its batch or time bound with finished tasks left.
    complete: bool


async def prune_finished(
    pool: AsyncConnectionPool,
    *,
    older_than_seconds: float,
    batch_rows: int = BATCH_ROWS,
    max_batches: int = MAX_BATCHES,
    time_budget_seconds: float | None = None,
) -> PruneReport:
    """Deletes the tasks that finished more than `older_than_seconds` ago, batch by batch."""
    async with pool.connection() as conn:
        cutoff = await queue.prune_cutoff(conn, older_than_seconds)
    started = time.monotonic()
    deleted = 0
    for _ in range(max_batches):
        if time_budget_seconds is not None and time.monotonic() - started > time_budget_seconds:
            break
        async with pool.connection() as conn:
            batch = await queue.prune_batch(conn, cutoff, batch_rows)
        deleted += batch
        if batch < batch_rows:
            return PruneReport(cutoff=cutoff, deleted=deleted, complete=True)
    return PruneReport(cutoff=cutoff, deleted=deleted, complete=False)


async def prune_tasks(task: Task, ctx: TaskContext) -> dict[str, Any]:
    """The runner's handler: the retention of WCU_TASK_RETENTION_DAYS, within half the task timeout."""
    days = ctx.settings.task_retention_days
    if days == 0:
        return {"skipped": "retention is off (WCU_TASK_RETENTION_DAYS=0)"}
    report = await prune_finished(
        ctx.pool,
        older_than_seconds=days * SECONDS_PER_DAY,
        # The rest of the time limit is the margin for the last batch and the outcome's write.
        time_budget_seconds=ctx.settings.task_timeout_seconds / 2,
    )
    logger.info(
        "finished tasks pruned",
        extra={
            "action": "tasks.pruned",
            "deleted": report.deleted,
            "cutoff": report.cutoff.isoformat(),
            "complete": report.complete,
        },
    )
    return {"deleted": report.deleted, "cutoff": report.cutoff.isoformat(), "complete": report.complete}
