"""The runner's sweep of documents stuck in queued or parsing with no parse to come.

A document mirrors its parse task, but references it without a foreign key (migration 0002), so
nothing stops the task from going away: pruned, deleted by hand, or ended by a runner killed
during its last attempt (its lease expired; the task failed, the document still says parsing),
or cancelled by an operator. The sweep queues a new parse for a document whose task is gone, and
marks failed, with the task's reason, a document whose task failed or was cancelled: that parse
was tried and ended, and `wcu-ai tasks retry` runs it again.
"""

from __future__ import annotations

import logging
from typing import Any

from wcu_ai.documents import store
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import Task, TaskStatus
from wcu_ai.tasks.registry import TaskContext

logger = logging.getLogger(__name__)

SWEEP_TASK = "sweep_stuck_documents"
#: Documents handled per sweep, in one transaction; the next sweep takes the rest.
SWEEP_LIMIT = 500
_REASON_CHARS = 2000


def stuck_reason(task_id: Any, task_status: str, task_error: str | None) -> str:
    """The failure_reason of a document whose parse task ended without parsing it."""
    if task_status == TaskStatus.CANCELLED:
        return f"its parse task {task_id} was cancelled; `wcu-ai tasks retry {task_id}` parses it again"
    return f"its parse task {task_id} failed: {task_error or 'no reason recorded'}"[:_REASON_CHARS]


async def sweep_stuck_documents(task: Task, ctx: TaskContext) -> dict[str, Any]:
    requeued: list[str] = []
    failed: list[str] = []
    async with ctx.pool.connection() as conn, conn.transaction():
        for row in await store.stuck_documents(conn, limit=SWEEP_LIMIT):
            document_id = row["id"]
            if row["task_status"] is None:
                task_id = await queue.enqueue(
                    conn,
                    store.PARSE_TASK,
                    {"document_id": str(document_id)},
                    max_attempts=ctx.settings.task_max_attempts,
                )
                await store.requeue(conn, document_id, task_id)
                requeued.append(str(document_id))
            else:
                reason = stuck_reason(row["task_id"], row["task_status"], row["task_error"])
                await store.set_status(conn, document_id, "failed", reason)
                failed.append(str(document_id))
    if requeued or failed:
        logger.warning(
            "stuck documents swept",
            extra={"action": "documents.swept", "requeued": len(requeued), "failed": len(failed)},
        )
    return {"requeued": requeued, "failed": failed}
