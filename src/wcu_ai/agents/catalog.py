"""The agents the API offers, built with Agno on the service's storage.

Storage is Agno's PostgresDb on the runner's tables (ai_sessions for sessions and their runs,
ai_memories for user memories; ai_metrics is filled by the runner's calculate_agent_metrics
task). The API never creates a table: build_agno_postgres_db creates nothing, and everything an
agent configured here touches is one of those tables (tests/api/test_agents.py checks the set
of tables is unchanged by runs).

A fresh Agent is built for every run: Agno keeps per-run state on the Agent object, and the
model, storage and search it is built from are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from wcu_ai.agents.knowledge import Citation, DocumentSearch, citations
from wcu_ai.agno_storage import build_agno_postgres_db
from wcu_ai.errors import DatabaseUnavailableError, WcuError
from wcu_ai.settings import Settings

if TYPE_CHECKING:
    from agno.agent import Agent
    from agno.db.postgres import PostgresDb
    from agno.knowledge.embedder.base import Embedder
    from agno.models.base import Model
    from agno.run.agent import RunOutput
    from agno.session import AgentSession

logger = logging.getLogger(__name__)


class AgentRunError(WcuError):
    """The agent could not answer (its model or its storage failed); retry later."""


@dataclass(frozen=True)
class AgentInfo:
    id: str
    name: str
    description: str


ASSISTANT = AgentInfo(
    id="assistant",
    name="Document assistant",
    description=(
        "Answers questions from the uploaded documents, citing document and page; keeps the "
        "conversation of a session and remembers what a user asks it to."
    ),
)

ASSISTANT_INSTRUCTIONS = [
    "Answer questions about the uploaded documents only from passages that search_documents returned.",
    "Search before answering any question about the documents; search again with other words if "
    "nothing relevant came back.",
    "Cite every statement taken from a passage as (document <document_id>, page <page>).",
    "If the passages do not answer the question, say so; never invent content.",
    "When the user tells you something to remember about them, save it with update_user_memory.",
]


@dataclass(frozen=True)
class Reply:
    session_id: str
    run_id: str | None
    reply: str
    citations: list[Citation]


@dataclass(frozen=True)
class Turn:
    """One run of a session: what the user said and what the agent answered."""

    run_id: str | None
    created_at: int
    message: str
    reply: str
    citations: list[Citation]


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event: its name and its JSON data."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


def run_citations(run: RunOutput) -> list[Citation]:
    return citations([(t.tool_name, t.result) for t in run.tools or []])


def _text(content: Any) -> str:
    return content if isinstance(content, str) else ("" if content is None else str(content))


def turns(session: AgentSession) -> list[Turn]:
    out = []
    for run in session.runs or []:
        message = run.input.input_content_string() if run.input is not None else ""
        out.append(Turn(run.run_id, run.created_at, message, _text(run.content), run_citations(run)))
    return out


class AgentCatalog:
    """Builds the agents on one model, one Agno storage and the document search."""

    def __init__(self, settings: Settings, model: Model, db: PostgresDb, search: DocumentSearch) -> None:
        self.settings = settings
        self.model = model
        self.db = db
        self.search = search
        self.agents = {ASSISTANT.id: ASSISTANT}

    def info(self, agent_id: str) -> AgentInfo | None:
        return self.agents.get(agent_id)

    def build(self, agent_id: str) -> Agent:
        from agno.agent import Agent

        if agent_id != ASSISTANT.id:
            raise KeyError(agent_id)
        return Agent(
            id=ASSISTANT.id,
            name=ASSISTANT.name,
            model=self.model,
            db=self.db,
            tools=[self.search.tool()],
            instructions=ASSISTANT_INSTRUCTIONS,
            add_history_to_context=self.settings.agent_history_runs > 0,
            num_history_runs=self.settings.agent_history_runs,
            # The model decides when to store a memory (a tool), instead of a second model call
            # after every run; stored memories are added to the system message.
            enable_agentic_memory=True,
            add_memories_to_context=True,
            # Off unless the operator sets AGNO_TELEMETRY=true (Agno reads it when the run starts).
            telemetry=False,
        )

    # -- storage reads: Agno's PostgresDb is synchronous, so they run in a worker thread --

    async def _storage(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except OperationalError:
            raise DatabaseUnavailableError() from None

    async def session(self, session_id: str) -> AgentSession | None:
        from agno.db.base import SessionType

        return await self._storage(self.db.get_session, session_id, session_type=SessionType.AGENT)

    async def sessions(self, agent_id: str, user_id: str, *, limit: int, page: int) -> list[AgentSession]:
        from agno.db.base import SessionType

        return await self._storage(
            self.db.get_sessions,
            session_type=SessionType.AGENT,
            user_id=user_id,
            component_id=agent_id,
            limit=limit,
            page=page,
            sort_by="updated_at",
            sort_order="desc",
        )

    async def delete_session(self, session_id: str) -> bool:
        return await self._storage(self.db.delete_session, session_id)

    async def memories(self, user_id: str, *, limit: int, page: int) -> list[Any]:
        return await self._storage(
            self.db.get_user_memories,
            user_id=user_id,
            limit=limit,
            page=page,
            sort_by="updated_at",
            sort_order="desc",
        )

    # -- runs --

    async def run(self, agent_id: str, message: str, *, user_id: str, session_id: str) -> Reply:
        from agno.run import RunStatus

        agent = self.build(agent_id)
        output = await agent.arun(message, user_id=user_id, session_id=session_id)
        if output.status == RunStatus.error:
            # output.content is the provider's error text: neither logged nor answered (it may quote the request).
            logger.warning(
                "agent run failed",
                extra={"action": "agents.run_failed", "agent": agent_id, "run": output.run_id},
            )
            raise AgentRunError()
        return Reply(session_id, output.run_id, _text(output.content), run_citations(output))

    async def stream(
        self, agent_id: str, message: str, *, user_id: str, session_id: str
    ) -> AsyncIterator[StreamEvent]:
        """Events: run_started, content (deltas), citations (after each search), done or error."""
        from agno.run.agent import RunEvent

        agent = self.build(agent_id)
        cited: dict[tuple[Any, int], Citation] = {}
        parts: list[str] = []
        run_id = None
        async for event in agent.arun(
            message, user_id=user_id, session_id=session_id, stream=True, stream_events=True
        ):
            kind = getattr(event, "event", "")
            run_id = getattr(event, "run_id", None) or run_id
            if kind == RunEvent.run_started.value:
                yield StreamEvent("run_started", {"session_id": session_id, "run_id": run_id})
            elif kind == RunEvent.run_content.value and isinstance(event.content, str) and event.content:
                parts.append(event.content)
                yield StreamEvent("content", {"delta": event.content})
            elif kind == RunEvent.tool_call_completed.value and event.tool is not None:
                new = [
                    c
                    for c in citations([(event.tool.tool_name, event.tool.result)])
                    if cited.setdefault((c.document_id, c.page), c) is c
                ]
                if new:
                    yield StreamEvent("citations", {"citations": [_citation_json(c) for c in new]})
            elif kind == RunEvent.run_error.value:
                logger.warning(
                    "agent run failed",
                    extra={"action": "agents.run_failed", "agent": agent_id, "run": run_id},
                )
                yield StreamEvent("error", {"detail": AgentRunError().message})
                return
        reply = Reply(session_id, run_id, "".join(parts), list(cited.values()))
        yield StreamEvent("done", reply_json(reply))


def _citation_json(citation: Citation) -> dict[str, Any]:
    return {"document_id": str(citation.document_id), "page": citation.page}


def reply_json(reply: Reply) -> dict[str, Any]:
    return {
        "session_id": reply.session_id,
        "run_id": reply.run_id,
        "reply": reply.reply,
        "citations": [_citation_json(c) for c in reply.citations],
    }


class AgentsLoading:
    """The agents while Agno's agent and storage modules load, off the API's start path."""

    def __init__(self, loading: asyncio.Task[AgentCatalog]) -> None:
        self._loading = loading

    async def catalog(self) -> AgentCatalog:
        """The catalog, once loaded (at once after the first ~1.5 s of the process)."""
        return await asyncio.shield(self._loading)


@contextlib.asynccontextmanager
async def open_agents(
    settings: Settings, model: Model | None, pool: AsyncConnectionPool, embedder: Embedder | None
) -> AsyncIterator[AgentsLoading | None]:
    """The API's agents for its lifetime, or None without a model; creates no table.

    Agno's agent modules and its storage (SQLAlchemy) take ~1.4 s to import: they load in a
    thread while the API already serves (/health answers; the first agent request waits for
    them). The model was built before serving, so a bad WCU_AGENT_MODEL still stops the start.
    """
    if model is None:
        yield None
        return
    search = DocumentSearch(pool, embedder, settings.embedder, limit=settings.agent_search_limit)

    def load() -> AgentCatalog:
        importlib.import_module("agno.agent")  # at start-up, not in the first run
        return AgentCatalog(settings, model, build_agno_postgres_db(settings), search)

    loading = asyncio.create_task(asyncio.to_thread(load), name="agents.load")
    try:
        yield AgentsLoading(loading)
    finally:
        await asyncio.wait([loading])  # a thread cannot be cancelled: let it finish
        if not loading.cancelled() and loading.exception() is None:
            await asyncio.to_thread(loading.result().db.close)
