"""Documents in PostgreSQL: metadata, the original bytes, pages and chunks.

The original bytes sit behind BlobStore so another storage (S3) can replace the embedded
default without touching the API or the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from psycopg import AsyncConnection

from wcu_ai.database import load_queries
from wcu_ai.documents.detect import DocumentKind
from wcu_ai.documents.parse import ParsedDocument
from wcu_ai.documents.textsearch import TEXT_SEARCH_CONFIGS, choose_config, detection_sample
from wcu_ai.tasks import queue

Q = load_queries("wcu_ai.documents", "queries.sql")

PARSE_TASK = "parse_document"


class BlobStore(Protocol):
    """Where the original bytes of a document live."""

    async def put(self, conn: AsyncConnection[Any], document_id: UUID, content: bytes) -> None: ...

    async def get(self, conn: AsyncConnection[Any], document_id: UUID) -> bytes | None: ...


class PostgresBlobStore:
    """The embedded default: bytes in parsed_document_blobs, deleted with their document."""

    async def put(self, conn: AsyncConnection[Any], document_id: UUID, content: bytes) -> None:
        await conn.execute(Q["insert_blob"], {"id": document_id, "content": content})

    async def get(self, conn: AsyncConnection[Any], document_id: UUID) -> bytes | None:
        row = await (await conn.execute(Q["load_blob"], {"id": document_id})).fetchone()
        return None if row is None else bytes(row["content"])


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    kind: DocumentKind
    sha256: bytes
    content: bytes
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
                    "size_bytes": len(upload.content),
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
        await blobs.put(conn, document_id, upload.content)
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
