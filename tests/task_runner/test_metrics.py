"""RunnerMetrics' labels and QueueStats against a real PostgreSQL, read with prometheus_client's parser."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from prometheus_client.exposition import generate_latest

from tests.conftest import free_port
from tests.scrape import Scrape, parse
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
    ToolError,
    ToolMissingError,
    ToolTimeoutError,
)
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.task_runner.metrics import Q, QueueStats, RunnerMetrics, failure_reason


def read(metrics: RunnerMetrics) -> Scrape:
    return parse(generate_latest(metrics.registry).decode())


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (DocumentLimitError("too many pages"), "limit"),
        (DocumentTimeoutError("slow"), "timeout"),
        (ToolTimeoutError("soffice hung"), "timeout"),
        (EncryptedDocumentError(), "encrypted"),
        (ToolMissingError("no soffice"), "tool_missing"),
        (DocumentError("not a pdf"), "unreadable"),
        (ToolError("soffice exit 1"), "tool"),
        (RuntimeError("boom"), "error"),
    ],
)
def test_failure_reason_classes(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason


def test_unregistered_task_types_share_one_label_and_every_series_starts_at_zero() -> None:
    metrics = RunnerMetrics()
    metrics.track_task_types(["noop", "parse_document"])
    before = read(metrics)
    assert before.value("wcu_runner_tasks_claimed_total", task_type="parse_document") == 0
    assert before.value("wcu_runner_task_outcomes_total", task_type="noop", outcome="failed") == 0
    assert before.value("wcu_documents_failed_total", kind="docx", reason="timeout") == 0

    for task_type in ("noop", "made-up-1", "made-up-2"):
        metrics.task_claimed(task_type)
        metrics.task_ran(task_type, 0.02)
        metrics.task_recorded(task_type, "task.succeeded")
    after = read(metrics)
    assert after.value("wcu_runner_tasks_claimed_total", task_type="noop") == 1
    assert after.value("wcu_runner_tasks_claimed_total", task_type="unknown") == 2
    assert after.value("wcu_runner_task_outcomes_total", task_type="unknown", outcome="succeeded") == 2
    assert after.value("wcu_runner_task_duration_seconds_count", task_type="noop") == 1
    assert after.value("wcu_runner_task_duration_seconds_bucket", task_type="noop", le="0.025") == 1
    assert after.value("wcu_runner_task_duration_seconds_bucket", task_type="noop", le="0.01") == 0
    types = {labels["task_type"] for labels in after.labels_of("wcu_runner_tasks_claimed_total")}
    assert types == {"noop", "parse_document", "unknown"}


def insert(conn: psycopg.Connection[Any], status: str, seconds_ago: float, count: int = 1) -> None:
    conn.execute(
        "INSERT INTO ai_server_tasks (task_type, status, run_after, payload)"
        " SELECT 'noop', %s, now() - make_interval(secs => %s), %s FROM generate_series(1, %s)",
        (status, seconds_ago, json.dumps({}), count),
    )


def test_queue_stats_read_depth_and_the_oldest_due_task_from_the_database(settings: Settings) -> None:
    MigrationTool(settings).run_up()
    stats = QueueStats(settings)
    metrics = RunnerMetrics()
    metrics.registry.register(stats)
    try:
        empty = read(metrics)
        assert empty.value("wcu_task_queue_stats_up") == 1
        assert empty.value("wcu_task_queue_depth", status="queued") == 0
        assert empty.value("wcu_task_queue_oldest_due_age_seconds") == 0

        with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
            insert(conn, "queued", 120, count=3)  # due two minutes ago
            insert(conn, "queued", -3600)  # due in an hour: queued, not yet due
            insert(conn, "running", 0, count=2)
            insert(conn, "succeeded", 900, count=5)
            insert(conn, "failed", 900)
        full = read(metrics)
        assert full.types["wcu_task_queue_depth"] == "gauge"
        assert full.value("wcu_task_queue_depth", status="queued") == 4
        assert full.value("wcu_task_queue_depth", status="running") == 2
        assert full.labels_of("wcu_task_queue_depth") == [{"status": "queued"}, {"status": "running"}]
        assert 120 <= full.value("wcu_task_queue_oldest_due_age_seconds") < 3600
    finally:
        stats.close()


def test_queue_stats_without_a_database_report_down_and_no_stale_figures(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"database_url": f"postgresql://app:hunter2hunter2@127.0.0.1:{free_port()}/app"}
    )
    metrics = RunnerMetrics()
    metrics.registry.register(QueueStats(dead))
    down = read(metrics)
    assert down.value("wcu_task_queue_stats_up") == 0
    assert "wcu_task_queue_depth" not in down.names()
    assert "wcu_task_queue_oldest_due_age_seconds" not in down.names()


def test_queue_stats_read_only_the_partial_indexes_however_many_tasks_are_finished(
    settings: Settings,
) -> None:
    MigrationTool(settings).run_up()
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        insert(conn, "succeeded", 3600, count=50_000)
        insert(conn, "queued", 10, count=20)
        insert(conn, "running", 0, count=2)
        conn.execute("ANALYZE ai_server_tasks")
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + Q["queue_stats"], {"cap": 100_000}).fetchone()
    assert plan is not None
    text = json.dumps(plan[0])
    assert "Seq Scan" not in text, text
    assert "ai_server_tasks_queued_idx" in text and "ai_server_tasks_lease_idx" in text
