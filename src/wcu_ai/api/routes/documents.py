"""Upload documents, follow their parsing, read their text, delete them."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from wcu_ai.api.deps import ConnDep, PoolDep, SettingsDep
from wcu_ai.api.pagination import decode_cursor, encode_cursor
from wcu_ai.api.schemas import DocumentPage, DocumentPublic, DocumentText, PageText, UploadAccepted
from wcu_ai.api.upload import receive_file
from wcu_ai.documents import store
from wcu_ai.documents.detect import CONTENT_TYPES, detect_type, unsupported_reason
from wcu_ai.documents.textsearch import TextSearchConfig

router = APIRouter(prefix="/v1/documents", tags=["documents"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "the same bytes were uploaded before", "model": UploadAccepted},
        400: {},
        413: {},
        415: {},
        422: {},
    },
)
async def upload_document(
    request: Request,
    settings: SettingsDep,
    pool: PoolDep,
    language: Annotated[
        TextSearchConfig | None,
        Query(
            description="the text-search configuration to index the text with (`simple`: no stemming); "
            "detected from the text when absent"
        ),
    ] = None,
) -> Any:
    """Multipart upload (field `file`) of a PDF or DOCX, detected from its bytes; parsing is queued."""
    async with receive_file(
        request,
        field="file",
        max_bytes=settings.upload_max_bytes,
        scratch_dir=request.state.upload_dir,
        budget=request.state.scratch_budget,
    ) as received:
        kind = detect_type(received.path)
        if kind is None:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, unsupported_reason(received.path))
        upload = store.Upload(
            filename=received.filename,
            # What the bytes are, not what the client called them (curl -F sends octet-stream).
            content_type=CONTENT_TYPES[kind],
            kind=kind,
            sha256=received.sha256,
            size=received.size,
            path=received.path,
            text_search_config=language,
        )
        # The scratch file streams into the database from local disk, so the transaction lasts as
        # long as the copy, not as long as a slow client takes to send it.
        async with pool.connection() as conn:
            created = await store.create(
                conn, upload, store.PostgresBlobStore(), max_attempts=settings.task_max_attempts
            )
            # A new document is queued as it is committed; re-reading it would race the runner, which
            # may already be parsing it. A duplicate reports the status it has now.
            document = await store.get(conn, created.document_id) if created.duplicate else None
    body = UploadAccepted(
        document_id=created.document_id,
        task_id=created.task_id,
        status=document["status"] if document else "queued",
        duplicate=created.duplicate,
    )
    if created.duplicate:
        return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    return body


def _not_found(document_id: UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {document_id}")


@router.get("/{document_id}", responses={404: {}})
async def get_document(document_id: UUID, conn: ConnDep) -> DocumentPublic:
    document = await store.get(conn, document_id)
    if document is None:
        raise _not_found(document_id)
    return DocumentPublic(**document)


# Pages one /text response holds at most, whatever their size (each page's length is computed).
_TEXT_MAX_PAGES = 500


@router.get("/{document_id}/text", responses={404: {}, 409: {"description": "not parsed (yet)"}, 422: {}})
async def get_document_text(
    document_id: UUID,
    conn: ConnDep,
    settings: SettingsDep,
    from_page: Annotated[int, Query(ge=1, le=1_000_000, description="first page wanted")] = 1,
    to_page: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="last page wanted (default: the last page)")
    ] = None,
) -> DocumentText:
    """The text of pages from_page..to_page, page by page, in a bounded response: at most
    WCU_TEXT_RESPONSE_MAX_CHARS characters of page text and 500 pages. Follow `next_page` for the
    rest of the range; without parameters a document within the bound comes whole. A from_page past
    the last page is a 422 that gives the page count."""
    if to_page is not None and to_page < from_page:
        # The shape of FastAPI's own 422 (HTTPValidationError), which the OpenAPI schema promises.
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "to_page"),
                    "msg": "to_page must not be before from_page",
                    "input": to_page,
                }
            ]
        )
    document = await store.get(conn, document_id)
    if document is None:
        raise _not_found(document_id)
    if document["status"] != "parsed":
        reason = f": {document['failure_reason']}" if document["failure_reason"] else ""
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"the document is {document['status']}, not parsed{reason}"
        )
    page_count = document["page_count"]
    # A document without pages still answers its first page, empty.
    if from_page > max(page_count, 1):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "from_page"),
                    "msg": f"from_page is past the last page: the document has {page_count} pages",
                    "input": from_page,
                }
            ]
        )
    last = page_count if to_page is None else min(to_page, page_count)
    rows = await store.page_range(
        conn,
        document_id,
        first=from_page,
        last=last,
        max_pages=_TEXT_MAX_PAGES,
        max_chars=settings.text_response_max_chars,
    )
    if not rows and page_count and last >= from_page:
        # Deleted between the two statements (each sees the database as it is then): as gone.
        raise _not_found(document_id)
    pages = [
        PageText(page=r["page_no"], text=r["text"], ocr=r["ocr"], truncated=len(r["text"]) < r["chars"])
        for r in rows
    ]
    returned_to = pages[-1].page if pages else from_page - 1
    return DocumentText(
        document_id=document_id,
        page_count=page_count,
        text_chars=document["text_chars"],
        from_page=from_page,
        to_page=returned_to,
        next_page=returned_to + 1 if returned_to < last else None,
        text="\n\n".join(p.text for p in pages),
        pages=pages,
    )


@router.get("")
async def list_documents(
    conn: ConnDep,
    status_: Annotated[str | None, Query(alias="status", pattern="^(queued|parsing|parsed|failed)$")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DocumentPage:
    """Newest first. Pass `next_cursor` back as `cursor` for the next page."""
    rows = await store.list_documents(
        conn, status=status_, before=decode_cursor(cursor) if cursor else None, limit=limit
    )
    last = rows[-1] if len(rows) == limit else None
    return DocumentPage(
        items=[DocumentPublic(**r) for r in rows],
        next_cursor=encode_cursor(last["created_at"], last["id"]) if last else None,
    )


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def delete_document(document_id: UUID, conn: ConnDep) -> Response:
    """Removes the document, its original, its pages and its chunks."""
    if not await store.delete(conn, document_id):
        raise _not_found(document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
