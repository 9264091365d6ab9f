"""Response bodies, split from the storage model so the API contract is explicit."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from wcu_ai.tasks.model import Task, TaskStatus


class TaskPublic(BaseModel):
    id: UUID
    task_type: str
    status: TaskStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    result: Any | None
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, task: Task) -> TaskPublic:
        return cls(**{name: getattr(task, name) for name in cls.model_fields})


class TaskPage(BaseModel):
    items: list[TaskPublic]
    next_cursor: str | None


class Problem(BaseModel):
    detail: str
