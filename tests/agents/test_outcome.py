"""Every run's outcome is one log record from one function: the place run counters hook into."""

from __future__ import annotations

import logging

import pytest

from wcu_ai.agents.outcome import RunOutcome, record_outcome


def test_the_four_outcomes_and_their_record(caplog: pytest.LogCaptureFixture) -> None:
    assert [o.value for o in RunOutcome] == ["completed", "failed", "cancelled", "conflict"]
    with caplog.at_level(logging.INFO, logger="wcu_ai.agents.outcome"):
        record_outcome(RunOutcome.conflict, agent_id="assistant", session_id="s1", run_id=None, seconds=0.25)
    [record] = caplog.records
    assert (record.action, record.outcome, record.agent, record.session_id, record.duration_ms) == (  # type: ignore[attr-defined]
        "agents.run_finished",
        "conflict",
        "assistant",
        "s1",
        250.0,
    )
