"""Agents: runs (JSON or server-sent events), their sessions and the users' memories.

Without WCU_AGENT_MODEL every route here answers 503 naming the variable; the rest of the API
does not depend on it. Prompts and replies are never logged.

One run at a time per session: a run (or a delete) of a session whose run is still going waits
up to WCU_AGENT_SESSION_WAIT_SECONDS, then is answered 409 with Retry-After.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from wcu_ai.agents.catalog import AgentCatalog, AgentInfo, AgentsLoading
from wcu_ai.agents.history import turns
from wcu_ai.agents.knowledge import Citation
from wcu_ai.agents.model import VARIABLE
from wcu_ai.agents.runs import AgentRun, Reply, StreamEvent, reply_json
from wcu_ai.api.deps import SettingsDep
from wcu_ai.api.schemas import (
    ID_DESCRIPTION,
    ID_PATTERN,
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
from wcu_ai.errors import AgentRunError, SessionBusyError, SessionNotFoundError

if TYPE_CHECKING:
    from agno.session import AgentSession

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

router = APIRouter(tags=["agents"])


async def get_agent(agent_id: str, catalog: CatalogDep) -> AgentInfo:
    info = catalog.info(agent_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id!r}; GET /v1/agents lists them")
    return info


AgentDep = Annotated[AgentInfo, Depends(get_agent)]
Limit = Annotated[int, Query(ge=1, le=100)]
Page = Annotated[int, Query(ge=1)]
# The same alphabet and bounds as AgentRunRequest's ids.
UserId = Annotated[str, Query(pattern=ID_PATTERN, description=ID_DESCRIPTION)]
SessionId = Annotated[str, Path(pattern=ID_PATTERN, description=ID_DESCRIPTION)]
UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description=ID_DESCRIPTION)]

BUSY = {409: {"description": "another run of the session is still going; Retry-After says when to retry"}}


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


def _no_session(session_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id!r} of this agent and user")


def _busy(exc: SessionBusyError) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT, exc.message, headers={"Retry-After": str(exc.retry_after_seconds)}
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


# An SSE comment: clients ignore it, proxies and load balancers see bytes on an idle stream.
HEARTBEAT = ": keep-alive\n\n"


@router.post(
    "/v1/agents/{agent_id}/runs",
    response_model=AgentRunResult,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or events with stream=true"},
        **BUSY,
    },
)
async def run_agent(
    body: AgentRunRequest, agent: AgentDep, catalog: CatalogDep, settings: SettingsDep
) -> Any:
    """Runs the agent on a message in a session (a new one when session_id is absent).

    With stream=true the answer is server-sent events: run_started, content (text deltas),
    citations (after each document search), then done (the same body as without streaming) or
    error; a `: keep-alive` comment every WCU_AGENT_STREAM_HEARTBEAT_SECONDS while the model is
    silent."""
    session_id = body.session_id or str(uuid.uuid4())
    logger.info(
        "agent run",
        extra={"action": "agents.run", "agent": agent.id, "session_id": session_id, "stream": body.stream},
    )
    try:
        run = await catalog.start_run(
            agent.id, body.message, user_id=body.user_id, session_id=session_id, stream=body.stream
        )
    except SessionBusyError as exc:
        raise _busy(exc) from None
    except SessionNotFoundError:
        raise _no_session(session_id) from None
    if body.stream:
        return StreamingResponse(
            _stream(run, settings.agent_stream_heartbeat_seconds),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        reply = await run.reply()
    except AgentRunError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, exc.message) from None
    return _result(reply)


def _result(reply: Reply) -> AgentRunResult:
    return AgentRunResult(**{**reply_json(reply), "citations": _citations(reply.citations)})


async def _stream(run: AgentRun, heartbeat_seconds: float) -> AsyncIterator[str]:
    try:
        async for event in run.events(heartbeat_seconds):
            yield HEARTBEAT if event is None else _sse(event)
    finally:
        run.cancel()  # the client left before the end: the run stops and is stored as cancelled


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
    session_id: SessionId,
    agent: AgentDep,
    catalog: CatalogDep,
    user_id: UserId | None = None,
) -> AgentSessionHistory:
    """A session's history, oldest first: each turn's message and status, and for a completed turn
    its reply and citations."""
    session = await catalog.session(agent.id, session_id, user_id)
    if session is None:
        raise _no_session(session_id)
    history = [
        AgentTurn(
            run_id=t.run_id,
            created_at=datetime.fromtimestamp(t.created_at, UTC),
            status=t.status.value,
            message=t.message,
            reply=t.reply,
            citations=_citations(t.citations),
        )
        for t in turns(session)
    ]
    return AgentSessionHistory(**_session_public(session), turns=history)


@router.delete(
    "/v1/agents/{agent_id}/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=BUSY
)
async def delete_session(
    session_id: SessionId,
    agent: AgentDep,
    catalog: CatalogDep,
    user_id: UserId,
) -> Response:
    """Forgets the user's session (user_id is required: only its owner deletes a session)."""
    try:
        deleted = await catalog.delete_session(agent.id, session_id, user_id)
    except SessionBusyError as exc:
        raise _busy(exc) from None
    if not deleted:
        raise _no_session(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/users/{user_id}/memories")
async def list_memories(
    user_id: UserIdPath, catalog: CatalogDep, limit: Limit = 50, page: Page = 1
) -> UserMemoryPage:
    """What the agents remember about a user, most recently updated first."""
    memories = await catalog.memories(user_id, limit=limit, page=page)
    return UserMemoryPage(
        items=[
            UserMemoryPublic(
                memory_id=m["memory_id"],
                memory=m["memory"] if isinstance(m["memory"], str) else json.dumps(m["memory"]),
                topics=m["topics"] or [],
                agent_id=m["agent_id"],
                created_at=_time(m["created_at"]),
                updated_at=_time(m["updated_at"]),
            )
            for m in memories
        ]
    )
