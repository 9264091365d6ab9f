"""An operator's control of one task: retry it, cancel it; a refusal says why and what to do.

What cancelling means: a queued task never runs. A running one is marked cancelled at once; the
runner working it learns at its next lease renewal (a third of WCU_TASK_LEASE_SECONDS) that it no
longer holds the task, and abandons it (the handler is cancelled). Every write of an attempt's
outcome is guarded by status = 'running', so whatever that attempt ends with is discarded and the
cancel stands. Work a handler did before it stopped (a document parsed) is not undone.

Retrying gives a failed or cancelled task more attempts and queues it, due now. Its attempt count
goes on rather than restarting, so an attempt of before can never pass the attempt guard of the
outcome writes; and a task cancelled while running is retried only once its last lease has ended,
so its old attempt has been abandoned before a new one starts.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from wcu_ai.errors import TaskNotFoundError, TaskStateError
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import Task, TaskStatus

_RETRY_HINTS = {
    TaskStatus.SUCCEEDED: "enqueue a new task with `wcu-ai enqueue` to run it again",
    TaskStatus.QUEUED: "it is waiting to run already",
    TaskStatus.RUNNING: "it is running; cancel it first to start it afresh",
}
_CANCEL_HINTS = {
    TaskStatus.FAILED: "retry it with `wcu-ai tasks retry`",
    TaskStatus.CANCELLED: "retry it with `wcu-ai tasks retry`",
}


async def retry_task(conn: AsyncConnection[Any], task_id: UUID, *, attempts: int) -> None:
    """Queues a failed or cancelled task again, due now, with `attempts` more attempts."""
    if not await queue.retry(conn, task_id, attempts=attempts):
        task = await _get(conn, task_id)
        if task.status == TaskStatus.CANCELLED and task.lease_expires_at is not None:
            raise TaskStateError(
                f"task {task_id} was cancelled while running, and the runner working it may not have let "
                f"go yet: retry it once its lease ends ({task.lease_expires_at.isoformat(timespec='seconds')})"
            )
        raise TaskStateError(
            _refusal(
                task_id,
                task.status,
                "only failed or cancelled tasks are retried",
                _RETRY_HINTS.get(task.status),
            )
        )


async def cancel_task(conn: AsyncConnection[Any], task_id: UUID) -> TaskStatus:
    """Cancels a queued or running task; returns the status it had."""
    was = await queue.cancel(conn, task_id)
    if was is None:
        status = (await _get(conn, task_id)).status
        raise TaskStateError(
            _refusal(task_id, status, "only queued or running tasks are cancelled", _CANCEL_HINTS.get(status))
        )
    return was


async def _get(conn: AsyncConnection[Any], task_id: UUID) -> Task:
    task = await queue.get(conn, task_id)
    if task is None:
        raise TaskNotFoundError(f"no task with id {task_id}: check the id with GET /v1/tasks")
    return task


def _refusal(task_id: UUID, status: TaskStatus, rule: str, hint: str | None) -> str:
    return f"task {task_id} is {status}: {rule}" + (f"; {hint}" if hint else "")
