"""Read access to the task queue."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, status

from wcu_ai.api.deps import ConnDep
from wcu_ai.api.pagination import decode_cursor, encode_cursor
from wcu_ai.api.schemas import TaskPage, TaskPublic
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import TaskStatus

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("/{task_id}", responses={404: {"description": "no such task"}})
async def get_task(task_id: UUID, conn: ConnDep) -> TaskPublic:
    task = await queue.get(conn, task_id)
    if task is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task with id {task_id}")
    return TaskPublic.of(task)


@router.get("")
async def list_tasks(
    conn: ConnDep,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    task_type: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TaskPage:
    """Newest first. Pass `next_cursor` back as `cursor` for the next page."""
    tasks = await queue.list_tasks(
        conn,
        status=status_.value if status_ else None,
        task_type=task_type,
        before=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    last = tasks[-1] if len(tasks) == limit else None
    return TaskPage(
        items=[TaskPublic.of(t) for t in tasks],
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
    )
