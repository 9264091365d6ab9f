"""The real `wcu-ai runner` process against real PostgreSQL: start-up, tasks, signals, standby."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import psycopg

from tests.conftest import Proc, free_port, insert_task, task_row, wait_http, wait_task
from tests.scrape import scrape
from tests.tcp_proxy import PostgresProxy
from wcu_ai.agno_storage import AGNO_TABLES
from wcu_ai.migrations import packaged_migrations

Start = Callable[..., Proc]


def relation_oids(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT relname, oid::int FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    return dict(rows)


def test_start_creates_agno_tables_then_migrations_and_a_restart_changes_nothing(
    start: Start, db_url: str
) -> None:
    runner = start("runner")
    runner.wait_for("runner.leader")
    actions = runner.actions()
    assert actions.index("init.agno") < actions.index("init.migrations") < actions.index("runner.leader")
    oids = relation_oids(db_url)
    # Tables are created in order, and PostgreSQL hands out increasing oids.
    assert max(oids[t] for t in AGNO_TABLES.values()) < oids["ai_migrations"] < oids["ai_server_tasks"]
    applied = runner.wait_for("init.migrations")["applied"]
    assert applied == [m.name for m in packaged_migrations()]
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0

    again = start("runner")
    assert again.wait_for("init.migrations")["applied"] == []
    again.wait_for("runner.leader")
    assert relation_oids(db_url) == oids
    again.signal(signal.SIGTERM)
    assert again.wait() == 0


def test_tasks_succeed_retry_and_fail_with_reasons(start: Start, db_url: str) -> None:
    runner = start("runner", WCU_TASK_RETRY_BASE_SECONDS="0", WCU_TASK_TIMEOUT_SECONDS="1")
    runner.wait_for("runner.leader")
    ok = insert_task(db_url, "noop", {"x": 1})
    flaky = insert_task(db_url, "fail", {"message": "upstream said no"}, max_attempts=3)
    permanent = insert_task(db_url, "fail", {"message": "bad input", "permanent": True})
    unknown = insert_task(db_url, "no_such_type")
    slow = insert_task(db_url, "sleep", {"seconds": 30}, max_attempts=1)

    assert wait_task(db_url, ok, "succeeded")["result"] == {"echo": {"x": 1}}
    row = wait_task(db_url, flaky, "failed")
    assert (row["attempts"], row["last_error"]) == (3, "RuntimeError: upstream said no")
    row = wait_task(db_url, permanent, "failed")
    assert (row["attempts"], row["last_error"]) == (1, "bad input")
    assert "no handler for task type 'no_such_type'" in wait_task(db_url, unknown, "failed")["last_error"]
    assert wait_task(db_url, slow, "failed")["last_error"] == "timed out after 1s"
    assert runner.actions().count("task.retrying") == 2
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_sigterm_lets_a_short_task_finish_within_the_grace_period(start: Start, db_url: str) -> None:
    runner = start("runner", WCU_RUNNER_GRACE_SECONDS="20")
    runner.wait_for("runner.leader")
    task_id = insert_task(db_url, "sleep", {"seconds": 1.5})
    runner.wait_for("task.started")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    row = task_row(db_url, task_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 1)


def test_sigterm_past_the_grace_period_requeues_without_spending_an_attempt(
    start: Start, db_url: str
) -> None:
    runner = start("runner", WCU_RUNNER_GRACE_SECONDS="0.5")
    runner.wait_for("runner.leader")
    task_id = insert_task(db_url, "sleep", {"seconds": 60})
    runner.wait_for("task.started")
    began = time.monotonic()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    assert time.monotonic() - began < 15
    row = task_row(db_url, task_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("queued", 0, None)
    assert "task.released" in runner.actions()

    # The next runner picks the task up again from the start.
    successor = start("runner", WCU_RUNNER_GRACE_SECONDS="0")
    successor.wait_for("task.started", task_id=task_id)
    assert task_row(db_url, task_id)["attempts"] == 1
    successor.signal(signal.SIGTERM)
    assert successor.wait() == 0


def test_a_second_runner_stands_by_and_takes_over_when_the_first_stops(start: Start, db_url: str) -> None:
    first = start("runner")
    first.wait_for("runner.leader")
    second = start("runner")
    second.wait_for("runner.standby")
    task_id = insert_task(db_url, "noop")
    wait_task(db_url, task_id, "succeeded")
    # A no-op task logs its outcome only (it never waits): that line names the runner that worked it.
    assert "task.succeeded" in first.actions() and "task.succeeded" not in second.actions()

    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    second.wait_for("runner.leader", timeout=10)
    after = insert_task(db_url, "noop")
    wait_task(db_url, after, "succeeded")
    assert "task.succeeded" in second.actions()
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_a_killed_runners_task_is_taken_again_after_its_lease_expires(start: Start, db_url: str) -> None:
    first = start("runner", WCU_TASK_LEASE_SECONDS="2")
    first.wait_for("runner.leader")
    standby = start("runner", WCU_TASK_LEASE_SECONDS="2")
    standby.wait_for("runner.standby")
    task_id = insert_task(db_url, "sleep", {"seconds": 1})
    first.wait_for("task.started")
    first.signal(signal.SIGKILL)
    first.wait()

    standby.wait_for("runner.leader", timeout=10)
    row = wait_task(db_url, task_id, "succeeded", timeout=30)
    assert row["attempts"] == 2
    assert row["locked_by"] == standby.wait_for("runner.leader")["runner"]
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0


def test_a_standby_stopped_before_taking_over_exits_cleanly(start: Start) -> None:
    leader = start("runner")
    leader.wait_for("runner.leader")
    standby = start("runner")
    standby.wait_for("runner.standby")
    standby.signal(signal.SIGINT)
    assert standby.wait() == 0
    leader.signal(signal.SIGINT)
    assert leader.wait() == 0


def test_the_seed_entry_point_runs_the_same_runner(start: Start) -> None:
    runner = start("-m", "wcu_ai.task_runner.main", python=True)
    runner.wait_for("runner.leader")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_a_runner_started_before_its_database_waits_for_it_serving_metrics_and_readiness(
    start: Start, db_url: str
) -> None:
    proxy = PostgresProxy(db_url, free_port())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": proxy.url,
        "WCU_RUNNER_METRICS_HOST": "127.0.0.1",
        "WCU_RUNNER_METRICS_PORT": str(port),
        "WCU_DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    runner = start("runner", **env)
    try:
        # Nothing listens on the database's port yet: the runner waits, says so, and answers.
        runner.wait_for("runner.init_waiting", timeout=60)
        assert runner.wait_for("runner.init_waiting")["level"] == "warning"
        waiting = scrape(f"{base}/metrics")
        assert (waiting.value("wcu_runner_leader"), waiting.value("wcu_task_queue_stats_up")) == (0, 0)
        not_ready = httpx.get(f"{base}/health/ready", timeout=10)
        assert (not_ready.status_code, not_ready.json()["status"]) == (503, "initialising")
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        deadline = time.monotonic() + 60
        while runner.actions().count("runner.init_waiting") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner.popen.poll() is None, runner.output()

        # The database appears: the runner initialises it, becomes ready, then leads.
        proxy.start()
        runner.wait_for("init.migrations", timeout=90)
        ready = wait_http(f"{base}/health/ready")
        assert ready.json() == {"status": "ready"}
        runner.wait_for("runner.leader", timeout=30)
        assert scrape(f"{base}/metrics").value("wcu_runner_leader") == 1
        runner.signal(signal.SIGTERM)
        assert runner.wait() == 0
    finally:
        proxy.stop()


def test_a_runner_waiting_for_its_database_stops_at_sigterm_and_never_logs_the_password(
    start: Start,
) -> None:
    runner = start(
        "runner",
        DATABASE_URL=f"postgresql://app:hunter2hunter2@127.0.0.1:{free_port()}/app",
        WCU_DB_CONNECT_TIMEOUT_SECONDS="2",
    )
    waiting = runner.wait_for("runner.init_waiting", timeout=60)
    assert "postgresql://app:***@127.0.0.1:" in waiting["error"]
    runner.signal(signal.SIGTERM)
    assert runner.wait(timeout=15) == 0
    assert "hunter2" not in runner.output()
