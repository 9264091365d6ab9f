"""Citations come from what the search tool returned in a run (pure)."""

from __future__ import annotations

import json
import uuid

from wcu_ai.agents.knowledge import TOOL_NAME, Citation, citations


def _result(*pages: tuple[uuid.UUID, int]) -> str:
    return json.dumps({"passages": [{"document_id": str(d), "page": p, "text": "…"} for d, p in pages]})


def test_citations_are_the_searched_pages_in_order_each_once() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    results = [
        (TOOL_NAME, _result((a, 2), (b, 1))),
        ("update_user_memory", "Memory stored."),
        (TOOL_NAME, _result((b, 1), (a, 3))),
        (TOOL_NAME, "Error: the database is unavailable"),
        (TOOL_NAME, None),
    ]
    assert citations(results) == [Citation(a, 2), Citation(b, 1), Citation(a, 3)]


def test_no_search_no_citations() -> None:
    assert citations([]) == []
    assert citations([(TOOL_NAME, _result())]) == []
