"""Search over the parsed documents."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request

from wcu_ai.api.deps import ConnDep, SettingsDep
from wcu_ai.api.schemas import SearchHit, SearchResults
from wcu_ai.documents.search import search_hybrid, search_text
from wcu_ai.embeddings import embed_texts
from wcu_ai.tasks.model import error_text

router = APIRouter(prefix="/v1/search", tags=["search"])
logger = logging.getLogger(__name__)


@router.get("")
async def search(
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
    embedder = request.state.embedder
    if embedder is not None:
        try:
            [vector] = await embed_texts(embedder, [q])
        except Exception as exc:
            # The embedder's provider is down: full-text search still answers.
            logger.warning(
                "query embedding failed; full-text only",
                extra={"action": "search.embed_failed", "error": error_text(exc)},
            )
        else:
            passages = await search_hybrid(conn, q, vector, model=settings.embedder or "", limit=limit)
            return SearchResults(query=q, mode="hybrid", results=[SearchHit(**vars(p)) for p in passages])
    passages = await search_text(conn, q, limit=limit)
    return SearchResults(query=q, mode="fulltext", results=[SearchHit(**vars(p)) for p in passages])
