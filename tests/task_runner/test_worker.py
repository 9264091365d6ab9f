"""The Worker in-process against real PostgreSQL: how it writes outcomes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from wcu_ai.database import open_pool
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.task_runner.worker import CompletionWriter, Worker
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import TaskStatus
from wcu_ai.tasks.registry import TaskRegistry, diagnostic_registry


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def test_completions_arriving_during_a_write_go_out_together(migrated: Settings) -> None:
    async def main() -> tuple[list[Any], list[int], list[Any]]:
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

            reports: list[Any] = []
            queue.complete_many = counting  # type: ignore[assignment]
            try:
                writer = CompletionWriter(pool.connection, "r", lambda *r: reports.append(r))
                for t in tasks:
                    writer.submit(t, queue.encode_result({"i": t.payload["i"]}), {"task_id": str(t.id)})
                assert len(writer.unrecorded) == 6
                await writer.close()
                assert writer.unrecorded == {}
            finally:
                queue.complete_many = complete_many  # type: ignore[assignment]
            async with pool.connection() as conn:
                rows = [await queue.get(conn, t.id) for t in tasks]
            return reports, batches, rows

    reports, batches, rows = asyncio.run(main())
    assert reports == [("task.succeeded", {"task_id": str(r.id)}, True) for r in rows]
    # Six completions at once: one statement, not six.
    assert batches == [6]
    assert all(r.status is TaskStatus.SUCCEEDED and r.result == r.payload for r in rows)


def test_a_result_the_database_refuses_fails_only_its_own_task(migrated: Settings) -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        async with open_pool(migrated) as pool:
            async with pool.connection() as conn:
                for i in range(3):
                    await queue.enqueue(conn, "noop", {"i": i})
                tasks = await queue.claim(conn, runner="r", limit=3, lease_seconds=30)
            reports: list[Any] = []
            writer = CompletionWriter(pool.connection, "r", lambda *r: reports.append(r))
            # jsonb has no NUL character: PostgreSQL refuses this one, in the same batch as the others.
            results = [{"ok": 0}, "a\x00b", {"ok": 2}]
            for task, result in zip(tasks, results, strict=True):
                writer.submit(
                    task, queue.encode_result(result), {"task_id": str(task.id), "n": task.payload["i"]}
                )
            await writer.close()
            async with pool.connection() as conn:
                rows = [await queue.get(conn, t.id) for t in tasks]
            return reports, rows

    reports, rows = asyncio.run(main())
    assert [(action, log["n"], held) for action, log, held in reports] == [
        ("task.succeeded", 0, True),
        ("task.failed", 1, True),
        ("task.succeeded", 2, True),
    ]
    assert [r.status for r in rows] == [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SUCCEEDED]
    assert rows[1].last_error is not None and rows[1].last_error.startswith(
        "the result could not be stored: "
    )
    assert reports[1][1]["error"] == rows[1].last_error


def test_a_result_that_cannot_be_stored_fails_its_task_at_once_with_the_reason(migrated: Settings) -> None:
    """Regression: such a task stayed `running` until its lease expired, then ran again, and a
    result PostgreSQL refused failed the completions written in the same statement with it."""
    settings = migrated.model_copy(update={"runner_concurrency": 8})
    circular: list[Any] = []
    circular.append(circular)
    results: dict[str, Any] = {
        "circular": circular,
        "nan": float("nan"),
        "nul": "a\x00b",
        "surrogate": "\ud800",
        "fine": {"ok": True},
        "fine too": [1, 2],
    }

    async def main() -> list[Any]:
        registry = TaskRegistry()

        async def returns(task: Any, ctx: Any) -> Any:
            return results[task.payload["kind"]]

        registry.register("returns", returns)
        async with open_pool(settings, min_size=2) as pool:
            async with pool.connection() as conn:
                for kind in results:
                    await queue.enqueue(conn, "returns", {"kind": kind})
            stop, lost = asyncio.Event(), asyncio.Event()
            worker = asyncio.create_task(Worker(settings, pool, registry, "r").run(stop, lost))
            try:
                for _ in range(300):  # 30 s at most
                    async with pool.connection() as conn:
                        tasks = await queue.list_tasks(conn, limit=100)
                    if all(t.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) for t in tasks):
                        break
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await worker
            return tasks

    by_kind = {t.payload["kind"]: t for t in asyncio.run(main())}
    for kind in ("fine", "fine too"):
        assert by_kind[kind].status is TaskStatus.SUCCEEDED and by_kind[kind].result == results[kind]
    for kind in ("circular", "nan", "nul", "surrogate"):
        task = by_kind[kind]
        assert (task.status, task.attempts) == (TaskStatus.FAILED, 1), (kind, task)
        assert task.last_error is not None and "result" in task.last_error and "stored" in task.last_error


def test_a_busy_worker_records_every_outcome(migrated: Settings) -> None:
    # No polling: every claim after the first is woken by a freed slot or a written outcome.
    settings = migrated.model_copy(update={"runner_concurrency": 4, "runner_poll_seconds": 3600})

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


async def work_until_done(
    settings: Settings, registry: TaskRegistry, pool: Any, timeout: float = 30
) -> list[Any]:
    """Runs a Worker until every task is succeeded or failed (at most `timeout` seconds)."""
    stop, lost = asyncio.Event(), asyncio.Event()
    worker = asyncio.create_task(Worker(settings, pool, registry, "r").run(stop, lost))
    try:
        for _ in range(int(timeout * 10)):
            async with pool.connection() as conn:
                tasks = await queue.list_tasks(conn, limit=100)
            if all(t.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) for t in tasks):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await worker
    return tasks


def test_a_task_that_succeeds_without_waiting_logs_its_outcome_only(
    migrated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> dict[str, Any]:
        registry = diagnostic_registry()
        async with open_pool(migrated, min_size=2) as pool:
            async with pool.connection() as conn:
                ids = {
                    "noop": await queue.enqueue(conn, "noop"),
                    "sleep": await queue.enqueue(conn, "sleep", {"seconds": 0.01}),
                    "fail": await queue.enqueue(conn, "fail", {"permanent": True}),
                }
            await work_until_done(migrated, registry, pool)
        return {kind: str(task_id) for kind, task_id in ids.items()}

    with caplog.at_level(logging.INFO, logger="wcu_ai.task_runner.worker"):
        ids = asyncio.run(main())
    lines = {kind: [r for r in caplog.records if getattr(r, "task_id", None) == i] for kind, i in ids.items()}
    assert [r.action for r in lines["noop"]] == ["task.succeeded"]  # type: ignore[attr-defined]
    done = lines["noop"][0]
    assert (done.attempt, done.task_type) == (1, "noop") and done.slot in (0, 1)  # type: ignore[attr-defined]
    assert isinstance(done.duration_ms, int)  # type: ignore[attr-defined]
    # A handler that waits, and one that fails, still have their start line first.
    assert [r.action for r in lines["sleep"]] == ["task.started", "task.succeeded"]  # type: ignore[attr-defined]
    assert [r.action for r in lines["fail"]] == ["task.started", "task.failed"]  # type: ignore[attr-defined]


def test_a_handler_past_the_time_limit_is_cancelled_and_retried_with_the_reason(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"task_timeout_seconds": 0.3, "task_retry_base_seconds": 0.0})
    cancelled = 0

    async def main() -> list[Any]:
        registry = TaskRegistry()

        async def hangs(task: Any, ctx: Any) -> None:
            nonlocal cancelled
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled += 1
                raise

        registry.register("hangs", hangs)
        async with open_pool(settings, min_size=2) as pool:
            async with pool.connection() as conn:
                await queue.enqueue(conn, "hangs", max_attempts=2)
            return await work_until_done(settings, registry, pool)

    [task] = asyncio.run(main())
    assert (task.status, task.attempts, cancelled) == (TaskStatus.FAILED, 2, 2)
    assert task.last_error == "timed out after 0.3s"


def test_a_task_whose_runner_died_on_its_last_attempt_is_failed_by_the_next_claim(migrated: Settings) -> None:
    async def main() -> list[Any]:
        async with open_pool(migrated, min_size=2) as pool:
            async with pool.connection() as conn:
                await queue.enqueue(conn, "noop", max_attempts=1)
                await queue.claim(conn, runner="dead", limit=1, lease_seconds=0.1)
            await asyncio.sleep(0.3)
            return await work_until_done(migrated, diagnostic_registry(), pool)

    [task] = asyncio.run(main())
    assert (task.status, task.attempts) == (TaskStatus.FAILED, 1)
    assert "lease expired" in (task.last_error or "")


def test_connections_the_server_closed_while_the_worker_was_idle_are_replaced_before_use(
    migrated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # No polling: only LISTEN (which reconnects) wakes the worker.
    settings = migrated.model_copy(update={"runner_poll_seconds": 3600})

    async def main() -> list[Any]:
        async with open_pool(settings, min_size=2) as pool:
            stop, lost = asyncio.Event(), asyncio.Event()
            worker = asyncio.create_task(Worker(settings, pool, diagnostic_registry(), "r").run(stop, lost))
            try:
                async with pool.connection() as conn:
                    first = await queue.enqueue(conn, "noop")
                tasks = []
                for _ in range(300):
                    async with pool.connection() as conn:
                        done = await queue.get(conn, first)
                    if done is not None and done.status is TaskStatus.SUCCEEDED:
                        break
                    await asyncio.sleep(0.1)
                # Every other session of the service goes, as in a failover or an idle timeout.
                async with pool.connection() as conn:
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'wcu-ai' AND pid <> pg_backend_pid()"
                    )
                await asyncio.sleep(1.5)  # idle past HeldConnection's check_after
                async with pool.connection() as conn:
                    second = await queue.enqueue(conn, "noop")
                for _ in range(300):
                    async with pool.connection() as conn:
                        tasks = [await queue.get(conn, first), await queue.get(conn, second)]
                    if all(t is not None and t.status is TaskStatus.SUCCEEDED for t in tasks):
                        break
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await worker
            return tasks

    with caplog.at_level(logging.INFO, logger="wcu_ai.task_runner.worker"):
        tasks = asyncio.run(main())
    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 2
    # The claim never met the dead connection: it was noticed and replaced before use.
    assert not [r for r in caplog.records if getattr(r, "action", None) == "runner.db_error"]
