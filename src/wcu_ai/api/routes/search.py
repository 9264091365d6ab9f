"""Search over the parsed documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from wcu_ai.api.deps import ConnDep, SettingsDep
from wcu_ai.api.schemas import SearchHit, SearchResults
from wcu_ai.documents.search import search

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.get("")
async def search_documents(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    q: Annotated[
        str, Query(min_length=1, max_length=1000, description='web-search syntax: words, "phrases", -not')
    ],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SearchResults:
    """Ranked passages (document, page, score): full-text search, fused with vector similarity
    when an embedder is configured (WCU_EMBEDDER)."""
    mode, passages = await search(
        conn, q, embedder=request.state.embedder, embedder_spec=settings.embedder, limit=limit
    )
    return SearchResults(query=q, mode=mode, results=[SearchHit(**vars(p)) for p in passages])
