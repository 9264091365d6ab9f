"""The sweep of stuck documents against real PostgreSQL, and through the real runner."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import psycopg.rows
import pytest

from tests.conftest import Proc, run_cli, wait_task
from tests.factories import make_pdf
from wcu_ai.database import open_pool
from wcu_ai.documents.store import PARSE_TASK
from wcu_ai.documents.sweep import SWEEP_TASK, sweep_stuck_documents
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings
from wcu_ai.tasks import queue
from wcu_ai.tasks.registry import TaskContext

LEASE_EXPIRED = "the runner working this task stopped without finishing it (lease expired)"


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def add_document(
    conn: psycopg.Connection[Any], status: str, task_status: str | None, *, content: bytes | None = None
) -> tuple[str, str]:
    """A document in `status` whose task is in `task_status` (None: the task row does not exist)."""
    task_id = str(uuid.uuid4())
    if task_status is not None:
        conn.execute(
            "INSERT INTO ai_server_tasks (id, task_type, status, attempts, last_error, finished_at) "
            "VALUES (%s, %s, %s, 1, %s, CASE WHEN %s IN ('failed', 'cancelled') THEN now() END)",
            (
                task_id,
                PARSE_TASK,
                task_status,
                LEASE_EXPIRED if task_status == "failed" else None,
                task_status,
            ),
        )
    body = content or uuid.uuid4().bytes
    row = conn.execute(
        "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status, failure_reason,"
        " task_id) VALUES ('a.pdf', 'application/pdf', 'pdf', %s, %s, %s, %s, %s) RETURNING id",
        (
            hashlib.sha256(body).digest(),
            len(body),
            status,
            "earlier failure" if status == "failed" else None,
            task_id,
        ),
    ).fetchone()
    assert row is not None
    conn.execute("INSERT INTO parsed_document_blobs (document_id, content) VALUES (%s, %s)", (row[0], body))
    return str(row[0]), task_id


def document(db_url: str, document_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute(
            "SELECT d.status, d.failure_reason, d.task_id::text, t.task_type, t.status AS task_status, t.payload "
            "FROM parsed_documents d LEFT JOIN ai_server_tasks t ON t.id = d.task_id WHERE d.id = %s",
            (document_id,),
        ).fetchone()
    assert row is not None
    return row


def sweep(settings: Settings) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with open_pool(settings) as pool:
            async with pool.connection() as conn:
                task = await queue.get(conn, await queue.enqueue(conn, SWEEP_TASK))
            assert task is not None
            return await sweep_stuck_documents(task, TaskContext(settings=settings, pool=pool, slot=0))

    return asyncio.run(main())


def test_a_document_whose_task_is_gone_is_queued_again_and_one_whose_task_ended_fails(
    migrated: Settings, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        gone = [add_document(conn, "parsing", None), add_document(conn, "queued", None)]
        lease_expired, _ = add_document(conn, "parsing", "failed")
        cancelled, cancelled_task = add_document(conn, "queued", "cancelled")
        untouched = {
            doc: document(db_url, doc)
            for doc, _ in (
                add_document(conn, "parsing", "running"),
                add_document(conn, "queued", "queued"),
                add_document(conn, "parsed", None),
                add_document(conn, "failed", None),
            )
        }

    result = sweep(migrated)
    assert sorted(result["requeued"]) == sorted(doc for doc, _ in gone)
    assert sorted(result["failed"]) == sorted([lease_expired, cancelled])
    for doc, old_task in gone:
        row = document(db_url, doc)
        assert (row["status"], row["task_type"], row["task_status"]) == ("queued", PARSE_TASK, "queued")
        assert row["task_id"] != old_task and row["payload"] == {"document_id": doc}
    row = document(db_url, lease_expired)
    assert row["status"] == "failed" and LEASE_EXPIRED in row["failure_reason"]
    row = document(db_url, cancelled)
    assert row["status"] == "failed"
    assert row["failure_reason"] == (
        f"its parse task {cancelled_task} was cancelled; `wcu-ai tasks retry {cancelled_task}` parses it again"
    )
    assert {doc: document(db_url, doc) for doc in untouched} == untouched
    # Swept once: a second sweep finds nothing left to do.
    assert sweep(migrated) == {"requeued": [], "failed": []}


def test_a_document_a_parse_holds_is_left_to_the_next_sweep(migrated: Settings, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        doc, _ = add_document(conn, "parsing", None)
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT 1 FROM parsed_documents WHERE id = %s FOR UPDATE", (doc,))
        assert sweep(migrated) == {"requeued": [], "failed": []}
    assert sweep(migrated)["requeued"] == [doc]


@pytest.mark.documents
def test_the_runner_parses_a_document_whose_task_was_lost(
    start: Callable[..., Proc], db_url: str, service_env: dict[str, str], tmp_path: Path
) -> None:
    runner = start("runner")
    runner.wait_for("runner.leader")
    pdf = make_pdf(tmp_path / "lost.pdf", ["The minutes of a meeting whose parse was lost."]).read_bytes()
    with psycopg.connect(db_url, autocommit=True) as conn:
        doc, _ = add_document(conn, "parsing", None, content=pdf)

    swept = run_cli("enqueue", SWEEP_TASK, env=service_env).stdout.strip()
    assert wait_task(db_url, swept, "succeeded")["result"] == {"requeued": [doc], "failed": []}
    deadline = time.monotonic() + 90
    while document(db_url, doc)["status"] != "parsed" and time.monotonic() < deadline:
        time.sleep(0.1)
    row = document(db_url, doc)
    assert (row["status"], row["task_status"]) == ("parsed", "succeeded"), runner.output()[-3000:]
    with psycopg.connect(db_url) as conn:
        [(text,)] = conn.execute(
            "SELECT text FROM parsed_document_pages WHERE document_id = %s", (doc,)
        ).fetchall()
    assert "whose parse was lost" in text
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
