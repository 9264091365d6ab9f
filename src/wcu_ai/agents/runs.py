"""One agent run: its own task, holding its session's lock from start to storage.

The run is not the request's: a client that goes away (or a request cancelled by the server)
does not cancel the Agno run in the middle of a write. A streaming client that leaves asks Agno
to cancel (cancel()): Agno stops at its next step and stores the run as cancelled, then the lock
is released. The events a client reads come through a queue; a reader waiting longer than the
heartbeat interval gets None (the SSE route sends a comment then).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wcu_ai.agents.history import TurnStatus, run_citations, text, turn_status
from wcu_ai.agents.knowledge import Citation, citations
from wcu_ai.agents.outcome import OutcomeObserver, RunOutcome, record_outcome
from wcu_ai.errors import AgentRunError

if TYPE_CHECKING:
    from agno.agent import Agent
    from agno.session import AgentSession

    from wcu_ai.agents.session_lock import SessionLock

logger = logging.getLogger(__name__)

FAILED = AgentRunError().message
NOT_SAVED = "The agent answered but its answer could not be saved; send the message again."
STOPPED = "The API stopped before the agent had answered; send the message again."


@dataclass(frozen=True)
class Reply:
    session_id: str
    run_id: str | None
    reply: str
    citations: list[Citation]


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event: its name and its JSON data."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


def _citation_json(citation: Citation) -> dict[str, Any]:
    return {"document_id": str(citation.document_id), "page": citation.page}


def reply_json(reply: Reply) -> dict[str, Any]:
    return {
        "session_id": reply.session_id,
        "run_id": reply.run_id,
        "reply": reply.reply,
        "citations": [_citation_json(c) for c in reply.citations],
    }


_END = object()


class AgentRun:
    """A run started by AgentCatalog.start_run, with the session's lock already held."""

    def __init__(
        self,
        agent: Agent,
        storage: Any,
        message: str,
        *,
        session: AgentSession,
        user_id: str,
        lock: SessionLock,
        stream: bool,
        started: float,
        after: Callable[[], Awaitable[None]],
        observer: OutcomeObserver | None = None,
    ) -> None:
        self.agent = agent
        self.storage = storage
        self.message = message
        self.session_id = session.session_id
        self.user_id = user_id
        self.lock = lock
        self.stream = stream
        self.started = started
        self.after = after
        self.observer = observer
        self.run_id = str(uuid.uuid4())
        self.outcome: RunOutcome | None = None
        self.result: Reply | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()  # one run's events: bounded by the run
        self._finished = False
        self.task = asyncio.create_task(self._work(), name=f"agents.run.{self.run_id}")

    # -- the reader's side --

    async def events(self, heartbeat_seconds: float | None = None) -> AsyncIterator[StreamEvent | None]:
        """The run's events up to its last (done or error); None after each silent heartbeat interval."""
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), heartbeat_seconds)
            except TimeoutError:
                yield None
                continue
            if item is _END:
                return
            yield item

    async def reply(self) -> Reply:
        """The answer, once stored; AgentRunError when the run did not complete."""
        async for event in self.events():
            if event is not None and event.event == "done" and self.result is not None:
                return self.result
            if event is not None and event.event == "error":
                raise AgentRunError(event.data["detail"])
        raise AgentRunError()

    def cancel(self) -> None:
        """The reader is gone: Agno stops at its next step and stores the run as cancelled."""
        if not self._finished:
            from agno.run.cancel import cancel_run

            cancel_run(self.run_id)  # synchronous: callable from a reader being cancelled itself

    # -- the run --

    def _put(self, event: StreamEvent) -> None:
        self._queue.put_nowait(event)

    async def _work(self) -> None:
        outcome, last = RunOutcome.failed, StreamEvent("error", {"detail": FAILED})
        try:
            outcome, last = await (self._streamed() if self.stream else self._answered())
        except asyncio.CancelledError:
            outcome, last = RunOutcome.cancelled, StreamEvent("error", {"detail": STOPPED})
            raise
        except Exception as exc:
            # Neither the text nor the traceback: Agno's errors quote prompts and provider replies.
            logger.warning(
                "agent run failed",
                extra={"action": "agents.run_failed", "run": self.run_id, "error": type(exc).__name__},
            )
        finally:
            self._finished = True
            await self._finish(outcome, last)

    async def _finish(self, outcome: RunOutcome, last: StreamEvent) -> None:
        """Releases the session, then answers: a client's next message never finds it still locked."""
        from agno.run.cancel import acleanup_run

        self.outcome = outcome
        try:
            await acleanup_run(self.run_id)  # a cancel() that came late leaves no entry behind
            await self.lock.release()
        finally:
            record_outcome(
                outcome,
                agent_id=self.agent.id or "",
                session_id=self.session_id,
                run_id=self.run_id,
                seconds=time.monotonic() - self.started,
                observer=self.observer,
            )
            self._queue.put_nowait(last)
            self._queue.put_nowait(_END)
        if self.storage.saved:
            await self.after()

    def _failed(self, why: str) -> None:
        logger.warning(
            "agent run failed", extra={"action": "agents.run_failed", "run": self.run_id, "why": why}
        )

    async def _answered(self) -> tuple[RunOutcome, StreamEvent]:
        output = await self.agent.arun(
            self.message, user_id=self.user_id, session_id=self.session_id, run_id=self.run_id
        )
        return self._end(turn_status(output), text(output.content), run_citations(output))

    async def _streamed(self) -> tuple[RunOutcome, StreamEvent]:
        from agno.run.agent import RunEvent

        cited: dict[tuple[Any, int], Citation] = {}
        parts: list[str] = []
        status: TurnStatus | None = None
        # Read to the end, whatever happens: closing Agno's stream early makes it store the run on
        # a detached task, which could write after this run's lock is released.
        async for event in self.agent.arun(
            self.message,
            user_id=self.user_id,
            session_id=self.session_id,
            run_id=self.run_id,
            stream=True,
            stream_events=True,
        ):
            kind = getattr(event, "event", "")
            if kind == RunEvent.run_started.value:
                self._put(StreamEvent("run_started", {"session_id": self.session_id, "run_id": self.run_id}))
            elif kind == RunEvent.run_content.value and isinstance(event.content, str) and event.content:
                parts.append(event.content)
                self._put(StreamEvent("content", {"delta": event.content}))
            elif kind == RunEvent.tool_call_completed.value and event.tool is not None:
                new = [
                    c
                    for c in citations([(event.tool.tool_name, event.tool.result)])
                    if cited.setdefault((c.document_id, c.page), c) is c
                ]
                if new:
                    self._put(StreamEvent("citations", {"citations": [_citation_json(c) for c in new]}))
            elif kind == RunEvent.run_error.value:
                status = TurnStatus.failed
            elif kind == RunEvent.run_cancelled.value:
                status = TurnStatus.cancelled
            elif kind == RunEvent.run_completed.value and status is None:
                status = TurnStatus.completed
        return self._end(status or TurnStatus.failed, "".join(parts), list(cited.values()))

    def _end(self, status: TurnStatus, reply: str, cited: list[Citation]) -> tuple[RunOutcome, StreamEvent]:
        if status is TurnStatus.cancelled:
            return RunOutcome.cancelled, StreamEvent("error", {"detail": STOPPED})
        if status is TurnStatus.failed:
            self._failed("model or tool")  # the error's text stays out of logs and answers
            return RunOutcome.failed, StreamEvent("error", {"detail": FAILED})
        if not self.storage.saved:
            self._failed("storage")
            return RunOutcome.failed, StreamEvent("error", {"detail": NOT_SAVED})
        self.result = Reply(self.session_id, self.run_id, reply, cited)
        return RunOutcome.completed, StreamEvent("done", reply_json(self.result))
