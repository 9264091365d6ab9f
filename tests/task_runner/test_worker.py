"""The Worker in-process against real PostgreSQL: how it writes outcomes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wcu_ai.database import open_pool
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.task_runner.worker import CompletionWriter, Worker
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import TaskStatus
from wcu_ai.tasks.registry import TaskRegistry


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def test_completions_arriving_during_a_write_go_out_together(migrated: Settings) -> None:
    async def main() -> tuple[list[bool], list[int], list[Any]]:
        async with open_pool(migrated) as pool:
            async with pool.connection() as conn:
                for i in range(6):
                    await queue.enqueue(conn, "noop", {"i": i})
                tasks = await queue.claim(conn, runner="r", limit=6, lease_seconds=30)
            batches: list[int] = []
            complete_many = queue.complete_many

            async def counting(conn: Any, outcomes: list[Any], *, runner: str) -> set[Any]:
                batches.append(len(outcomes))
                return await complete_many(conn, outcomes, runner=runner)

            queue.complete_many = counting  # type: ignore[assignment]
            try:
                writer = CompletionWriter(pool.connection, "r")
                held = await asyncio.gather(*(writer.complete(t, {"i": t.payload["i"]}) for t in tasks))
                await writer.close()
            finally:
                queue.complete_many = complete_many  # type: ignore[assignment]
            async with pool.connection() as conn:
                rows = [await queue.get(conn, t.id) for t in tasks]
            return held, batches, rows

    held, batches, rows = asyncio.run(main())
    assert held == [True] * 6
    # Six completions at once: one statement, not six.
    assert batches == [6]
    assert all(r.status is TaskStatus.SUCCEEDED and r.result == r.payload for r in rows)


def test_a_result_that_cannot_be_stored_fails_only_its_own_completion(migrated: Settings) -> None:
    async def main() -> list[Any]:
        async with open_pool(migrated) as pool:
            async with pool.connection() as conn:
                for i in range(2):
                    await queue.enqueue(conn, "noop", {"i": i})
                good, bad = await queue.claim(conn, runner="r", limit=2, lease_seconds=30)
            circular: list[Any] = []
            circular.append(circular)
            writer = CompletionWriter(pool.connection, "r")
            outcomes = await asyncio.gather(
                writer.complete(good, {"ok": True}), writer.complete(bad, circular), return_exceptions=True
            )
            await writer.close()
            return outcomes

    ok, failed = asyncio.run(main())
    assert ok is True
    assert isinstance(failed, ValueError)


def test_a_busy_worker_records_every_outcome(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"runner_concurrency": 4})

    async def main() -> list[Any]:
        registry = TaskRegistry()
        done = asyncio.Event()
        seen = 0

        async def noop(task: Any, ctx: Any) -> dict[str, Any]:
            nonlocal seen
            seen += 1
            if seen == 40:
                done.set()
            return {"i": task.payload["i"]}

        registry.register("noop", noop)
        async with open_pool(settings, min_size=2) as pool:
            async with pool.connection() as conn:
                for i in range(40):
                    await queue.enqueue(conn, "noop", {"i": i})
            stop, lost = asyncio.Event(), asyncio.Event()
            worker = asyncio.create_task(Worker(settings, pool, registry, "r").run(stop, lost))
            await asyncio.wait_for(done.wait(), 30)
            stop.set()
            await worker
            async with pool.connection() as conn:
                return await queue.list_tasks(conn, limit=100)

    tasks = asyncio.run(main())
    assert len(tasks) == 40
    assert all(t.status is TaskStatus.SUCCEEDED and t.result == t.payload for t in tasks)
