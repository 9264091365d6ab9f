"""The queue's SQL against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from wcu_ai.database import open_pool
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import TaskStatus


def run_with_pool[T](settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_pool(settings) as pool:
            return await body(pool)

    return asyncio.run(main())


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def test_two_concurrent_claims_never_take_the_same_task(migrated: Settings) -> None:
    async def body(pool: Any) -> tuple[list[Any], list[Any]]:
        async with pool.connection() as conn:
            for i in range(20):
                await queue.enqueue(conn, "noop", {"i": i})

        async def claim(runner: str) -> list[Any]:
            async with pool.connection() as conn:
                return await queue.claim(conn, runner=runner, limit=15, lease_seconds=30)

        a, b = await asyncio.gather(claim("a"), claim("b"))
        return a, b

    a, b = run_with_pool(migrated, body)
    ids_a, ids_b = {t.id for t in a}, {t.id for t in b}
    assert not ids_a & ids_b
    assert len(ids_a | ids_b) == 20
    assert all(t.status is TaskStatus.RUNNING and t.attempts == 1 for t in a + b)


def test_an_expired_lease_is_claimed_again_and_a_stale_runner_cannot_finish(migrated: Settings) -> None:
    async def body(pool: Any) -> None:
        async with pool.connection() as conn:
            await queue.enqueue(conn, "noop")
            [first] = await queue.claim(conn, runner="dead", limit=5, lease_seconds=0.2)
            assert await queue.claim(conn, runner="other", limit=5, lease_seconds=30) == []
        await asyncio.sleep(0.4)
        async with pool.connection() as conn:
            [again] = await queue.claim(conn, runner="alive", limit=5, lease_seconds=30)
            assert again.id == first.id and again.attempts == 2 and again.locked_by == "alive"
            # The dead runner wakes up: its outcome is discarded, the live attempt's stands.
            assert not await queue.complete(conn, first, runner="dead", result={"stale": True})
            assert await queue.complete(conn, again, runner="alive", result={"ok": True})
            done = await queue.get(conn, first.id)
            assert done is not None and done.status is TaskStatus.SUCCEEDED and done.result == {"ok": True}

    run_with_pool(migrated, body)


def test_a_lease_expiring_on_the_last_attempt_fails_the_task_with_a_reason(migrated: Settings) -> None:
    async def body(pool: Any) -> None:
        async with pool.connection() as conn:
            task_id = await queue.enqueue(conn, "noop", max_attempts=1)
            await queue.claim(conn, runner="dead", limit=1, lease_seconds=0.1)
        await asyncio.sleep(0.3)
        async with pool.connection() as conn:
            assert await queue.claim(conn, runner="x", limit=1, lease_seconds=30) == []
            assert await queue.fail_expired(conn) == 1
            task = await queue.get(conn, task_id)
            assert task is not None and task.status is TaskStatus.FAILED
            assert "lease expired" in (task.last_error or "")

    run_with_pool(migrated, body)


def test_release_returns_the_task_without_spending_the_attempt(migrated: Settings) -> None:
    async def body(pool: Any) -> None:
        async with pool.connection() as conn:
            task_id = await queue.enqueue(conn, "noop")
            [task] = await queue.claim(conn, runner="r", limit=1, lease_seconds=30)
            assert await queue.release(conn, task, runner="r")
            back = await queue.get(conn, task_id)
            assert back is not None and back.status is TaskStatus.QUEUED and back.attempts == 0

    run_with_pool(migrated, body)


def test_retry_later_waits_for_its_delay(migrated: Settings) -> None:
    async def body(pool: Any) -> None:
        async with pool.connection() as conn:
            await queue.enqueue(conn, "noop")
            [task] = await queue.claim(conn, runner="r", limit=1, lease_seconds=30)
            assert await queue.retry_later(conn, task, runner="r", error="boom", delay_seconds=60)
            assert await queue.claim(conn, runner="r", limit=1, lease_seconds=30) == []
            due = await queue.next_due_in(conn)
            assert due is not None and 55 < due <= 60

    run_with_pool(migrated, body)


def test_list_pages_through_ties_without_loss(migrated: Settings) -> None:
    async def body(pool: Any) -> list[Any]:
        async with pool.connection() as conn, conn.transaction():
            # One transaction: all rows share created_at, so paging must split ties by id.
            for i in range(7):
                await queue.enqueue(conn, "noop" if i % 2 else "sleep", {"i": i})
        seen, before = [], None
        async with pool.connection() as conn:
            while True:
                page = await queue.list_tasks(conn, limit=3, before=before)
                seen += page
                if len(page) < 3:
                    break
                before = (page[-1].created_at, page[-1].id)
            only_sleep = await queue.list_tasks(conn, task_type="sleep", status="queued")
            assert len(only_sleep) == 4
        return seen

    seen = run_with_pool(migrated, body)
    assert len({t.id for t in seen}) == 7


def test_the_insert_trigger_notifies_the_schema_channel(migrated: Settings, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute('LISTEN "public.ai_server_tasks"')

        async def body(pool: Any) -> None:
            async with pool.connection() as conn:
                await queue.enqueue(conn, "noop")

        run_with_pool(migrated, body)
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("public.ai_server_tasks", "noop")]


def test_a_claim_reads_the_backlog_through_its_indexes(migrated: Settings, db_url: str) -> None:
    """Issue 7: an OR of queued and expired rows scanned and sorted the whole backlog per claim."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO ai_server_tasks (task_type) SELECT 'noop' FROM generate_series(1, 5000)")
        conn.execute(
            "INSERT INTO ai_server_tasks (task_type, status) SELECT 'noop', 'succeeded' FROM generate_series(1, 5000)"
        )
        conn.execute("ANALYZE ai_server_tasks")
        params = {"limit": 2, "runner": "r", "lease": 30}
        with conn.transaction(force_rollback=True):
            [[plan]] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + queue.Q["claim"], params).fetchall()

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    read = {(n["Node Type"], n.get("Index Name")): n["Actual Rows"] for n in nodes(plan[0]["Plan"])}
    assert max(read.values()) <= 4, read  # limit 2 of each kind, never the backlog
    assert ("Index Scan", "ai_server_tasks_queued_idx") in read, read


def test_a_claim_takes_the_oldest_due_whether_queued_or_expired(migrated: Settings, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO ai_server_tasks (task_type, status, attempts, lease_expires_at, run_after) VALUES "
            "('noop', 'queued', 0, NULL, now() - interval '3 min'), "
            "('noop', 'running', 1, now() - interval '1 s', now() - interval '2 min'), "
            "('noop', 'queued', 0, NULL, now() - interval '1 min'), "
            "('noop', 'running', 1, now() - interval '1 s', now()) RETURNING id"
        ).fetchall()
    expected = [r[0] for r in rows]

    async def body(pool: Any) -> list[Any]:
        claimed = []
        async with pool.connection() as conn:
            for _ in range(2):
                claimed += await queue.claim(conn, runner="r", limit=2, lease_seconds=30)
        return claimed

    assert [t.id for t in run_with_pool(migrated, body)] == expected


def test_complete_many_records_only_the_attempts_this_runner_holds(migrated: Settings) -> None:
    async def body(pool: Any) -> None:
        async with pool.connection() as conn:
            for i in range(3):
                await queue.enqueue(conn, "noop", {"i": i})
            mine = await queue.claim(conn, runner="r", limit=2, lease_seconds=30)
            [other] = await queue.claim(conn, runner="someone else", limit=1, lease_seconds=30)
            stale = replace(mine[1], attempts=mine[1].attempts + 1)  # a later attempt replaced it
            held = await queue.complete_many(
                conn,
                [(task, queue.encode_result({"n": n})) for n, task in enumerate((mine[0], stale, other))],
                runner="r",
            )
            assert held == {mine[0].id}
            done = await queue.get(conn, mine[0].id)
            assert done is not None and done.status is TaskStatus.SUCCEEDED and done.result == {"n": 0}
            for task in (mine[1], other):
                left = await queue.get(conn, task.id)
                assert left is not None and left.status is TaskStatus.RUNNING and left.result is None

    run_with_pool(migrated, body)


def test_a_result_of_none_is_stored_as_json_null(migrated: Settings) -> None:
    async def body(pool: Any) -> tuple[Any, ...]:
        async with pool.connection() as conn:
            await queue.enqueue(conn, "noop")
            [task] = await queue.claim(conn, runner="r", limit=1, lease_seconds=30)
            assert await queue.complete(conn, task, runner="r", result=None)
            cur = await conn.execute(
                "SELECT status, result IS NULL AS sql_null, jsonb_typeof(result) AS type"
                " FROM ai_server_tasks WHERE id = %s",
                (task.id,),
            )
            row = await cur.fetchone()
            return row["status"], row["sql_null"], row["type"]

    assert run_with_pool(migrated, body) == ("succeeded", False, "null")
