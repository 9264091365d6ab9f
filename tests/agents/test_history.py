"""A session's turns and what a failed run keeps (pure: Agno objects, no database)."""

from __future__ import annotations

import json
import uuid

from agno.run.agent import RunInput, RunOutput
from agno.run.base import RunStatus
from agno.session import AgentSession

from wcu_ai.agents.history import TurnStatus, redact_failed_runs, turn_status, turns
from wcu_ai.agents.knowledge import TOOL_NAME, Citation

DOC = uuid.uuid4()


def run(status: RunStatus | str | None, content: str, *, searched: bool = True) -> RunOutput:
    from agno.models.response import ToolExecution

    passages = json.dumps({"passages": [{"document_id": str(DOC), "page": 4, "text": "…"}]})
    return RunOutput(
        run_id=str(uuid.uuid4()),
        agent_id="assistant",
        status=status,  # type: ignore[arg-type]
        content=content,
        input=RunInput(input_content=f"asked ({status})"),
        tools=[ToolExecution(tool_name=TOOL_NAME, result=passages)] if searched else None,
        created_at=1_700_000_000,
    )


def test_statuses_as_agno_stores_them_and_as_it_reads_them_back() -> None:
    assert turn_status(run(RunStatus.completed, "")) is TurnStatus.completed
    assert turn_status(run("COMPLETED", "")) is TurnStatus.completed
    assert turn_status(run(RunStatus.cancelled, "")) is TurnStatus.cancelled
    assert turn_status(run(RunStatus.error, "")) is TurnStatus.failed
    # A run that never finished (stored mid-way, or paused) did not answer either.
    assert turn_status(run(RunStatus.running, "")) is TurnStatus.failed
    assert turn_status(run(RunStatus.paused, "")) is TurnStatus.failed


def test_only_a_completed_turn_has_a_reply_and_citations() -> None:
    session = AgentSession(
        session_id="s",
        runs=[
            run(RunStatus.completed, "the answer"),
            run(RunStatus.error, "Error code: 503 api_key=sk-x"),
            run(RunStatus.cancelled, "Operation cancelled by user"),
            run(RunStatus.error, "The answer beg"),  # a stream that failed half-way
        ],
    )
    assert [(t.status, t.message, t.reply, t.citations) for t in turns(session)] == [
        (TurnStatus.completed, "asked (RunStatus.completed)", "the answer", [Citation(DOC, 4)]),
        (TurnStatus.failed, "asked (RunStatus.error)", "", []),
        (TurnStatus.cancelled, "asked (RunStatus.cancelled)", "", []),
        (TurnStatus.failed, "asked (RunStatus.error)", "", []),
    ]


def test_a_failed_run_loses_the_error_text_before_it_is_stored() -> None:
    from agno.run.agent import RunErrorEvent

    failed = run(RunStatus.error, "Error code: 503 api_key=sk-x")
    failed.events = [RunErrorEvent(content="Error code: 503 api_key=sk-x")]
    kept = run(RunStatus.completed, "the answer")
    cancelled = run(RunStatus.cancelled, "part of it")
    session = AgentSession(session_id="s", runs=[kept, failed, cancelled])
    redact_failed_runs(session)
    assert (failed.content, failed.events) == (None, None)
    assert failed.input is not None and failed.input.input_content == "asked (RunStatus.error)"
    assert (kept.content, cancelled.content) == ("the answer", "part of it")
    assert "sk-x" not in json.dumps(session.to_dict(), default=str)
