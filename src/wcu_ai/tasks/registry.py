"""Task type -> handler. The runner's composition root decides what is registered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from wcu_ai.errors import PermanentTaskError
from wcu_ai.settings import Settings
from wcu_ai.tasks.model import Task


@dataclass
class TaskContext:
    """What a handler gets besides its task: the slot it runs in (one per concurrent task)."""

    settings: Settings
    pool: AsyncConnectionPool
    slot: int
    resources: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Task, TaskContext], Awaitable[Any]]


class TaskRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, task_type: str, handler: Handler) -> None:
        if task_type in self._handlers:
            raise ValueError(f"task type {task_type!r} is registered twice")
        self._handlers[task_type] = handler

    def get(self, task_type: str) -> Handler:
        try:
            return self._handlers[task_type]
        except KeyError:
            raise PermanentTaskError(
                f"no handler for task type {task_type!r}; known types: {', '.join(sorted(self._handlers))}"
            ) from None

    @property
    def task_types(self) -> list[str]:
        return sorted(self._handlers)


# Diagnostic task types: let operators, tests and benchmarks exercise the queue end to end.
MAX_SLEEP_SECONDS = 3600.0


async def noop(task: Task, ctx: TaskContext) -> dict[str, Any]:
    return {"echo": task.payload}


async def sleep(task: Task, ctx: TaskContext) -> dict[str, Any]:
    seconds = task.payload.get("seconds", 1)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise PermanentTaskError(f"sleep needs payload.seconds between 0 and {MAX_SLEEP_SECONDS:.0f}")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def fail(task: Task, ctx: TaskContext) -> None:
    message = str(task.payload.get("message", "failed on purpose"))
    if task.payload.get("permanent"):
        raise PermanentTaskError(message)
    raise RuntimeError(message)


def diagnostic_registry() -> TaskRegistry:
    registry = TaskRegistry()
    registry.register("noop", noop)
    registry.register("sleep", sleep)
    registry.register("fail", fail)
    return registry
