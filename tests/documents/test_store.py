"""The blob store against real PostgreSQL: streamed in and out in chunks, originals of before
migration 0004 still read, memory per document bounded by a chunk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from wcu_ai.database import open_pool
from wcu_ai.documents import store
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings

CHUNK = store.BLOB_CHUNK_BYTES


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


def run_with_conn[T](settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_pool(settings) as pool, pool.connection() as conn:
            return await body(conn)

    return asyncio.run(main())


def upload_of(path: Path) -> store.Upload:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
    return store.Upload(
        filename=path.name,
        content_type="application/pdf",
        kind="pdf",
        sha256=digest,
        size=path.stat().st_size,
        path=path,
    )


@pytest.mark.parametrize(
    "size", [1, CHUNK - 1, CHUNK, 3 * CHUNK + 17], ids=["1", "chunk-1", "chunk", "3chunks+17"]
)
def test_put_then_read_gives_the_same_bytes_in_chunk_rows(
    migrated: Settings, tmp_path: Path, size: int
) -> None:
    original = tmp_path / "doc.pdf"
    original.write_bytes(os.urandom(size))

    async def body(conn: Any) -> tuple[store.Created, bytes, list[int]]:
        created = await store.create(conn, upload_of(original), store.PostgresBlobStore(), max_attempts=1)
        sink = io.BytesIO()
        assert await store.PostgresBlobStore().read_into(conn, created.document_id, sink)
        rows = await (
            await conn.execute(
                "SELECT octet_length(data) AS n FROM parsed_document_blob_chunks WHERE document_id = %s"
                " ORDER BY seq",
                (created.document_id,),
            )
        ).fetchall()
        return created, sink.getvalue(), [r["n"] for r in rows]

    created, read, chunk_sizes = run_with_conn(migrated, body)
    assert read == original.read_bytes()
    assert all(n <= CHUNK for n in chunk_sizes) and sum(chunk_sizes) == size
    assert len(chunk_sizes) == -(-size // CHUNK)
    assert not created.duplicate


def test_the_same_bytes_again_are_a_duplicate_with_no_second_copy(migrated: Settings, tmp_path: Path) -> None:
    original = tmp_path / "doc.pdf"
    original.write_bytes(os.urandom(2 * CHUNK))

    async def body(conn: Any) -> tuple[store.Created, store.Created, int]:
        first = await store.create(conn, upload_of(original), store.PostgresBlobStore(), max_attempts=1)
        second = await store.create(conn, upload_of(original), store.PostgresBlobStore(), max_attempts=1)
        row = await (await conn.execute("SELECT count(*) AS n FROM parsed_document_blob_chunks")).fetchone()
        return first, second, row["n"]

    first, second, rows = run_with_conn(migrated, body)
    assert (second.duplicate, second.document_id) == (True, first.document_id)
    assert rows == 2


def test_an_original_stored_before_migration_0004_is_read_in_slices(migrated: Settings, db_url: str) -> None:
    """A document written by the previous release: one bytea in parsed_document_blobs."""
    data = os.urandom(2 * CHUNK + 5)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes)"
            " VALUES ('old.pdf', 'application/pdf', 'pdf', %s, %s) RETURNING id",
            (hashlib.sha256(data).digest(), len(data)),
        ).fetchone()
        assert row is not None
        document_id: UUID = row[0]
        conn.execute(
            "INSERT INTO parsed_document_blobs (document_id, content) VALUES (%s, %s)", (document_id, data)
        )

    async def body(conn: Any) -> tuple[bool, bytes, bool]:
        sink = io.BytesIO()
        found = await store.PostgresBlobStore().read_into(conn, document_id, sink)
        missing = await store.PostgresBlobStore().read_into(conn, UUID(int=0), io.BytesIO())
        return found, sink.getvalue(), missing

    found, read, missing = run_with_conn(migrated, body)
    assert found and read == data
    assert missing is False


def test_memory_for_a_large_blob_is_a_few_chunks_each_way(migrated: Settings, tmp_path: Path) -> None:
    """Python allocations at their peak while 24 MiB go in and come out: bounded by chunks."""
    size = 96 * CHUNK
    original = tmp_path / "big.pdf"
    with original.open("wb") as f:
        for _ in range(96):
            f.write(os.urandom(CHUNK))

    upload = upload_of(original)

    async def body(conn: Any) -> tuple[int, int]:
        tracemalloc.start()
        try:
            created = await store.create(conn, upload, store.PostgresBlobStore(), max_attempts=1)
            _, peak_in = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with (tmp_path / "copy.pdf").open("wb") as sink:
                assert await store.PostgresBlobStore().read_into(conn, created.document_id, sink)
            _, peak_out = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak_in, peak_out

    peak_in, peak_out = run_with_conn(migrated, body)
    assert (tmp_path / "copy.pdf").read_bytes() == original.read_bytes()
    assert peak_in < 8 * CHUNK, f"writing held {peak_in} bytes at its peak for a {size}-byte blob"
    assert peak_out < 8 * CHUNK, f"reading held {peak_out} bytes at its peak for a {size}-byte blob"
