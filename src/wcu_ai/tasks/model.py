"""Tasks as the runner and the API see them, and the pure rules that move them along."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Task:
    id: UUID
    task_type: str
    payload: dict[str, Any]
    status: TaskStatus
    attempts: int
    max_attempts: int
    run_after: datetime
    lease_expires_at: datetime | None
    locked_by: str | None
    last_error: str | None
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        return cls(**{**row, "status": TaskStatus(row["status"])})


def retry_delay(attempt: int, *, base: float, cap: float, jitter: float = 0.1) -> float:
    """Exponential backoff after failed attempt number `attempt` (1-based), capped, with jitter."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * (1 + random.uniform(-jitter, jitter)) if delay else 0.0  # noqa: S311 - not crypto


def should_retry(attempts: int, max_attempts: int, *, permanent: bool) -> bool:
    return not permanent and attempts < max_attempts


def error_text(exc: BaseException, limit: int = 2000) -> str:
    """A task's last_error: the exception's own message, bounded in size."""
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, Exception) or type(exc).__module__.startswith("wcu_ai"):
        return text[:limit]
    return f"{type(exc).__name__}: {text}"[:limit]
