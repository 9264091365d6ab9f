"""Agents: runs (JSON or server-sent events), their sessions and the users' memories.

Without WCU_AGENT_MODEL every route here answers 503 naming the variable; the rest of the API
does not depend on it. Prompts and replies are never logged.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from wcu_ai.agents.catalog import (
    AgentCatalog,
    AgentInfo,
    AgentRunError,
    AgentsLoading,
    Reply,
    StreamEvent,
    reply_json,
    turns,
)
from wcu_ai.agents.knowledge import Citation
from wcu_ai.agents.metrics import request_metrics
from wcu_ai.agents.model import VARIABLE
from wcu_ai.api.deps import PoolDep, SettingsDep
from wcu_ai.api.schemas import (
    AgentList,
    AgentPublic,
    AgentRunRequest,
    AgentRunResult,
    AgentSessionHistory,
    AgentSessionPage,
    AgentSessionPublic,
    AgentTurn,
    CitationPublic,
    UserMemoryPage,
    UserMemoryPublic,
)
from wcu_ai.settings import Settings
from wcu_ai.tasks.model import error_text

if TYPE_CHECKING:
    from agno.session import AgentSession
    from psycopg_pool import AsyncConnectionPool

logger = logging.getLogger(__name__)


async def get_catalog(request: Request) -> AgentCatalog:
    agents: AgentsLoading | None = request.state.agents
    if agents is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"no agent model is configured: set {VARIABLE} (e.g. openai:gpt-4o-mini) and restart the API",
        )
    return await agents.catalog()


CatalogDep = Annotated[AgentCatalog, Depends(get_catalog)]


async def require_database(pool: PoolDep, catalog: CatalogDep) -> None:
    """Agno's storage reads a database it cannot reach as tables that do not exist: reads would
    answer empty and a run would not be saved. The pool checks a connection before lending it.
    (After the catalog: without a model the answer is the 503 naming WCU_AGENT_MODEL.) A connection
    that cannot be had raises psycopg's OperationalError, which api/app.py answers with 503."""
    async with pool.connection():
        pass


router = APIRouter(tags=["agents"], dependencies=[Depends(require_database)])


def get_agent(agent_id: str, catalog: CatalogDep) -> AgentInfo:
    info = catalog.info(agent_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r}; GET /v1/agents lists them")
    return info


AgentDep = Annotated[AgentInfo, Depends(get_agent)]
Limit = Annotated[int, Query(ge=1, le=100)]
Page = Annotated[int, Query(ge=1)]
# The same bounds as AgentRunCreate.user_id.
UserId = Annotated[str, Query(min_length=1, max_length=200)]


def _time(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _citations(citations: list[Citation]) -> list[CitationPublic]:
    return [CitationPublic(document_id=c.document_id, page=c.page) for c in citations]


def _session_public(session: AgentSession) -> dict[str, Any]:
    history = turns(session)
    return {
        "session_id": session.session_id,
        "agent_id": session.agent_id,
        "user_id": session.user_id,
        "title": history[0].message[:100] if history else "",
        "runs": len(history),
        "created_at": _time(session.created_at),
        "updated_at": _time(session.updated_at),
    }


async def _owned_session(
    catalog: AgentCatalog, agent: AgentInfo, session_id: str, user_id: str | None
) -> AgentSession | None:
    """The session when it is this agent's (and this user's, when one is named); else None."""
    session = await catalog.session(session_id)
    if session is None or session.agent_id != agent.id:
        return None
    if user_id is not None and session.user_id != user_id:
        return None
    return session


def _no_session(session_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id!r} of this agent and user")


async def _queue_metrics(pool: AsyncConnectionPool, settings: Settings) -> None:
    # The run is answered either way: metrics lag, they never fail a run.
    try:
        async with pool.connection() as conn:
            await request_metrics(conn, settings)
    except Exception as exc:
        logger.warning(
            "could not queue the agent metrics calculation",
            extra={"action": "agents.metrics_not_queued", "error": error_text(exc)},
        )


@router.get("/v1/agents")
async def list_agents(catalog: CatalogDep, settings: SettingsDep) -> AgentList:
    return AgentList(
        items=[
            AgentPublic(id=a.id, name=a.name, description=a.description, model=settings.agent_model or "")
            for a in catalog.agents.values()
        ]
    )


def _sse(event: StreamEvent) -> str:
    return f"event: {event.event}\ndata: {json.dumps(event.data)}\n\n"


@router.post(
    "/v1/agents/{agent_id}/runs",
    response_model=AgentRunResult,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or events with stream=true"}
    },
)
async def run_agent(
    body: AgentRunRequest, agent: AgentDep, catalog: CatalogDep, pool: PoolDep, settings: SettingsDep
) -> Any:
    """Runs the agent on a message in a session (a new one when session_id is absent).

    With stream=true the answer is server-sent events: run_started, content (text deltas),
    citations (after each document search), then done (the same body as without streaming) or
    error."""
    session_id = body.session_id or str(uuid.uuid4())
    if body.session_id is not None:
        existing = await catalog.session(session_id)
        if existing is not None and (existing.agent_id != agent.id or existing.user_id != body.user_id):
            raise _no_session(session_id)
    logger.info(
        "agent run",
        extra={"action": "agents.run", "agent": agent.id, "session_id": session_id, "stream": body.stream},
    )
    if body.stream:
        return StreamingResponse(
            _stream(catalog, agent, body, session_id, pool, settings),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        reply = await catalog.run(agent.id, body.message, user_id=body.user_id, session_id=session_id)
    except AgentRunError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, exc.message) from None
    await _queue_metrics(pool, settings)
    return _result(reply)


def _result(reply: Reply) -> AgentRunResult:
    return AgentRunResult(**{**reply_json(reply), "citations": _citations(reply.citations)})


async def _stream(
    catalog: AgentCatalog,
    agent: AgentInfo,
    body: AgentRunRequest,
    session_id: str,
    pool: AsyncConnectionPool,
    settings: Settings,
) -> AsyncIterator[str]:
    try:
        async for event in catalog.stream(
            agent.id, body.message, user_id=body.user_id, session_id=session_id
        ):
            yield _sse(event)
            if event.event == "done":
                await _queue_metrics(pool, settings)
    except Exception as exc:
        # Headers are sent: the failure can only be told as an event.
        logger.warning(
            "agent stream failed", extra={"action": "agents.stream_failed", "error": type(exc).__name__}
        )
        yield _sse(StreamEvent("error", {"detail": AgentRunError().message}))


@router.get("/v1/agents/{agent_id}/sessions")
async def list_sessions(
    agent: AgentDep,
    catalog: CatalogDep,
    user_id: UserId,
    limit: Limit = 20,
    page: Page = 1,
) -> AgentSessionPage:
    """The user's sessions with this agent, most recently updated first."""
    sessions = await catalog.sessions(agent.id, user_id, limit=limit, page=page)
    return AgentSessionPage(items=[AgentSessionPublic(**_session_public(s)) for s in sessions])


@router.get("/v1/agents/{agent_id}/sessions/{session_id}")
async def get_session(
    session_id: str,
    agent: AgentDep,
    catalog: CatalogDep,
    user_id: UserId | None = None,
) -> AgentSessionHistory:
    """A session's history: each run's message, reply and citations, oldest first."""
    session = await _owned_session(catalog, agent, session_id, user_id)
    if session is None:
        raise _no_session(session_id)
    history = [
        AgentTurn(
            run_id=t.run_id,
            created_at=datetime.fromtimestamp(t.created_at, UTC),
            message=t.message,
            reply=t.reply,
            citations=_citations(t.citations),
        )
        for t in turns(session)
    ]
    return AgentSessionHistory(**_session_public(session), turns=history)


@router.delete("/v1/agents/{agent_id}/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(
    session_id: str,
    agent: AgentDep,
    catalog: CatalogDep,
    user_id: UserId | None = None,
) -> Response:
    session = await _owned_session(catalog, agent, session_id, user_id)
    if session is None or not await catalog.delete_session(session_id):
        raise _no_session(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/users/{user_id}/memories")
async def list_memories(
    user_id: str, catalog: CatalogDep, limit: Limit = 50, page: Page = 1
) -> UserMemoryPage:
    """What the agents remember about a user, most recently updated first."""
    memories = await catalog.memories(user_id, limit=limit, page=page)
    return UserMemoryPage(
        items=[
            UserMemoryPublic(
                memory_id=m.memory_id,
                memory=m.memory,
                topics=m.topics or [],
                agent_id=m.agent_id,
                created_at=_time(m.created_at),
                updated_at=_time(m.updated_at),
            )
            for m in memories
        ]
    )
