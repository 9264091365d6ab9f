"""Documents in PostgreSQL: metadata, the original bytes, pages and chunks.

The original bytes sit behind BlobStore so another storage (S3) can replace the embedded
default without touching the API or the runner. Both directions stream: a document costs its
writer and its reader a chunk of memory, never its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from uuid import UUID

from psycopg import AsyncConnection

from wcu_ai.database import load_queries
from wcu_ai.documents.detect import DocumentKind
from wcu_ai.documents.parse import ParsedDocument
from wcu_ai.documents.textsearch import TEXT_SEARCH_CONFIGS, choose_config, detection_sample
from wcu_ai.tasks import queue

Q = load_queries("wcu_ai.documents", "queries.sql")

PARSE_TASK = "parse_document"


# The unit of streaming both ways: what one upload or one parse holds in memory, a few times over
# (psycopg's COPY buffer, libpq's). Small enough for hundreds of concurrent uploads, large enough
# that a 50 MiB document is 200 rows.
BLOB_CHUNK_BYTES = 256 * 1024


class BlobStore(Protocol):
    """Where the original bytes of a document live.

    `conn` is the caller's connection: put() runs inside the transaction that creates the document,
    so a document never exists without its bytes. An S3 store would ignore it and stream the file.
    """

    async def put(self, conn: AsyncConnection[Any], document_id: UUID, source: BinaryIO) -> int:
        """Stores everything `source` (a file open for reading) holds; returns the bytes stored."""
        ...

    async def read_into(self, conn: AsyncConnection[Any], document_id: UUID, sink: BinaryIO) -> bool:
        """Writes the original to `sink` (a file open for writing); False when there is none."""
        ...


class PostgresBlobStore:
    """The embedded default: chunks of BLOB_CHUNK_BYTES in parsed_document_blob_chunks (migration
    0004), deleted with their document; originals stored before 0004 are read from
    parsed_document_blobs in slices of the same size.

    Why chunk rows rather than one bytea written through COPY: PostgreSQL assembles a bytea whole in
    the backend before storing it, so one value per document would move each upload's full size
    from the API's memory to the database's (see the migration). Rows of one chunk go in through
    one binary COPY per document (one statement, no round trip per chunk) and come out through
    another, each row read as it arrives.
    """

    async def put(self, conn: AsyncConnection[Any], document_id: UUID, source: BinaryIO) -> int:
        size = 0
        async with conn.cursor() as cur, cur.copy(Q["copy_blob_chunks_in"]) as copy:
            copy.set_types(["uuid", "int4", "bytea"])
            seq = 0
            # A read from the local scratch file (page cache) blocks the loop for microseconds.
            while chunk := source.read(BLOB_CHUNK_BYTES):
                await copy.write_row((document_id, seq, chunk))
                size += len(chunk)
                seq += 1
        return size

    async def read_into(self, conn: AsyncConnection[Any], document_id: UUID, sink: BinaryIO) -> bool:
        found = False
        async with conn.cursor() as cur, cur.copy(Q["copy_blob_chunks_out"], {"id": document_id}) as copy:
            copy.set_types(["bytea"])
            async for (data,) in copy.rows():
                sink.write(data)
                found = True
        return found or await self._read_legacy_into(conn, document_id, sink)

    async def _read_legacy_into(self, conn: AsyncConnection[Any], document_id: UUID, sink: BinaryIO) -> bool:
        row = await (await conn.execute(Q["legacy_blob_size"], {"id": document_id})).fetchone()
        if row is None:
            return False
        for start in range(0, row["size"], BLOB_CHUNK_BYTES):
            params = {"id": document_id, "start": start + 1, "length": BLOB_CHUNK_BYTES}
            part = await (await conn.execute(Q["legacy_blob_slice"], params)).fetchone()
            if part is None:  # deleted meanwhile
                return False
            sink.write(part["part"])
        return True


@dataclass(frozen=True)
class Upload:
    """A received file: its bytes are in `path` (the API's scratch file), hashed and counted."""

    filename: str
    content_type: str
    kind: DocumentKind
    sha256: bytes
    size: int
    path: Path
    # The text-search configuration the uploader gave (textsearch.TEXT_SEARCH_CONFIGS); None: detect it.
    text_search_config: str | None = None


@dataclass(frozen=True)
class Created:
    document_id: UUID
    task_id: UUID | None
    duplicate: bool


async def create(
    conn: AsyncConnection[Any], upload: Upload, blobs: BlobStore, *, max_attempts: int
) -> Created:
    """Stores a new document and enqueues its parse, in one transaction; a known hash is a duplicate."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                Q["insert_document"],
                {
                    "filename": upload.filename,
                    "content_type": upload.content_type,
                    "kind": upload.kind,
                    "sha256": upload.sha256,
                    "size_bytes": upload.size,
                    "text_search_config": upload.text_search_config,
                },
            )
        ).fetchone()
        if row is None:
            existing = await (await conn.execute(Q["find_by_sha256"], {"sha256": upload.sha256})).fetchone()
            assert existing is not None
            document = await get(conn, existing["id"])
            return Created(existing["id"], document["task_id"] if document else None, duplicate=True)
        document_id: UUID = row["id"]
        with upload.path.open("rb") as source:
            stored = await blobs.put(conn, document_id, source)
        if stored != upload.size:
            raise RuntimeError(f"the scratch file of an upload changed: {stored} bytes, not {upload.size}")
        task_id = await queue.enqueue(
            conn, PARSE_TASK, {"document_id": str(document_id)}, max_attempts=max_attempts
        )
        await conn.execute(Q["set_task"], {"id": document_id, "task_id": task_id})
    return Created(document_id, task_id, duplicate=False)


async def get(conn: AsyncConnection[Any], document_id: UUID) -> dict[str, Any] | None:
    return await (await conn.execute(Q["get"], {"id": document_id})).fetchone()


async def list_documents(
    conn: AsyncConnection[Any], *, status: str | None, before: tuple[datetime, UUID] | None, limit: int
) -> list[dict[str, Any]]:
    before_ts, before_id = before if before else (None, None)
    params = {"status": status, "before_ts": before_ts, "before_id": before_id, "limit": limit}
    return await (await conn.execute(Q["list"], params)).fetchall()


async def page_range(
    conn: AsyncConnection[Any], document_id: UUID, *, first: int, last: int, max_pages: int, max_chars: int
) -> list[dict[str, Any]]:
    """Pages first..last (page_no, text, ocr, chars: the page's full length) within the bounds."""
    params = {
        "id": document_id,
        "from_page": first,
        "to_page": last,
        "max_pages": max_pages,
        "max_chars": max_chars,
    }
    return await (await conn.execute(Q["page_range"], params)).fetchall()


async def delete(conn: AsyncConnection[Any], document_id: UUID) -> bool:
    """Removes the document with its original, pages and chunks (ON DELETE CASCADE)."""
    return (await (await conn.execute(Q["delete"], {"id": document_id})).fetchone()) is not None


async def lock_for_parsing(conn: AsyncConnection[Any], document_id: UUID) -> str | None:
    row = await (await conn.execute(Q["lock_for_parsing"], {"id": document_id})).fetchone()
    return None if row is None else row["status"]


async def set_status(
    conn: AsyncConnection[Any], document_id: UUID, status: str, reason: str | None = None
) -> None:
    query = {"parsing": "mark_parsing", "queued": "mark_queued", "failed": "mark_failed"}[status]
    await conn.execute(Q[query], {"id": document_id, "reason": reason})


async def stuck_documents(conn: AsyncConnection[Any], *, limit: int) -> list[dict[str, Any]]:
    """Queued or parsing documents whose task is gone, failed or cancelled, row-locked (caller's transaction)."""
    return await (await conn.execute(Q["stuck_documents"], {"limit": limit})).fetchall()


async def requeue(conn: AsyncConnection[Any], document_id: UUID, task_id: UUID) -> None:
    """Queued again under a new parse task."""
    await conn.execute(Q["requeue_document"], {"id": document_id, "task_id": task_id})


async def save_parsed(
    conn: AsyncConnection[Any],
    document_id: UUID,
    parsed: ParsedDocument,
    *,
    embeddings: list[list[float]] | None = None,
    embedding_model: str | None = None,
) -> None:
    """Replaces pages and chunks with the parse's, and marks the document parsed (caller's transaction).

    The chunks are indexed with the document's text-search configuration: the one given at upload,
    else the one detected from the text now.
    """
    config = await text_search_config(conn, document_id, parsed.pages)
    ocr = set(parsed.ocr_pages)
    await conn.execute(Q["clear_derived"], {"id": document_id})
    await conn.execute(Q["clear_chunks"], {"id": document_id})
    async with conn.cursor() as cur:
        await cur.executemany(
            Q["insert_page"],
            [
                {"id": document_id, "page_no": n, "text": text, "ocr": n in ocr}
                for n, text in enumerate(parsed.pages, start=1)
            ],
        )
        await cur.executemany(
            Q["insert_chunk"],
            [
                {
                    "id": document_id,
                    "page_no": c.page,
                    "ordinal": c.ordinal,
                    "char_start": c.char_start,
                    "char_end": c.char_end,
                    "text": c.text,
                    "embedding": str(embeddings[i]) if embeddings else None,
                    "embedding_model": embedding_model if embeddings else None,
                    "text_search_config": config,
                }
                for i, c in enumerate(parsed.chunks)
            ],
        )
    await conn.execute(
        Q["mark_parsed"],
        {
            "id": document_id,
            "page_count": parsed.page_count,
            "title": parsed.title,
            "author": parsed.author,
            "producer": parsed.producer,
            "pdf_bytes": parsed.pdf_bytes,
            "text_chars": parsed.text_chars,
            "text_search_config": config,
        },
    )


async def text_search_config(conn: AsyncConnection[Any], document_id: UUID, pages: tuple[str, ...]) -> str:
    """The document's configuration as given at upload, else detected from a sample of `pages`."""
    row = await (await conn.execute(Q["text_search_config"], {"id": document_id})).fetchone()
    if row is not None and row["text_search_config"] is not None:
        return str(row["text_search_config"])
    return await detect_text_search_config(conn, pages)


async def detect_text_search_config(conn: AsyncConnection[Any], pages: list[str] | tuple[str, ...]) -> str:
    """The configuration whose stop words fit a bounded sample of the text (textsearch.choose_config)."""
    sample = detection_sample(pages)
    if not sample.strip():
        return choose_config({})
    params = {"sample": sample, "configs": list(TEXT_SEARCH_CONFIGS)}
    rows = await (await conn.execute(Q["detect_text_search_config"], params)).fetchall()
    return choose_config({row["config"]: int(row["kept"]) for row in rows})
