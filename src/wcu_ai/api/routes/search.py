"""Search over the parsed documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from wcu_ai.api.deps import ConnDep
from wcu_ai.api.schemas import SearchHit, SearchResults
from wcu_ai.documents.search import search_text

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.get("")
async def search(
    conn: ConnDep,
    q: Annotated[
        str, Query(min_length=1, max_length=1000, description='web-search syntax: words, "phrases", -not')
    ],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SearchResults:
    """Ranked passages (document, page, score) by PostgreSQL full-text search."""
    passages = await search_text(conn, q, limit=limit)
    return SearchResults(
        query=q,
        mode="fulltext",
        results=[SearchHit(**vars(p)) for p in passages],
    )
