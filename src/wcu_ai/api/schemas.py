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


class UploadAccepted(BaseModel):
    document_id: UUID
    task_id: UUID | None
    status: str
    duplicate: bool


class DocumentPublic(BaseModel):
    id: UUID
    filename: str
    content_type: str
    kind: str
    sha256: str
    size_bytes: int
    status: str
    failure_reason: str | None
    page_count: int | None
    title: str | None
    author: str | None
    producer: str | None
    pdf_bytes: int | None
    text_chars: int | None
    task_id: UUID | None
    created_at: datetime
    updated_at: datetime
    parsed_at: datetime | None


class DocumentPage(BaseModel):
    items: list[DocumentPublic]
    next_cursor: str | None


class PageText(BaseModel):
    page: int
    text: str


class DocumentText(BaseModel):
    document_id: UUID
    page_count: int
    text: str
    pages: list[PageText]


class SearchHit(BaseModel):
    document_id: UUID
    page: int
    score: float
    snippet: str
    text: str


class SearchResults(BaseModel):
    query: str
    mode: str
    results: list[SearchHit]
