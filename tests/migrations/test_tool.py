from __future__ import annotations

import threading

import psycopg
import pytest

from wcu_ai.errors import MigrationError
from wcu_ai.migrations import MigrationTool, packaged_migrations
from wcu_ai.migrations.tool import parse_migration
from wcu_ai.settings import Settings


def test_parse_splits_up_and_down() -> None:
    m = parse_migration(
        "0007_thing.sql", "-- why\n-- migrate:up\nCREATE TABLE t ();\n-- migrate:down\nDROP TABLE t;\n"
    )
    assert (m.name, m.up_sql, m.down_sql) == ("0007_thing", "CREATE TABLE t ();", "DROP TABLE t;")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("7_thing.sql", "-- migrate:up\n-- migrate:down\n"),
        ("0007_thing.sql", "CREATE TABLE t ();"),
        ("0007_thing.sql", "-- migrate:down\nx\n-- migrate:up\ny"),
    ],
)
def test_parse_refuses_malformed_files(name: str, text: str) -> None:
    with pytest.raises(MigrationError):
        parse_migration(name, text)


def test_packaged_migrations_are_ordered_and_start_with_the_queue() -> None:
    names = [m.name for m in packaged_migrations()]
    assert names == sorted(names)
    assert names[0] == "0001_ai_server_tasks"
    assert "0002_parsed_documents" in names


def table_names(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_up_then_status_then_down_round_trip(settings: Settings, db_url: str) -> None:
    tool = MigrationTool(settings)
    assert tool.pending() == [m.name for m in packaged_migrations()]
    applied = tool.run_up()
    assert applied == [m.name for m in packaged_migrations()]
    assert {"ai_migrations", "ai_server_tasks", "parsed_documents"} <= table_names(db_url)
    assert tool.pending() == []
    assert tool.run_up() == []  # a second run changes nothing

    assert tool.run_down(len(applied)) == list(reversed(applied))
    assert table_names(db_url) == {"ai_migrations"}
    assert tool.run_up() == applied


def test_a_changed_applied_migration_is_refused(settings: Settings) -> None:
    tool = MigrationTool(settings)
    tool.run_up()
    first = packaged_migrations()[0]
    edited = parse_migration(
        first.name + ".sql",
        "-- edited\n-- migrate:up\n" + first.up_sql + "\n-- migrate:down\n" + first.down_sql,
    )
    with pytest.raises(MigrationError, match=r"0001_ai_server_tasks was changed after it was applied"):
        MigrationTool(settings, migrations=[edited]).run_up()
    assert MigrationTool(settings, migrations=[edited]).status()[0].state == "changed"


def test_a_failing_migration_leaves_nothing_half_applied(settings: Settings, db_url: str) -> None:
    good = parse_migration(
        "0001_good.sql", "-- migrate:up\nCREATE TABLE good (id int);\n-- migrate:down\nDROP TABLE good;"
    )
    bad = parse_migration(
        "0002_bad.sql",
        "-- migrate:up\nCREATE TABLE half (id int);\nSELECT no_such_function();\n-- migrate:down\n",
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        MigrationTool(settings, migrations=[good, bad]).run_up()
    assert table_names(db_url) == {"ai_migrations", "good"}
    assert MigrationTool(settings, migrations=[good, bad]).pending() == ["0002_bad"]


def test_concurrent_runs_apply_each_migration_once(settings: Settings, db_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            barrier.wait()
            results.append(MigrationTool(settings).run_up())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [name for r in results for name in r]
    assert sorted(applied) == [m.name for m in packaged_migrations()]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM ai_migrations").fetchone()[0] == len(packaged_migrations())


def test_a_custom_schema_holds_every_table(db_url: str) -> None:
    settings = Settings(DATABASE_URL=db_url, db_schema="wcu_custom")
    MigrationTool(settings).run_up()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'wcu_custom'").fetchall()
    assert {"ai_migrations", "ai_server_tasks"} <= {r[0] for r in rows}
    assert "ai_server_tasks" not in table_names(db_url)


def test_reverting_0006_keeps_cancelled_tasks_as_failed_with_their_reason(
    settings: Settings, db_url: str
) -> None:
    tool = MigrationTool(settings)
    tool.run_up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ai_server_tasks (task_type, status, last_error) "
            "VALUES ('noop', 'cancelled', 'cancelled by an operator')"
        )
    names = [m.name for m in packaged_migrations()]
    steps = len(names) - names.index("0006_task_schedules_and_retention")
    assert tool.run_down(steps)[-1] == "0006_task_schedules_and_retention"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, last_error FROM ai_server_tasks").fetchall() == [
            ("failed", "cancelled by an operator")
        ]
        assert conn.execute("SELECT to_regclass('ai_server_schedules')").fetchone() == (None,)
    assert tool.run_up()[0] == "0006_task_schedules_and_retention"
