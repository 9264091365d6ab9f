"""Ranked passages from the parsed documents: full-text always, hybrid when an embedder is set.

Hybrid ranking fuses the full-text and the vector rankings with reciprocal rank fusion, which
needs no tuning of the two scores' scales against each other.

A passage's snippet is plain text, never markup: the words that matched the query are given as
[start, end) offsets into it (Unicode code points), so no client has to trust HTML built from a
document's text.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from wcu_ai.documents.store import Q
from wcu_ai.documents.textsearch import TEXT_SEARCH_CONFIGS
from wcu_ai.embeddings import embed_texts
from wcu_ai.tasks.model import error_text

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder

logger = logging.getLogger(__name__)

RRF_K = 60


# What the full-text query's headline marks matches with (queries.sql, search_text).
_START, _STOP = "\x02", "\x03"
_MARKS = re.compile("([\x02\x03])")


@dataclass(frozen=True)
class Passage:
    document_id: UUID
    page: int
    score: float
    snippet: str
    text: str
    highlights: tuple[tuple[int, int], ...] = ()


def highlighted(headline: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The plain text of a headline marked with STX/ETX, and the [start, end) offsets of the marks (pure)."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position, start = 0, None
    for piece in _MARKS.split(headline):
        if piece == _START:
            start = position
        elif piece == _STOP:
            if start is not None and start < position:
                spans.append((start, position))
            start = None
        elif piece:
            parts.append(piece)
            position += len(piece)
    return "".join(parts), tuple(spans)


# What the headline's text had in place of the chunk's (queries.sql, search_text): one character
# for one, so a snippet found in the replaced text is at the same offsets in the chunk's own.
_HEADLINE_TEXT = str.maketrans("\x02\x03<>", "    ")
_MARKS_OUT = str.maketrans("\x02\x03", "  ")


def restored(snippet: str, text: str) -> str:
    """The snippet with the chunk's < and > back in place (pure); STX/ETX stay spaces.

    The headline is a run of the replaced text; when it is not found there (a headline that
    rearranged whitespace), the snippet stays as the headline gave it.
    """
    start = text.translate(_HEADLINE_TEXT).find(snippet)
    return snippet if start < 0 else text[start : start + len(snippet)].translate(_MARKS_OUT)


def _text_row(row: dict[str, Any]) -> dict[str, Any]:
    snippet, spans = highlighted(row["snippet"])
    return {**row, "snippet": restored(snippet, row["text"]), "highlights": spans}


def _passage(row: dict[str, Any], score: float | None = None) -> Passage:
    return Passage(
        document_id=row["document_id"],
        page=row["page_no"],
        score=float(row["score"] if score is None else score),
        snippet=row["snippet"],
        text=row["text"],
        highlights=row.get("highlights", ()),
    )


async def search(
    conn: AsyncConnection[Any],
    query: str,
    *,
    embedder: Embedder | None,
    embedder_spec: str | None,
    limit: int,
) -> tuple[str, list[Passage]]:
    """("hybrid", …) when an embedder is configured and answers, else ("fulltext", …).

    The API's /v1/search and the agents' knowledge tool both search through here.
    """
    if embedder is not None:
        try:
            [vector] = await embed_texts(embedder, [query])
        except Exception as exc:
            # The embedder's provider is down: full-text search still answers.
            logger.warning(
                "query embedding failed; full-text only",
                extra={"action": "search.embed_failed", "error": error_text(exc)},
            )
        else:
            return "hybrid", await search_hybrid(conn, query, vector, model=embedder_spec or "", limit=limit)
    return "fulltext", await search_text(conn, query, limit=limit)


async def search_text(conn: AsyncConnection[Any], query: str, *, limit: int) -> list[Passage]:
    return [_passage(r) for r in await _search_text_rows(conn, query, limit=limit)]


async def _search_text_rows(conn: AsyncConnection[Any], query: str, *, limit: int) -> list[dict[str, Any]]:
    params = {"q": query, "limit": limit, "configs": list(TEXT_SEARCH_CONFIGS)}
    rows = await (await conn.execute(Q["search_text"], params)).fetchall()
    return [_text_row(r) for r in rows]


async def search_hybrid(
    conn: AsyncConnection[Any], query: str, embedding: list[float], *, model: str, limit: int
) -> list[Passage]:
    pool = limit * 4
    text_rows = await _search_text_rows(conn, query, limit=pool)
    params = {"embedding": str(embedding), "model": model, "limit": pool}
    vector_rows = await (await conn.execute(vector_query(len(embedding)), params)).fetchall()
    return fuse([text_rows, vector_rows], limit=limit)


def vector_query(dims: int) -> sql.Composed:
    """The nearest-chunks query for embeddings of `dims` dimensions (a literal in the SQL)."""
    return sql.SQL(Q["search_vector"]).format(dims=sql.Literal(int(dims)))


def fuse(rankings: list[list[dict[str, Any]]], *, limit: int) -> list[Passage]:
    """Reciprocal rank fusion of several rankings of chunks (pure)."""
    scores: dict[tuple[UUID, int], float] = {}
    rows: dict[tuple[UUID, int], dict[str, Any]] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            key = (row["document_id"], row["ordinal"])
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
            rows.setdefault(key, row)  # the first ranking's snippet (a headline with highlights) wins
    best = sorted(scores, key=lambda k: (-scores[k], str(k[0]), k[1]))[:limit]
    return [_passage(rows[k], scores[k]) for k in best]
