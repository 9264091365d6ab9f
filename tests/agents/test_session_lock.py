"""One run at a time per session: the lock's SQL against real PostgreSQL, and its waiting (pure)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from wcu_ai.agents.session_lock import lock_session, retry_after, retry_delays
from wcu_ai.database import open_pool
from wcu_ai.errors import SessionBusyError
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings


def with_pool[T](settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_pool(settings) as pool:
            return await body(pool)

    return asyncio.run(main())


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def lock_rows(settings: Settings) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.require_database_url()) as conn:
        return conn.execute("SELECT session_id, holder FROM ai_agent_session_locks ORDER BY 1").fetchall()


def test_the_wait_is_spent_in_growing_pauses_and_is_never_exceeded() -> None:
    assert retry_delays(0) == []
    assert retry_delays(0.12) == pytest.approx([0.05, 0.07])
    delays = retry_delays(10)
    assert sum(delays) == pytest.approx(10) and max(delays) == 0.5 and delays[:3] == [0.05, 0.1, 0.2]
    assert (retry_after(0), retry_after(0.2), retry_after(10)) == (1, 1, 10)


def test_a_second_run_of_a_session_waits_then_is_busy_and_other_sessions_are_free(migrated: Settings) -> None:
    async def body(pool: Any) -> None:
        first = await lock_session(pool, "s1", wait_seconds=0, lease_seconds=30)
        with pytest.raises(SessionBusyError) as busy:
            await lock_session(pool, "s1", wait_seconds=0.3, lease_seconds=30)
        assert busy.value.retry_after_seconds == 1
        other = await lock_session(pool, "s2", wait_seconds=0, lease_seconds=30)
        await other.release()
        # Waiting is for the first to end: the second gets the lock once it is released.
        waiting = asyncio.create_task(lock_session(pool, "s1", wait_seconds=30, lease_seconds=30))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await first.release()
        second = await waiting
        assert [r[1] for r in lock_rows(migrated)] == [second.holder]
        await second.release()
        assert lock_rows(migrated) == []

    with_pool(migrated, body)


def test_the_lock_of_a_process_that_died_is_taken_once_its_lease_ran_out(migrated: Settings) -> None:
    with psycopg.connect(migrated.require_database_url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ai_agent_session_locks (session_id, holder, expires_at)"
            " VALUES ('s1', gen_random_uuid(), now() - interval '1 second'),"
            " ('s2', gen_random_uuid(), now() + interval '1 hour')"
        )

    async def body(pool: Any) -> None:
        taken = await lock_session(pool, "s1", wait_seconds=0, lease_seconds=30)
        with pytest.raises(SessionBusyError):
            await lock_session(pool, "s2", wait_seconds=0, lease_seconds=30)
        await taken.release()

    with_pool(migrated, body)
    assert [r[0] for r in lock_rows(migrated)] == ["s2"]


def test_a_held_lock_is_renewed_and_a_released_holder_cannot_free_a_later_one(migrated: Settings) -> None:
    def expires(session_id: str) -> Any:
        with psycopg.connect(migrated.require_database_url()) as conn:
            row = conn.execute(
                "SELECT expires_at FROM ai_agent_session_locks WHERE session_id = %s", (session_id,)
            ).fetchone()
        return row[0] if row else None

    async def body(pool: Any) -> None:
        lock = await lock_session(pool, "s1", wait_seconds=0, lease_seconds=0.3)  # renewed every 0.1 s
        first = expires("s1")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if expires("s1") != first:
                break
        assert expires("s1") > first
        await lock.release()
        later = await lock_session(pool, "s1", wait_seconds=0, lease_seconds=30)
        await lock.release()  # a second release of the old holder: the later lock stays
        assert expires("s1") is not None
        await later.release()

    with_pool(migrated, body)


def test_a_release_that_failed_is_retried_not_left_for_the_lease(migrated: Settings) -> None:
    # A database stall made the release fail (no pooled connection in time): the row stayed for
    # the whole lease and the session's next run waited for it or got 409.
    settings = migrated.model_copy(update={"db_pool_size": 1, "db_connect_timeout_seconds": 1})

    async def body(pool: Any) -> list[tuple[Any, ...]]:
        lock = await lock_session(pool, "s-retry", wait_seconds=0, lease_seconds=600)
        async with pool.connection():  # the pool's one connection is taken: the release gets none
            await lock.release()
            assert lock_rows(settings) == [("s-retry", lock.holder)]
        for _ in range(300):  # bounded: 30 s, far below the lease
            if not lock_rows(settings):
                break
            await asyncio.sleep(0.1)
        return lock_rows(settings)

    assert with_pool(settings, body) == []
