"""The agents the API offers, built with Agno on the service's storage.

Storage is Agno's async PostgreSQL storage on the runner's tables (ai_sessions for sessions and
their runs, ai_memories for user memories; ai_metrics is filled by the runner's
calculate_agent_metrics task), and named SQL of our own for what the API reads and claims
(sessions.py). The API never creates a table (tests/api/test_agents.py checks the set of tables
is unchanged by runs).

A run of a session holds that session's lock (session_lock.py) from before its session is read
until its result is stored, so two runs of one session never interleave; a new session is
claimed for its user by its first request. A fresh Agent is built for every run: Agno keeps
per-run state on the Agent object, and the model, engine and search it is built from are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from wcu_ai.agents import sessions as session_store
from wcu_ai.agents.knowledge import DocumentSearch
from wcu_ai.agents.metrics import request_metrics
from wcu_ai.agents.model import ModelCheck
from wcu_ai.agents.outcome import OutcomeObserver, RunOutcome, record_outcome
from wcu_ai.agents.runs import AgentRun
from wcu_ai.agents.session_lock import lock_session
from wcu_ai.agno_storage import AgnoStorage
from wcu_ai.errors import SessionBusyError, SessionNotFoundError
from wcu_ai.settings import Settings

if TYPE_CHECKING:
    from agno.agent import Agent
    from agno.knowledge.embedder.base import Embedder
    from agno.models.base import Model
    from agno.session import AgentSession

logger = logging.getLogger(__name__)

# At shutdown, runs still going are asked to stop, then given this long to store what they have.
STOP_GRACE_SECONDS = 10.0


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


class AgentCatalog:
    """Builds the agents on one model, one Agno storage and the document search; starts their runs."""

    def __init__(
        self,
        settings: Settings,
        model: Model,
        storage: AgnoStorage,
        search: DocumentSearch,
        pool: AsyncConnectionPool,
        observer: OutcomeObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.model = model
        self.storage = storage
        self.search = search
        self.pool = pool
        self.agents = {ASSISTANT.id: ASSISTANT}
        self.runs: set[AgentRun] = set()

    def info(self, agent_id: str) -> AgentInfo | None:
        return self.agents.get(agent_id)

    def build(self, agent_id: str, db: Any) -> Agent:
        """The agent on `db`, the storage of one run (AgnoStorage.run_storage)."""
        from agno.agent import Agent

        if agent_id != ASSISTANT.id:
            raise KeyError(agent_id)
        return Agent(
            id=ASSISTANT.id,
            name=ASSISTANT.name,
            model=self.model,
            db=db,
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

    # -- reads and deletes: our SQL, which fails loudly where Agno's storage answers "nothing" --

    async def session(self, agent_id: str, session_id: str, user_id: str | None) -> AgentSession | None:
        """The session when it is this agent's (and this user's, when one is named); else None."""
        async with session_store.session_transaction(self.pool) as conn:
            row = await session_store.session_row(conn, session_id)
        if row is None or not session_store.owned(row, agent_id=agent_id, user_id=user_id):
            return None
        return session_store.session_of_row(row)

    async def sessions(self, agent_id: str, user_id: str, *, limit: int, page: int) -> list[AgentSession]:
        async with session_store.session_transaction(self.pool) as conn:
            return await session_store.user_sessions(
                conn, agent_id=agent_id, user_id=user_id, limit=limit, page=page
            )

    async def delete_session(self, agent_id: str, session_id: str, user_id: str) -> bool:
        """Deletes the user's session; waits for a run of it like another run would (SessionBusyError)."""
        lock = await self._lock(session_id)
        try:
            async with session_store.session_transaction(self.pool) as conn:
                return await session_store.delete_session(
                    conn, session_id, agent_id=agent_id, user_id=user_id
                )
        finally:
            await lock.release()

    async def memories(self, user_id: str, *, limit: int, page: int) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            return await session_store.user_memories(conn, user_id, limit=limit, page=page)

    # -- runs --

    async def _lock(self, session_id: str) -> Any:
        return await lock_session(
            self.pool,
            session_id,
            wait_seconds=self.settings.agent_session_wait_seconds,
            lease_seconds=self.settings.agent_session_lease_seconds,
        )

    async def start_run(
        self, agent_id: str, message: str, *, user_id: str, session_id: str, stream: bool
    ) -> AgentRun:
        """The run, started, once its session is locked and claimed for this user.

        SessionBusyError: another run of the session outlasted the wait. SessionNotFoundError: the
        session is another agent's or user's.
        """
        started = time.monotonic()
        try:
            lock = await self._lock(session_id)
        except SessionBusyError:
            record_outcome(
                RunOutcome.conflict,
                agent_id=agent_id,
                session_id=session_id,
                run_id=None,
                seconds=time.monotonic() - started,
                observer=self.observer,
            )
            raise
        try:
            async with session_store.session_transaction(self.pool) as conn:
                row = await session_store.claim_session(conn, session_id, agent_id=agent_id, user_id=user_id)
            if not session_store.owned(row, agent_id=agent_id, user_id=user_id):
                raise SessionNotFoundError()
            session = session_store.session_of_row(row)
            storage = self.storage.run_storage(session, lock.holder)
            agent = self.build(agent_id, storage)
            _as_agno_creates(session, agent)
            run = AgentRun(
                agent,
                storage,
                message,
                session=storage.session,
                user_id=user_id,
                lock=lock,
                stream=stream,
                started=started,
                after=self._queue_metrics,
                observer=self.observer,
            )
        except BaseException:
            await lock.release()
            raise
        self.runs.add(run)
        run.task.add_done_callback(lambda _: self.runs.discard(run))
        return run

    async def _queue_metrics(self) -> None:
        # A stored run is answered either way: metrics lag, they never fail a run.
        try:
            async with self.pool.connection() as conn:
                await request_metrics(conn, self.settings)
        except Exception as exc:
            logger.warning(
                "could not queue the agent metrics calculation",
                extra={"action": "agents.metrics_not_queued", "error": type(exc).__name__},
            )

    async def close(self) -> None:
        """Stops the runs still going (each stores itself as cancelled), then the storage."""
        running = [run.task for run in self.runs]
        for run in list(self.runs):
            run.cancel()
        if running:
            _, pending = await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
        await self.storage.close()


def _as_agno_creates(session: AgentSession, agent: Agent) -> None:
    """What Agno puts in a session it creates, for one our SQL claimed (session_store.claim_session).

    Without session_data Agno keeps no session metrics, so ai_metrics would count the runs of a
    new session but none of their tokens.
    """
    from agno.agent._storage import get_agent_data  # Agno 2.9's own (pinned in pyproject.toml)

    if session.session_data is None:
        session.session_data = {}
    if session.agent_data is None:
        session.agent_data = get_agent_data(agent)


class AgentsLoading:
    """The agents while Agno's agent and storage modules load, off the API's start path."""

    def __init__(self, loading: asyncio.Task[AgentCatalog]) -> None:
        self._loading = loading

    async def catalog(self) -> AgentCatalog:
        """The catalog, once loaded (at once after the first ~1.5 s of the process)."""
        return await asyncio.shield(self._loading)


@contextlib.asynccontextmanager
async def open_agents(
    settings: Settings,
    model: Model | ModelCheck | None,
    pool: AsyncConnectionPool,
    embedder: Embedder | None,
    observer: OutcomeObserver | None = None,
) -> AsyncIterator[AgentsLoading | None]:
    """The API's agents for its lifetime, or None without a model; creates no table.

    Agno's agent modules and its storage (SQLAlchemy) take ~1.4 s to import: they load in a
    thread while the API already serves (/health answers; the first agent request waits for
    them). The model was built, or checked (a ModelCheck, built here), before serving, so a bad
    WCU_AGENT_MODEL still stops the start.
    """
    if model is None:
        yield None
        return
    search = DocumentSearch(pool, embedder, settings.embedder, limit=settings.agent_search_limit)

    def load() -> AgentCatalog:
        built = model.build() if isinstance(model, ModelCheck) else model
        importlib.import_module("agno.agent")  # at start-up, not in the first run
        return AgentCatalog(settings, built, AgnoStorage(settings), search, pool, observer)

    loading = asyncio.create_task(asyncio.to_thread(load), name="agents.load")
    try:
        yield AgentsLoading(loading)
    finally:
        await asyncio.wait([loading])  # a thread cannot be cancelled: let it finish
        if not loading.cancelled() and loading.exception() is None:
            await loading.result().close()
