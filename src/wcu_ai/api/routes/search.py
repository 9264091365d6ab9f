"""Search over the parsed documents."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError

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
        str,
        Query(
            min_length=1,
            max_length=10000,
            description='web-search syntax: words, "phrases", -not, or; at most WCU_SEARCH_MAX_QUERY_CHARS '
            "characters (500) and WCU_SEARCH_MAX_TERMS words (24)",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SearchResults:
    """Ranked passages (document, page, score): full-text search, fused with vector similarity
    when an embedder is configured (WCU_EMBEDDER)."""
    check_query_size(q, max_chars=settings.search_max_query_chars, max_terms=settings.search_max_terms)
    mode, passages = await search(
        conn, q, embedder=request.state.embedder, embedder_spec=settings.embedder, limit=limit
    )
    return SearchResults(query=q, mode=mode, results=[SearchHit(**vars(p)) for p in passages])


# Letters and digits: PostgreSQL's parser splits words at "_" too, so "a_b_c" is three lexemes.
_WORD = re.compile(r"[^\W_]+")


def query_terms(q: str) -> int:
    """The words of a web-search query, as many as its tsquery has lexemes at most (`or` is an operator)."""
    return sum(1 for word in _WORD.findall(q) if word.lower() != "or")


def check_query_size(q: str, *, max_chars: int, max_terms: int) -> None:
    """Refuses a query whose cost is out of bounds (422 in FastAPI's own shape, naming the limit).

    Each word is one more GIN index lookup whose row sets are combined and one more node that
    ranking and headlines evaluate on every matching chunk; with enough `or`-ed words the planner
    gives up the index for a parallel scan of every chunk. So the word count is what is bounded,
    the length only beside it; WCU_DB_STATEMENT_TIMEOUT_SECONDS bounds what is left.
    """
    problem = None
    if (terms := query_terms(q)) > max_terms:
        problem = (
            f"the query has {terms} words; at most {max_terms} are allowed (WCU_SEARCH_MAX_TERMS): "
            "keep the words that matter"
        )
    elif len(q) > max_chars:
        problem = (
            f"the query has {len(q)} characters; at most {max_chars} are allowed (WCU_SEARCH_MAX_QUERY_CHARS)"
        )
    if problem:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "q"), "msg": problem, "input": q}]
        )
