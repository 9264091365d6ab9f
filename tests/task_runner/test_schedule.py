"""Schedules against real PostgreSQL, and across leader changes of real `wcu-ai runner` processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import psycopg.rows
import pytest

from tests.conftest import Proc, run_cli, wait_task
from wcu_ai.database import open_pool
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.task_runner.schedule import HOUR, Q, Schedule, Scheduler, builtin_schedules

Start = Callable[..., Proc]
PROBE = Schedule("probe", "noop", every_seconds=HOUR, at_seconds=20 * 60)


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def run_with_pool[T](settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_pool(settings, min_size=2) as pool:
            return await body(pool)

    return asyncio.run(main())


def schedule_row(db_url: str, name: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute(
            "SELECT *, extract(epoch FROM next_run_at)::float8 AS next_epoch, "
            "extract(epoch FROM next_run_at - now())::float8 AS due_in FROM ai_server_schedules WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None, name
    return row


def make_due(db_url: str, name: str, in_seconds: float = 0.0) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ai_server_schedules SET next_run_at = now() + make_interval(secs => %s) WHERE name = %s",
            (in_seconds, name),
        )


def scheduled_runs(db_url: str, name: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT id::text FROM ai_server_tasks WHERE payload->>'schedule' = %s ORDER BY created_at",
            (name,),
        ).fetchall()
    return [r[0] for r in rows]


def slot_index(db_url: str, schedule: Schedule) -> int:
    """Which of the schedule's slots the database's clock is in."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT floor((extract(epoch FROM now()) - %s) / %s)::bigint",
            (schedule.origin.timestamp(), schedule.every_seconds),
        ).fetchone()
    assert row is not None
    return int(row[0])


def on_slot(row: dict[str, Any], schedule: Schedule) -> bool:
    return round(row["next_epoch"] - schedule.origin.timestamp()) % schedule.every_seconds == 0


def test_a_new_schedule_waits_an_interval_and_a_known_one_keeps_its_due_time(
    migrated: Settings, db_url: str
) -> None:
    async def add(pool: Any, schedule: Schedule) -> None:
        await Scheduler(migrated, pool, [schedule], "r").add_schedules()

    run_with_pool(migrated, lambda pool: add(pool, PROBE))
    row = schedule_row(db_url, "probe")
    assert HOUR <= row["due_in"] <= 2 * HOUR and on_slot(row, PROBE)
    assert (row["task_type"], row["every_seconds"], row["last_task_id"]) == ("noop", HOUR, None)

    # A restart (or a new leader) adds the same schedules again: the due time stays where it was.
    make_due(db_url, "probe", 5)
    before = schedule_row(db_url, "probe")["next_run_at"]
    run_with_pool(migrated, lambda pool: add(pool, PROBE))
    assert schedule_row(db_url, "probe")["next_run_at"] == before
    # A new version's interval is recorded, and still counts from the due time already set.
    daily = Schedule("probe", "noop", every_seconds=24 * HOUR)
    run_with_pool(migrated, lambda pool: add(pool, daily))
    row = schedule_row(db_url, "probe")
    assert (row["every_seconds"], row["next_run_at"]) == (24 * HOUR, before)


def test_runs_missed_while_no_runner_led_become_one_run_on_the_next_slot(
    migrated: Settings, db_url: str
) -> None:
    async def body(pool: Any) -> tuple[list[Any], list[Any]]:
        scheduler = Scheduler(migrated, pool, [PROBE], "r")
        await scheduler.add_schedules()
        make_due(db_url, "probe", -3 * 24 * HOUR)
        return await scheduler.enqueue_due(), await scheduler.enqueue_due()

    first, second = run_with_pool(migrated, body)
    assert len(first) == 1 and second == []
    row = schedule_row(db_url, "probe")
    assert 0 < row["due_in"] <= HOUR and on_slot(row, PROBE)
    assert row["last_task_id"] == first[0]
    assert scheduled_runs(db_url, "probe") == [str(first[0])]


def test_a_second_claimer_waiting_on_the_row_enqueues_nothing(migrated: Settings, db_url: str) -> None:
    """The hand-over overlap made certain: B claims while A's claim is not yet committed."""

    async def body(pool: Any) -> tuple[Any, list[Any], str]:
        a, b = Scheduler(migrated, pool, [PROBE], "a"), Scheduler(migrated, pool, [PROBE], "b")
        await a.add_schedules()
        make_due(db_url, "probe", -1)
        async with pool.connection() as conn_a:
            claimed = await (await conn_a.execute(Q["claim_schedule"], a.query_params(PROBE))).fetchone()
            b_claims = asyncio.create_task(b.enqueue_due())
            waited = await blocked_on_a_lock(pool)
            await conn_a.commit()
        return claimed, await b_claims, waited

    claimed, b_enqueued, waited = run_with_pool(migrated, body)
    assert waited == "Lock"
    assert claimed is not None and b_enqueued == []
    assert scheduled_runs(db_url, "probe") == [str(claimed["id"])]


async def blocked_on_a_lock(pool: Any) -> str:
    """Waits (bounded) until some session of this database waits on a lock; returns the wait type."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        for _ in range(200):
            row = await (
                await conn.execute(
                    "SELECT wait_event_type FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).fetchone()
            if row is not None:
                return str(row["wait_event_type"])
            await asyncio.sleep(0.05)
    return "none"


def test_two_schedulers_claiming_together_enqueue_each_due_run_once(migrated: Settings, db_url: str) -> None:
    async def body(pool: Any) -> list[int]:
        a, b = Scheduler(migrated, pool, [PROBE], "a"), Scheduler(migrated, pool, [PROBE], "b")
        await a.add_schedules()
        per_round = []
        for _ in range(10):
            make_due(db_url, "probe", -1)
            runs = await asyncio.gather(a.enqueue_due(), b.enqueue_due())
            per_round.append(sum(len(r) for r in runs))
        return per_round

    assert run_with_pool(migrated, body) == [1] * 10
    assert len(scheduled_runs(db_url, "probe")) == 10


def test_the_runner_records_the_builtin_schedules_and_works_their_tasks(
    start: Start, db_url: str, service_env: dict[str, str]
) -> None:
    runner = start("runner")
    runner.wait_for("runner.leader")
    builtin = builtin_schedules(Settings())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(_exists(db_url, s.name) for s in builtin):
        time.sleep(0.1)
    for schedule in builtin:
        row = schedule_row(db_url, schedule.name)
        assert (row["task_type"], row["every_seconds"]) == (schedule.task_type, schedule.every_seconds)
        assert row["due_in"] >= schedule.every_seconds - 60 and on_slot(row, schedule)

    # Each one's task runs through the queue with the handler the registry has for it.
    for schedule in builtin:
        make_due(db_url, schedule.name)
    for schedule in builtin:
        event = runner.wait_for("schedule.enqueued", schedule=schedule.name)
        row = wait_task(db_url, event["task_id"], "succeeded")
        assert (row["task_type"], row["payload"]) == (schedule.task_type, {"schedule": schedule.name})
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def _exists(db_url: str, name: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return (
            conn.execute("SELECT 1 FROM ai_server_schedules WHERE name = %s", (name,)).fetchone() is not None
        )


def test_a_due_run_survives_leader_changes_exactly_once(
    start: Start, db_url: str, service_env: dict[str, str]
) -> None:
    """Four hand-overs, each with one run of the daily metrics schedule due: each makes one run.

    The leader stops after it enqueued the run; before the run is due, frozen (SIGSTOP: it still
    holds the lock) while the standby sees the run due; and twice around the due time, where the
    clock decides whether the old or the new leader claims it.
    """
    assert run_cli("migrate", "up", env=service_env).returncode == 0
    [metrics] = [s for s in builtin_schedules(Settings()) if s.name == "agent_metrics"]
    procs = [start("runner", WCU_RUNNER_GRACE_SECONDS="1")]
    procs[0].wait_for("runner.leader", timeout=60)
    cycles = [
        ("after_its_claim", signal.SIGKILL),
        ("before_due", signal.SIGKILL),
        ("around_due", signal.SIGTERM),
        ("around_due", signal.SIGKILL),
    ]
    for when, stop_with in cycles:
        leader = procs[-1]
        standby = start("runner", WCU_RUNNER_GRACE_SECONDS="1")
        procs.append(standby)
        standby.wait_for("runner.standby", timeout=60)
        runs_before, slot_before = len(scheduled_runs(db_url, "agent_metrics")), slot_index(db_url, metrics)

        if when == "after_its_claim":
            make_due(db_url, "agent_metrics")
            leader.wait_for("schedule.enqueued", schedule="agent_metrics", timeout=30)
        elif when == "before_due":
            leader.signal(signal.SIGSTOP)
            make_due(db_url, "agent_metrics")
            # Several of the standby's lock retries (0.2 s) and poll intervals (0.5 s) with the run due.
            time.sleep(3)
            assert len(scheduled_runs(db_url, "agent_metrics")) == runs_before
            assert "schedule.enqueued" not in standby.actions()
        else:
            # Where the stop lands against the claim is left to the clock; either way: once.
            make_due(db_url, "agent_metrics", 1.0)
            time.sleep(1.0)
        leader.signal(stop_with)
        leader.wait()
        standby.wait_for("runner.leader", timeout=30)

        # A barrier: once the new leader enqueues this, it has looked at the schedules since it leads.
        make_due(db_url, "document_sweep")
        sweeps = len([e for e in standby.events() if e.get("schedule") == "document_sweep"])
        deadline = time.monotonic() + 30
        while len([e for e in standby.events() if e.get("schedule") == "document_sweep"]) <= sweeps:
            assert time.monotonic() < deadline, standby.output()[-3000:]
            time.sleep(0.05)

        runs = scheduled_runs(db_url, "agent_metrics")
        # One run for the due time, plus one for each slot the clock passed meanwhile (a claim at
        # 00:29:59 leaves the next run due at 00:30): in practice, exactly one.
        expected = 1 + slot_index(db_url, metrics) - slot_before
        assert len(runs) - runs_before == expected, (
            when,
            runs,
            leader.output()[-3000:],
            standby.output()[-3000:],
        )
        row = schedule_row(db_url, "agent_metrics")
        assert str(row["last_task_id"]) == runs[-1] and row["due_in"] > 0
        if when == "before_due":
            assert standby.wait_for("schedule.enqueued", schedule="agent_metrics")["task_id"] == runs[-1]

    # Every run was enqueued by a runner that led at the time, none by a standby.
    for proc in procs:
        actions = proc.actions()
        if "schedule.enqueued" in actions:
            assert actions.index("runner.leader") < actions.index("schedule.enqueued")
    procs[-1].signal(signal.SIGTERM)
    assert procs[-1].wait() == 0
