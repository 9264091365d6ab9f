"""A session's history as the API tells it: each run a turn with its status (pure functions).

Agno keeps failed and cancelled runs in the session like the others: a failed run's content is
the provider's error text (which can quote a key), a stream that failed half-way keeps the part
it sent, a client that went away leaves "Operation cancelled by user". The API answers only what
happened: a turn is completed, failed or cancelled, and only a completed one has a reply and
citations. Agno itself leaves failed and cancelled runs out of the history it gives the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from wcu_ai.agents.knowledge import Citation, citations

if TYPE_CHECKING:
    from agno.run.agent import RunOutput
    from agno.session import AgentSession


class TurnStatus(StrEnum):
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


# Agno's RunStatus values (agno.run.base.RunStatus, a str Enum; runs read back hold either).
_AGNO_COMPLETED = "COMPLETED"
_AGNO_CANCELLED = "CANCELLED"
_AGNO_ERROR = "ERROR"


def _agno_status(run: RunOutput) -> str:
    return str(getattr(run.status, "value", run.status))


def turn_status(run: RunOutput) -> TurnStatus:
    """Completed and cancelled as Agno says; anything else (error, or a run that never finished) failed."""
    status = _agno_status(run)
    if status == _AGNO_COMPLETED:
        return TurnStatus.completed
    if status == _AGNO_CANCELLED:
        return TurnStatus.cancelled
    return TurnStatus.failed


@dataclass(frozen=True)
class Turn:
    """One run of a session: what the user said and, when the run completed, what the agent answered."""

    run_id: str | None
    created_at: int
    status: TurnStatus
    message: str
    reply: str
    citations: list[Citation]


def run_citations(run: RunOutput) -> list[Citation]:
    return citations([(t.tool_name, t.result) for t in run.tools or []])


def text(content: Any) -> str:
    return content if isinstance(content, str) else ("" if content is None else str(content))


def turns(session: AgentSession) -> list[Turn]:
    out = []
    for run in session.runs or []:
        message = run.input.input_content_string() if run.input is not None else ""
        status = turn_status(run)
        done = status is TurnStatus.completed
        out.append(
            Turn(
                run.run_id,
                run.created_at,
                status,
                message,
                text(run.content) if done else "",
                run_citations(run) if done else [],
            )
        )
    return out


def redact_failed_runs(session: AgentSession) -> None:
    """Drops what Agno wrote into failed runs from the error (content, error events) before storage.

    Agno sets a failed run's content to str(exception) and adds an error event carrying it; a
    provider's error text can quote the request or a key. The run's messages stay (what was
    asked, which tools ran).
    """
    for run in session.runs or []:
        if _agno_status(run) == _AGNO_ERROR:
            run.content = None
            run.events = None
