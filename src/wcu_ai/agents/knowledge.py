"""The assistant's knowledge: the API's own search over the parsed documents (no second index).

The tool hands the model passages as JSON with their document id and page; the same JSON, kept
in the run by Agno, gives the citations of an answer, also when a session is read back later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from wcu_ai.documents.search import Passage, search

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder


TOOL_NAME = "search_documents"
PASSAGE_CHARS = 2000  # per passage handed to the model: a chunk, not a whole page of tables


@dataclass(frozen=True)
class Citation:
    document_id: UUID
    page: int


class DocumentSearch:
    """Full-text search, fused with vector similarity when an embedder is configured."""

    def __init__(
        self, pool: AsyncConnectionPool, embedder: Embedder | None, embedder_spec: str | None, limit: int
    ) -> None:
        self.pool = pool
        self.embedder = embedder
        self.embedder_spec = embedder_spec or ""
        self.limit = limit

    async def passages(self, query: str) -> list[Passage]:
        async with self.pool.connection() as conn:
            _, found = await search(
                conn, query, embedder=self.embedder, embedder_spec=self.embedder_spec, limit=self.limit
            )
        return found

    def tool(self) -> Any:
        """The Agno tool (an async function; its docstring is what the model reads)."""

        async def search_documents(query: str) -> str:
            """Search the uploaded documents. Use it for every question about their content.

            Args:
                query: keywords or a short question; "quoted phrases" and -excluded words work.

            Returns:
                JSON: passages, each with document_id, page and text. Cite document and page.
            """
            found = await self.passages(query[:1000])
            return json.dumps({"passages": [_passage_json(p) for p in found]})

        return search_documents


def _passage_json(passage: Passage) -> dict[str, Any]:
    return {
        "document_id": str(passage.document_id),
        "page": passage.page,
        "text": passage.text[:PASSAGE_CHARS],
    }


def citations(tool_results: list[tuple[str | None, str | None]]) -> list[Citation]:
    """Document pages the search tool returned in a run, first seen first, each once (pure).

    tool_results: (tool name, result) of each tool call of the run.
    """
    seen: dict[tuple[UUID, int], Citation] = {}
    for name, result in tool_results:
        if name != TOOL_NAME or not result:
            continue
        try:
            passages = json.loads(result).get("passages", [])
        except (ValueError, AttributeError):
            continue  # a failed call's error text, not our JSON
        for p in passages:
            key = (UUID(p["document_id"]), int(p["page"]))
            seen.setdefault(key, Citation(*key))
    return list(seen.values())
