"""The `wcu-ai` command itself: errors as one line, migrations from the command line."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import free_port, run_cli, wait_task
from wcu_ai.migrations import packaged_migrations


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", [["runner"], ["api"], ["migrate", "up"]])
def test_a_malformed_database_url_is_one_line_exit_2_without_the_password(
    service_env: dict[str, str], command: list[str]
) -> None:
    env = {**service_env, "DATABASE_URL": "mysql://app:hunter2hunter2@db/app"}
    result = run_cli(*command, env=env)
    assert result.returncode == 2
    assert (
        one_line(result.stderr)
        == "wcu-ai: configuration error: DATABASE_URL: Value error, must be a postgresql:// URL"
    )
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [["runner"], ["migrate", "up"], ["migrate", "status"]])
def test_an_unreachable_database_is_one_line_exit_1_without_the_password(
    service_env: dict[str, str], command: list[str]
) -> None:
    env = {
        **service_env,
        "DATABASE_URL": f"postgresql://app:hunter2hunter2@127.0.0.1:{free_port()}/app",
        "WCU_DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    result = run_cli(*command, env=env)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("wcu-ai: error: cannot connect to the database at postgresql://app:***@127.0.0.1:")
    assert "(DATABASE_URL)" in line
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [["migrate", "status"], ["runner"]])
def test_a_password_in_the_query_string_is_not_printed(
    service_env: dict[str, str], command: list[str]
) -> None:
    env = {
        **service_env,
        "DATABASE_URL": f"postgresql://app@127.0.0.1:{free_port()}/app?password=hunter2hunter2&sslmode=disable",
        "WCU_DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    result = run_cli(*command, env=env)
    assert result.returncode == 1
    assert "?password=***&sslmode=disable (DATABASE_URL)" in one_line(result.stderr)
    assert "hunter2" not in result.stdout + result.stderr


def test_missing_settings_name_the_variable(service_env: dict[str, str]) -> None:
    env = {k: v for k, v in service_env.items() if k != "DATABASE_URL"}
    assert one_line(run_cli("runner", env=env).stderr) == (
        "wcu-ai: configuration error: DATABASE_URL is not set: give it a postgresql:// URL"
    )
    env = {k: v for k, v in service_env.items() if k != "WCU_API_KEYS"}
    result = run_cli("api", env=env)
    assert result.returncode == 2
    assert "WCU_API_KEYS" in one_line(result.stderr)


def test_a_changed_migration_is_refused_by_the_command(service_env: dict[str, str], db_url: str) -> None:
    assert run_cli("migrate", "up", env=service_env).returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE ai_migrations SET checksum = 'deadbeef0000' WHERE name = '0001_ai_server_tasks'")
    for command in (["migrate", "up"], ["runner"]):
        result = run_cli(*command, env=service_env)
        assert result.returncode == 1
        assert one_line(result.stderr).startswith(
            "wcu-ai: error: migration 0001_ai_server_tasks was changed after it was applied"
        )
    status = run_cli("migrate", "status", env=service_env).stdout
    assert "changed  0001_ai_server_tasks" in status


def test_migrate_status_down_and_up(service_env: dict[str, str]) -> None:
    names = [m.name for m in packaged_migrations()]

    def answer(*args: str) -> str:
        return run_cli(*args, env=service_env).stdout.strip().splitlines()[-1]

    assert answer("migrate", "up") == "applied: " + ", ".join(names)
    assert answer("migrate", "up") == "applied: nothing, already up to date"
    assert answer("migrate", "down", "--steps", "1") == f"reverted: {names[-1]}"
    status = run_cli("migrate", "status", env=service_env).stdout.splitlines()
    assert status[-1].startswith(f"pending  {names[-1]}")


def test_enqueue_puts_a_task_in_the_queue(service_env: dict[str, str], db_url: str) -> None:
    run_cli("migrate", "up", env=service_env)
    result = run_cli("enqueue", "noop", "--payload", '{"k": "v"}', env=service_env)
    assert result.returncode == 0, result.stderr
    row = wait_task(db_url, result.stdout.strip(), "queued")
    assert row["payload"] == {"k": "v"}
    bad = run_cli("enqueue", "noop", "--payload", "[1,2]", env=service_env)
    assert (bad.returncode, one_line(bad.stderr)) == (
        2,
        "wcu-ai: configuration error: --payload must be a JSON object",
    )


def test_tasks_prune_dry_run_counts_and_changes_nothing_then_prune_deletes(
    service_env: dict[str, str], db_url: str
) -> None:
    assert run_cli("migrate", "up", env=service_env).returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO ai_server_tasks (task_type, status, finished_at, created_at)
            SELECT 'noop', s, now() - make_interval(days => d), now() - make_interval(days => d + 1)
            FROM (VALUES ('succeeded', 31), ('failed', 45), ('cancelled', 90), ('succeeded', 29)) AS v(s, d)
            """
        )
        conn.execute(
            "INSERT INTO ai_server_tasks (task_type, status, created_at) VALUES ('noop', 'queued', now() - interval '1 year')"
        )

    def table() -> list[tuple[object, ...]]:
        with psycopg.connect(db_url) as conn:
            return conn.execute("SELECT * FROM ai_server_tasks ORDER BY id").fetchall()

    before = table()
    dry = run_cli("tasks", "prune", "--older-than", "30d", "--dry-run", env=service_env)
    assert dry.returncode == 0, dry.stderr
    line = one_line(dry.stdout)
    assert line.startswith("would delete 3 tasks finished before ") and line.endswith("; deleted nothing")
    assert table() == before

    done = run_cli("tasks", "prune", "--older-than", "30d", env=service_env)
    assert done.returncode == 0, done.stderr
    assert one_line(done.stdout).startswith("deleted 3 tasks finished before ")
    assert sorted(row[3] for row in table()) == ["queued", "succeeded"]
    assert one_line(run_cli("tasks", "prune", "--older-than", "720h", env=service_env).stdout).startswith(
        "deleted 0 tasks"
    )


@pytest.mark.parametrize("older_than", ["30", "30 days", "-1d", "1w", ""])
def test_tasks_prune_refuses_what_is_not_a_duration(service_env: dict[str, str], older_than: str) -> None:
    result = run_cli("tasks", "prune", f"--older-than={older_than}", "--dry-run", env=service_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"wcu-ai tasks prune: error: argument --older-than: {older_than!r} is not a duration: "
        "give one like 30d, 12h, 90m or 45s"
    )
