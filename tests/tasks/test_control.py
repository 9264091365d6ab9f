"""`wcu-ai tasks retry` / `cancel` through the real command, with the real runner working the queue."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import Proc, insert_task, run_cli, task_row, wait_task

Start = Callable[..., Proc]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result
    return lines[0]


def tasks(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = run_cli("tasks", *args, env=env)
    return result.returncode, one_line(result)


def starts_of(proc: Proc, task_id: str) -> int:
    return sum(1 for e in proc.events() if e.get("action") == "task.started" and e.get("task_id") == task_id)


@pytest.fixture
def migrated_env(service_env: dict[str, str]) -> dict[str, str]:
    assert run_cli("migrate", "up", env=service_env).returncode == 0
    return service_env


def test_retry_queues_a_failed_task_again_and_the_runner_runs_it(
    start: Start, db_url: str, migrated_env: dict[str, str]
) -> None:
    runner = start("runner")
    runner.wait_for("runner.leader")
    failed = insert_task(db_url, "fail", {"message": "bad input", "permanent": True})
    wait_task(db_url, failed, "failed")

    assert tasks(migrated_env, "retry", failed) == (
        0,
        f"task {failed} queued again, due now, with 3 more attempts",
    )
    # Run again, and ended as before (a permanent error): failed after one more attempt, its second.
    row = wait_task(db_url, failed, "failed")
    assert starts_of(runner, failed) == 2
    assert (row["attempts"], row["max_attempts"], row["last_error"]) == (2, 4, "bad input")

    succeeded = insert_task(db_url, "noop")
    wait_task(db_url, succeeded, "succeeded")
    assert tasks(migrated_env, "retry", succeeded) == (
        4,
        f"wcu-ai: error: task {succeeded} is succeeded: only failed or cancelled tasks are retried; "
        "enqueue a new task with `wcu-ai enqueue` to run it again",
    )
    assert task_row(db_url, succeeded)["status"] == "succeeded"
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_unknown_and_malformed_ids_and_wrong_states_are_one_line_each(
    db_url: str, migrated_env: dict[str, str]
) -> None:
    missing = str(uuid.uuid4())
    for command in ("retry", "cancel"):
        assert tasks(migrated_env, command, missing) == (
            3,
            f"wcu-ai: error: no task with id {missing}: check the id with GET /v1/tasks",
        )
        # argparse's usage line, then its error.
        malformed = run_cli("tasks", command, "42", env=migrated_env)
        assert malformed.returncode == 2 and "Traceback" not in malformed.stderr
        assert malformed.stderr.strip().splitlines()[-1] == (
            f"wcu-ai tasks {command}: error: argument task_id: '42' is not a task id (a UUID, as GET /v1/tasks shows)"
        )
    queued = insert_task(db_url, "noop")
    assert tasks(migrated_env, "retry", queued) == (
        4,
        f"wcu-ai: error: task {queued} is queued: only failed or cancelled tasks are retried; "
        "it is waiting to run already",
    )
    assert tasks(migrated_env, "cancel", queued)[0] == 0
    assert tasks(migrated_env, "cancel", queued) == (
        4,
        f"wcu-ai: error: task {queued} is cancelled: only queued or running tasks are cancelled; "
        "retry it with `wcu-ai tasks retry`",
    )
    assert task_row(db_url, queued)["status"] == "cancelled"


def test_a_cancelled_queued_task_never_runs_and_can_be_retried(
    start: Start, db_url: str, migrated_env: dict[str, str]
) -> None:
    waiting = insert_task(db_url, "noop", {"n": 1})
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ai_server_tasks SET run_after = now() + interval '1 hour' WHERE id = %s", (waiting,)
        )
    assert tasks(migrated_env, "cancel", waiting) == (0, f"task {waiting} cancelled; it will not run")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ai_server_tasks SET run_after = now() - interval '1 hour' WHERE id = %s", (waiting,)
        )

    runner = start("runner")
    runner.wait_for("runner.leader")
    # A barrier: a task queued after it, done, and the cancelled one never started.
    after = insert_task(db_url, "noop")
    wait_task(db_url, after, "succeeded")
    row = task_row(db_url, waiting)
    assert (row["status"], row["attempts"], row["last_error"]) == ("cancelled", 0, "cancelled by an operator")
    assert row["finished_at"] is not None and starts_of(runner, waiting) == 0

    assert tasks(migrated_env, "retry", waiting)[0] == 0
    assert wait_task(db_url, waiting, "succeeded")["result"] == {"echo": {"n": 1}}
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_a_cancelled_running_task_is_abandoned_at_the_next_lease_renewal(
    start: Start, db_url: str, migrated_env: dict[str, str]
) -> None:
    # Renewals every second; one slot, so the next task runs only once the cancelled one let go.
    runner = start(
        "runner", WCU_TASK_LEASE_SECONDS="3", WCU_RUNNER_CONCURRENCY="1", WCU_RUNNER_GRACE_SECONDS="0"
    )
    runner.wait_for("runner.leader")
    running = insert_task(db_url, "sleep", {"seconds": 600})
    wait_task(db_url, running, "running")

    code, line = tasks(migrated_env, "cancel", running)
    assert (code, line) == (
        0,
        f"task {running} cancelled; the runner working it abandons it at its next lease renewal "
        "(a third of WCU_TASK_LEASE_SECONDS) and records no outcome",
    )
    runner.wait_for("task.lease_lost", task_id=running)
    after = insert_task(db_url, "noop")
    wait_task(db_url, after, "succeeded")
    row = task_row(db_url, running)
    # The abandoned attempt's release (back to queued) matched no row: the cancel stands.
    assert (row["status"], row["last_error"], row["result"]) == (
        "cancelled",
        "cancelled by an operator",
        None,
    )
    assert "task.released" not in [e["action"] for e in runner.events() if e.get("task_id") == running]

    # Once its last lease has run out (nobody renews it now) it can be retried: a second attempt.
    wait_lease_ended(db_url, running)
    assert tasks(migrated_env, "retry", running)[0] == 0
    row = wait_task(db_url, running, "running")
    assert (row["attempts"], row["max_attempts"]) == (2, 4)
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def wait_lease_ended(db_url: str, task_id: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(200):
            row = conn.execute(
                "SELECT lease_expires_at < now() FROM ai_server_tasks WHERE id = %s", (task_id,)
            )
            if row.fetchone() == (True,):
                return
            conn.execute("SELECT pg_sleep(0.05)")
    raise AssertionError(f"the lease of {task_id} did not end within 10 s")


def test_a_cancelled_running_tasks_outcome_never_overwrites_the_cancel(
    start: Start, db_url: str, migrated_env: dict[str, str]
) -> None:
    # A long lease: the handler ends long before the first renewal (200 s), so its success is what
    # arrives after the cancel. The runner is frozen meanwhile, so the cancel is in first.
    runner = start("runner", WCU_TASK_LEASE_SECONDS="600")
    runner.wait_for("runner.leader")
    running = insert_task(db_url, "sleep", {"seconds": 1})
    wait_task(db_url, running, "running")
    runner.signal(signal.SIGSTOP)
    try:
        assert tasks(migrated_env, "cancel", running)[0] == 0
        # Its runner holds it until it notices: a retry now would start a second attempt beside it.
        code, line = tasks(migrated_env, "retry", running)
        assert code == 4 and line.startswith(
            f"wcu-ai: error: task {running} was cancelled while running, and the runner working it may not "
            "have let go yet: retry it once its lease ends ("
        )
    finally:
        runner.signal(signal.SIGCONT)

    discarded = runner.wait_for("task.lease_lost", task_id=running)
    assert discarded["msg"].startswith("task outcome discarded")
    row = task_row(db_url, running)
    assert (row["status"], row["result"]) == ("cancelled", None)
    assert "task.succeeded" not in [e["action"] for e in runner.events() if e.get("task_id") == running]
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
