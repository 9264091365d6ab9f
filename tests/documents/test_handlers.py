"""DocumentParser at runner start, through the real `wcu-ai runner`: the sandbox it reports."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Proc
from wcu_ai.documents.office import probe_private_network

pytestmark = pytest.mark.documents


def test_the_runner_says_at_start_whether_libreoffice_gets_a_private_network(
    start: Callable[..., Proc],
) -> None:
    runner = start("runner")
    event = runner.wait_for("office.private_network", timeout=60)
    probe = probe_private_network()
    if probe.available:
        assert (event["state"], event["level"]) == ("on", "info"), event
    else:  # degraded, and visibly so
        assert (event["state"], event["level"]) == ("unavailable", "warning"), event
        assert event["reason"]


def test_where_it_cannot_be_had_the_runner_warns_or_with_required_logs_an_error(
    start: Callable[..., Proc], path_without_unshare: str
) -> None:
    auto = start("runner", PATH=path_without_unshare)
    event = auto.wait_for("office.private_network", timeout=60)
    assert (event["state"], event["level"]) == ("unavailable", "warning"), event
    assert "unshare" in event["reason"]
    auto.stop()
    required = start("runner", PATH=path_without_unshare, WCU_OFFICE_PRIVATE_NETWORK="required")
    event = required.wait_for("office.private_network", timeout=60)
    assert (event["state"], event["level"]) == ("unavailable", "error"), event
    assert "WCU_OFFICE_PRIVATE_NETWORK=required" in event["msg"]
