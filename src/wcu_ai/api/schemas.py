"""Response bodies, split from the storage model so the API contract is explicit."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from wcu_ai.tasks.model import Task, TaskStatus


class TaskPublic(BaseModel):
    id: UUID
    task_type: str
    status: TaskStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    result: Any | None
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, task: Task) -> TaskPublic:
        return cls(**{name: getattr(task, name) for name in cls.model_fields})


class TaskPage(BaseModel):
    items: list[TaskPublic]
    next_cursor: str | None


class UploadAccepted(BaseModel):
    document_id: UUID
    task_id: UUID | None
    status: str
    duplicate: bool


class DocumentPublic(BaseModel):
    id: UUID
    filename: str
    content_type: str
    kind: str
    sha256: str
    size_bytes: int
    status: str
    failure_reason: str | None
    page_count: int | None
    title: str | None
    author: str | None
    producer: str | None
    pdf_bytes: int | None
    text_chars: int | None
    text_search_config: str | None = Field(
        default=None,
        description="the text-search configuration its chunks are indexed with (set when parsed)",
    )
    task_id: UUID | None
    created_at: datetime
    updated_at: datetime
    parsed_at: datetime | None


class DocumentPage(BaseModel):
    items: list[DocumentPublic]
    next_cursor: str | None


class PageText(BaseModel):
    page: int
    text: str
    ocr: bool = Field(default=False, description="the text was read from the page's image by OCR")
    truncated: bool = Field(
        default=False, description="the page alone is longer than a response holds; `text` is its beginning"
    )


class DocumentText(BaseModel):
    """Pages from_page..to_page of the document's text, as many as one response holds.

    When the requested range did not fit, `next_page` is the `from_page` to ask for next; it is
    null once the range is complete. `text` is the returned pages' text joined by blank lines."""

    document_id: UUID
    page_count: int
    text_chars: int | None = Field(default=None, description="characters of text in the whole document")
    from_page: int
    to_page: int = Field(
        description="the last page returned, never before from_page (0 for a document without pages)"
    )
    next_page: int | None = Field(description="where the rest of the requested range starts; null: none left")
    text: str
    pages: list[PageText]


class SearchHit(BaseModel):
    """A ranked passage. `snippet` is plain text, never HTML: escape it like any other text before
    putting it in a page. The words that matched are `highlights`, [start, end) offsets into
    `snippet` counted in Unicode code points (in JavaScript, index `Array.from(snippet)`)."""

    document_id: UUID
    page: int
    score: float
    snippet: str = Field(description="plain text around the matches (never markup)")
    highlights: list[tuple[int, int]] = Field(
        default_factory=list,
        description="[start, end) offsets of the matched words in `snippet`, in Unicode code points; "
        "empty when no word of the query is in the snippet (vector similarity only, exclusions only)",
    )
    text: str = Field(description="the whole passage (chunk) the snippet is cut from")


class SearchResults(BaseModel):
    query: str
    mode: str
    results: list[SearchHit]


class AgentPublic(BaseModel):
    id: str
    name: str
    description: str
    model: str


class AgentList(BaseModel):
    items: list[AgentPublic]


# Session and user ids: ASCII letters, digits and . _ - : @, 1-200 characters, the first a letter
# or digit. Every one of them is a valid URL path segment as it is (no "/", no "." or ".."
# segment a client would resolve away) and a valid PostgreSQL text (no NUL).
_SURROGATE = re.compile("[\ud800-\udfff]")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
ID_DESCRIPTION = "1-200 characters: ASCII letters, digits and . _ - : @, starting with a letter or digit"


class AgentRunRequest(BaseModel):
    message: str = Field(
        min_length=1, max_length=32000, description="no NUL characters, no unpaired surrogates (\\ud800)"
    )
    user_id: str = Field(pattern=ID_PATTERN, description=ID_DESCRIPTION)
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description=f"new when absent; {ID_DESCRIPTION}"
    )
    stream: bool = Field(default=False, description="answer as server-sent events")

    @field_validator("message")
    @classmethod
    def _storable(cls, value: str) -> str:
        # PostgreSQL text cannot hold either: the search would fail and the turn could not be
        # stored. JSON's "\ud800" escape decodes to a lone surrogate, which has no UTF-8 form.
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if _SURROGATE.search(value):
            raise ValueError(
                "must be valid Unicode: an unpaired surrogate (such as \\ud800) cannot be stored"
            )
        return value


class CitationPublic(BaseModel):
    document_id: UUID
    page: int


class AgentRunResult(BaseModel):
    session_id: str
    run_id: str | None
    reply: str
    citations: list[CitationPublic]


class AgentSessionPublic(BaseModel):
    session_id: str
    agent_id: str | None
    user_id: str | None
    title: str
    runs: int
    created_at: datetime | None
    updated_at: datetime | None


class AgentSessionPage(BaseModel):
    items: list[AgentSessionPublic]


class AgentTurn(BaseModel):
    run_id: str | None
    created_at: datetime
    status: Literal["completed", "failed", "cancelled"] = Field(
        description="failed: the model, a tool or the storage failed; cancelled: the client left or the API stopped"
    )
    message: str
    reply: str = Field(description="the answer of a completed turn; empty otherwise")
    citations: list[CitationPublic]


class AgentSessionHistory(AgentSessionPublic):
    turns: list[AgentTurn]


class UserMemoryPublic(BaseModel):
    memory_id: str | None
    memory: str
    topics: list[str]
    agent_id: str | None
    created_at: datetime | None
    updated_at: datetime | None


class UserMemoryPage(BaseModel):
    items: list[UserMemoryPublic]
