"""Retention of finished tasks against real PostgreSQL, and through the real runner."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Proc, run_cli, wait_task
from wcu_ai.database import open_pool
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.tasks import queue
from wcu_ai.tasks.retention import PruneReport, prune_finished

DAY = 86400


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def add_task(
    conn: psycopg.Connection[Any], status: str, *, finished_days_ago: float | None, age_days: float
) -> str:
    """A task row as the queue leaves it in `status`, created `age_days` ago."""
    row = conn.execute(
        """
        INSERT INTO ai_server_tasks (task_type, payload, status, attempts, created_at, run_after, started_at,
                                     finished_at, locked_by, lease_expires_at)
        VALUES ('noop', %s, %s, %s, now() - make_interval(days => %s), now() - make_interval(days => %s),
                CASE WHEN %s <> 'queued' THEN now() - make_interval(days => %s) END,
                now() - make_interval(secs => %s * 86400),
                CASE WHEN %s = 'running' THEN 'some-runner' END,
                CASE WHEN %s = 'running' THEN now() + interval '1 minute' END)
        RETURNING id
        """,
        (
            json.dumps({"status": status}),
            status,
            0 if status == "queued" else 1,
            age_days,
            age_days,
            status,
            age_days,
            finished_days_ago,
            status,
            status,
        ),
    ).fetchone()
    assert row is not None
    return str(row[0])


def task_ids(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM ai_server_tasks").fetchall()}


def prune(settings: Settings, **kwargs: Any) -> PruneReport:
    async def main() -> PruneReport:
        async with open_pool(settings) as pool:
            return await prune_finished(pool, **kwargs)

    return asyncio.run(main())


def test_retention_deletes_only_finished_tasks_past_the_cutoff(migrated: Settings, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        old_finished = {
            add_task(conn, s, finished_days_ago=40, age_days=41) for s in ("succeeded", "failed", "cancelled")
        }
        recent = {
            add_task(conn, s, finished_days_ago=1, age_days=2) for s in ("succeeded", "failed", "cancelled")
        }
        # Older than the cutoff by every date they have, yet not finished: never deleted. A running
        # or queued task with an old finished_at is what a retried task could look like to a
        # query that trusted dates alone.
        unfinished = {
            add_task(conn, "queued", finished_days_ago=None, age_days=400),
            add_task(conn, "running", finished_days_ago=None, age_days=400),
            add_task(conn, "queued", finished_days_ago=400, age_days=400),
            add_task(conn, "running", finished_days_ago=400, age_days=400),
        }

    report = prune(migrated, older_than_seconds=30 * DAY, batch_rows=2)
    assert (report.deleted, report.complete) == (3, True)
    assert task_ids(db_url) == recent | unfinished
    assert not old_finished & task_ids(db_url)


def test_a_prune_stops_at_its_batch_bound_and_the_next_one_goes_on(migrated: Settings, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(7):
            add_task(conn, "succeeded", finished_days_ago=40, age_days=40)
        kept = add_task(conn, "succeeded", finished_days_ago=1, age_days=1)

    first = prune(migrated, older_than_seconds=30 * DAY, batch_rows=3, max_batches=2)
    assert (first.deleted, first.complete) == (6, False)
    second = prune(migrated, older_than_seconds=30 * DAY, batch_rows=3, max_batches=2)
    assert (second.deleted, second.complete) == (1, True)
    assert task_ids(db_url) == {kept}


def test_the_retention_batch_reads_the_finished_index_not_the_queue(migrated: Settings, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # A busy queue: many recent rows of every status, a few finished long ago.
        conn.execute(
            """
            INSERT INTO ai_server_tasks (task_type, status, attempts, finished_at, created_at)
            SELECT 'noop', (ARRAY['queued', 'running', 'succeeded', 'failed'])[1 + i % 4], 1,
                   CASE WHEN i % 4 >= 2 THEN now() - make_interval(secs => i) END, now() - make_interval(secs => i)
            FROM generate_series(1, 20000) AS i
            """
        )
        for _ in range(20):
            add_task(conn, "succeeded", finished_days_ago=40, age_days=40)
        conn.execute("ANALYZE ai_server_tasks")
        cutoff = conn.execute("SELECT now() - interval '30 days'").fetchone()
        assert cutoff is not None
        plans = {
            name: json.dumps(
                conn.execute(
                    "EXPLAIN (FORMAT JSON) " + queue.Q[name], {"cutoff": cutoff[0], "limit": 1000}
                ).fetchone()
            )
            for name in ("prune_batch", "count_prunable")
        }
    for name, plan in plans.items():
        assert "ai_server_tasks_finished_idx" in plan, (name, plan)
        assert '"Seq Scan"' not in plan, (name, plan)


def test_the_runner_prunes_on_demand_and_leaves_its_running_task_alone(
    start: Callable[..., Proc], db_url: str, service_env: dict[str, str]
) -> None:
    runner = start("runner", WCU_TASK_RETENTION_DAYS="30", WCU_RUNNER_GRACE_SECONDS="0")
    runner.wait_for("runner.leader")
    running = run_cli("enqueue", "sleep", "--payload", '{"seconds": 60}', env=service_env).stdout.strip()
    wait_task(db_url, running, "running")
    with psycopg.connect(db_url, autocommit=True) as conn:
        old = {add_task(conn, "succeeded", finished_days_ago=31, age_days=31) for _ in range(5)}
        recent = add_task(conn, "failed", finished_days_ago=29, age_days=29)
        # The running task too, as old as the pruned ones by its dates.
        conn.execute(
            "UPDATE ai_server_tasks SET created_at = now() - interval '90 days' WHERE id = %s", (running,)
        )

    prune_task = run_cli("enqueue", "prune_tasks", env=service_env).stdout.strip()
    result = wait_task(db_url, prune_task, "succeeded")["result"]
    assert (result["deleted"], result["complete"]) == (5, True)
    left = task_ids(db_url)
    assert not old & left
    assert {running, recent, prune_task} <= left
    assert wait_task(db_url, running, "running")["attempts"] == 1
    assert "tasks.pruned" in runner.actions()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
