"""Operations on ai_server_tasks: one function per named query in queries.sql."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.cursor import BaseCursor
from psycopg.rows import scalar_row
from psycopg.types.json import Jsonb

from wcu_ai.database import load_queries
from wcu_ai.tasks.model import Task, TaskStatus

Q = load_queries("wcu_ai.tasks", "queries.sql")


def notify_channel(schema: str) -> str:
    """The channel the insert trigger of migration 0001 notifies on."""
    return f"{schema}.ai_server_tasks"


async def enqueue(
    conn: AsyncConnection[Any],
    task_type: str,
    payload: dict[str, Any] | None = None,
    *,
    max_attempts: int = 3,
    delay_seconds: float = 0.0,
) -> UUID:
    params = {
        "task_type": task_type,
        "payload": Jsonb(payload or {}),
        "max_attempts": max_attempts,
        "delay": delay_seconds,
    }
    row = await (await conn.execute(Q["enqueue"], params)).fetchone()
    assert row is not None
    return row["id"]


_TASK_FIELDS = [f.name for f in fields(Task)]
_STATUSES = {status.value: status for status in TaskStatus}


def claimed_task_row(cursor: BaseCursor[Any, Any]) -> Callable[[Sequence[Any]], Task]:
    """Rows of `claim` as Tasks, without a dict per row: its columns are Task's fields, in order,
    the payload as JSON text (psycopg's jsonb loader costs more than json.loads of a str)."""
    names = [column.name for column in cursor.description or ()]
    if names != _TASK_FIELDS:
        raise AssertionError(f"the claim query returns {names}, not Task's fields")
    loads, status = json.loads, _STATUSES

    def make(values: Sequence[Any]) -> Task:
        return Task(values[0], values[1], loads(values[2]), status[values[3]], *values[4:])

    return make


async def claim(conn: AsyncConnection[Any], *, runner: str, limit: int, lease_seconds: float) -> list[Task]:
    params = {"limit": limit, "runner": runner, "lease": lease_seconds}
    async with conn.cursor(row_factory=claimed_task_row) as cur:
        return await (await cur.execute(Q["claim"], params)).fetchall()


async def fail_expired(conn: AsyncConnection[Any]) -> int:
    return (await conn.execute(Q["fail_expired"])).rowcount


async def fail_expired_and_claim(
    conn: AsyncConnection[Any], *, runner: str, limit: int, lease_seconds: float
) -> tuple[int, list[Task]]:
    """fail_expired, then claim: sent together, one round trip instead of two.

    Both run in one transaction, as in a transaction block (pipeline mode: one sync for the two).
    """
    params = {"limit": limit, "runner": runner, "lease": lease_seconds}
    async with conn.cursor(row_factory=claimed_task_row) as claimed:
        async with conn.pipeline():
            failed = await conn.execute(Q["fail_expired"])
            await claimed.execute(Q["claim"], params)
        return failed.rowcount, await claimed.fetchall()


async def next_due_in(conn: AsyncConnection[Any]) -> float | None:
    """Seconds until the next queued task is due (None when the queue is empty)."""
    row = await (await conn.execute(Q["next_due_in"])).fetchone()
    return None if row is None or row["due_in"] is None else max(0.0, row["due_in"])


async def extend_leases(
    conn: AsyncConnection[Any], *, runner: str, task_ids: list[UUID], lease_seconds: float
) -> tuple[set[UUID], set[UUID]]:
    """Renews the leases this runner holds; returns (the ids still held, the ids an operator
    cancelled while this runner worked them). Any other id was taken by another runner."""
    params = {"lease": lease_seconds, "ids": task_ids, "runner": runner}
    rows = await (await conn.execute(Q["extend_leases"], params)).fetchall()
    held = {r["id"] for r in rows if r["status"] == TaskStatus.RUNNING}
    return held, {r["id"] for r in rows if r["status"] == TaskStatus.CANCELLED}


async def _end_attempt(conn: AsyncConnection[Any], name: str, task: Task, runner: str, **params: Any) -> bool:
    cur = await conn.execute(Q[name], {"id": task.id, "runner": runner, "attempts": task.attempts, **params})
    return cur.rowcount == 1


async def complete(conn: AsyncConnection[Any], task: Task, *, runner: str, result: Any) -> bool:
    """One successful attempt: complete_many with a single outcome."""
    return task.id in await complete_many(conn, [(task, encode_result(result))], runner=runner)


async def complete_many(
    conn: AsyncConnection[Any], outcomes: list[tuple[Task, str]], *, runner: str
) -> set[UUID]:
    """Records several successful attempts in one statement; returns the ids this runner still held.

    Each result is already JSON text (encode_result). The batch goes as one JSON array: three
    arrays of parameters cost psycopg a Python-level dump of every element (bench/run).
    """
    batch = ",".join(
        f'{{"id":"{task.id}","attempts":{task.attempts:d},"result":{result}}}' for task, result in outcomes
    )
    params = {"outcomes": f"[{batch}]", "runner": runner}
    async with conn.cursor(row_factory=scalar_row) as cur:
        return set(await (await cur.execute(Q["complete_many"], params)).fetchall())


async def retry_later(
    conn: AsyncConnection[Any], task: Task, *, runner: str, error: str, delay_seconds: float
) -> bool:
    return await _end_attempt(conn, "retry_later", task, runner, error=error, delay=delay_seconds)


async def fail(conn: AsyncConnection[Any], task: Task, *, runner: str, error: str) -> bool:
    return await _end_attempt(conn, "fail", task, runner, error=error)


async def release(conn: AsyncConnection[Any], task: Task, *, runner: str) -> bool:
    """Back to the queue without burning the attempt (the runner is shutting down)."""
    return await _end_attempt(conn, "release", task, runner)


async def get(conn: AsyncConnection[Any], task_id: UUID) -> Task | None:
    row = await (await conn.execute(Q["get"], {"id": task_id})).fetchone()
    return None if row is None else Task.from_row(row)


async def list_tasks(
    conn: AsyncConnection[Any],
    *,
    status: str | None = None,
    task_type: str | None = None,
    before: tuple[datetime, UUID] | None = None,
    limit: int = 50,
) -> list[Task]:
    """Newest first; page with before = (created_at, id) of the last row seen."""
    before_ts, before_id = before if before else (None, None)
    params = {
        "status": status,
        "task_type": task_type,
        "before_ts": before_ts,
        "before_id": before_id,
        "limit": limit,
    }
    return [Task.from_row(r) for r in await (await conn.execute(Q["list"], params)).fetchall()]


async def prune_cutoff(conn: AsyncConnection[Any], older_than_seconds: float) -> datetime:
    """The database's now() less `older_than_seconds`: tasks finished before it may be pruned."""
    row = await (await conn.execute(Q["prune_cutoff"], {"older_than": older_than_seconds})).fetchone()
    assert row is not None
    return row["cutoff"]


async def count_prunable(conn: AsyncConnection[Any], cutoff: datetime) -> int:
    row = await (await conn.execute(Q["count_prunable"], {"cutoff": cutoff})).fetchone()
    assert row is not None
    return int(row["n"])


async def any_prunable(conn: AsyncConnection[Any], cutoff: datetime) -> bool:
    row = await (await conn.execute(Q["any_prunable"], {"cutoff": cutoff})).fetchone()
    return bool(row and row["any"])


async def prune_batch(conn: AsyncConnection[Any], cutoff: datetime, limit: int) -> int:
    """Deletes at most `limit` of the tasks finished before `cutoff`, oldest first; returns how many."""
    return (await conn.execute(Q["prune_batch"], {"cutoff": cutoff, "limit": limit})).rowcount


async def cancel(conn: AsyncConnection[Any], task_id: UUID) -> TaskStatus | None:
    """Cancels a queued or running task; returns the status it had, None when it had neither."""
    row = await (await conn.execute(Q["cancel"], {"id": task_id})).fetchone()
    return None if row is None else TaskStatus(row["was"])


async def retry(conn: AsyncConnection[Any], task_id: UUID, *, attempts: int) -> bool:
    """Queues a failed or cancelled task again, due now, with `attempts` more; False when refused."""
    row = await (await conn.execute(Q["retry"], {"id": task_id, "attempts": attempts})).fetchone()
    return row is not None


_encode_result = json.JSONEncoder(default=str, allow_nan=False).encode


def encode_result(value: Any) -> str:
    """A handler's result as the JSON text stored for it; what JSON has no type for, as its string form.

    Raises ValueError for what cannot be stored: a value that contains itself, NaN or infinity
    (PostgreSQL's jsonb has neither), keys that are not strings or numbers.
    """
    try:
        return _encode_result(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
