from __future__ import annotations

import json
import logging

import pytest

from wcu_ai.logconfig import AGNO_LOGGER, JsonFormatter, route_agno_logs


def test_log_lines_are_json_with_the_fields_passed_and_no_terminal_noise() -> None:
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "INFO",
            "msg": "hello %s",
            "args": ("you",),
            "action": "a.b",
            "color_message": "\x1b[1m",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert (line["msg"], line["action"], line["level"]) == ("hello you", "a.b", "info")
    assert "color_message" not in line


def test_agno_logs_reach_our_handlers_instead_of_its_console(caplog: pytest.LogCaptureFixture) -> None:
    from agno.utils import log as agno_log

    route_agno_logs()
    with caplog.at_level(logging.WARNING, logger=AGNO_LOGGER):
        agno_log.log_warning("the model provider said no")
        agno_log.use_agent_logger()  # what an Agent run does first
        agno_log.log_error("and again")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (AGNO_LOGGER, "the model provider said no"),
        (AGNO_LOGGER, "and again"),
    ]
