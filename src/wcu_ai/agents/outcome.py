"""How each agent run ended, reported in one place (record_outcome).

completed: the answer was given and stored. failed: the model, a tool or the storage failed (the
turn is stored as failed when the storage still worked). cancelled: the client went away or the
API stopped before the answer was complete. conflict: another run of the session was still going
after WCU_AGENT_SESSION_WAIT_SECONDS; answered 409, nothing ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

logger = logging.getLogger(__name__)


class RunOutcome(StrEnum):
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    conflict = "conflict"


OutcomeObserver = Callable[[RunOutcome], None]


def record_outcome(
    outcome: RunOutcome,
    *,
    agent_id: str,
    session_id: str,
    run_id: str | None,
    seconds: float,
    observer: OutcomeObserver | None = None,
) -> None:
    """Every run's outcome passes here exactly once: logged, and given to the observer (the API's
    wcu_agent_runs_total when its metrics are on)."""
    if observer is not None:
        observer(outcome)
    logger.info(
        "agent run finished",
        extra={
            "action": "agents.run_finished",
            "outcome": outcome.value,
            "agent": agent_id,
            "session_id": session_id,
            "run": run_id,
            "duration_ms": round(seconds * 1000, 1),
        },
    )
