from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from wcu_ai.logconfig import (
    AGNO_LOGGER,
    JsonFormatter,
    agno_message_lead,
    configure_logging,
    route_agno_logs,
)


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


@pytest.mark.parametrize(
    "created", [0.0, 1.9995, 1700000000.0004999, 1700000000.9999999, 1474160305.2349994, 1764620000.123456]
)
def test_timestamps_are_utc_isoformat_to_the_millisecond(created: float) -> None:
    record = logging.makeLogRecord({"msg": "x", "created": created})
    line = json.loads(JsonFormatter().format(record))
    assert line["ts"] == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def test_the_runner_logging_writes_one_json_line_per_record_with_every_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks")
    saved_switches = {name: getattr(logging, name) for name in switches}
    try:
        configure_logging("INFO", "json")

        class Stamp(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                record.request_id = "r-1"
                return True

        root.handlers[0].addFilter(Stamp())
        log = logging.getLogger("wcu_ai.test")
        log.info("task %s", "succeeded", extra={"action": "task.succeeded", "slot": 1, "ok": True})
        log.debug("not at INFO")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"action": "task.raised"})
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name, value in saved_switches.items():
            setattr(logging, name, value)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert {k: first[k] for k in ("level", "logger", "msg", "action", "slot", "ok", "request_id")} == {
        "level": "info",
        "logger": "wcu_ai.test",
        "msg": "task succeeded",
        "action": "task.succeeded",
        "slot": 1,
        "ok": True,
        "request_id": "r-1",
    }
    assert "pathname" not in first and "taskName" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


@pytest.mark.parametrize(
    ("message", "lead"),
    [
        (
            "Could not run function search_documents(query=what my secret plan is): boom",
            "Could not run function search_documents",
        ),
        ("Error in Agent run: Error code: 401 - api_key=sk-0123 invalid", "Error in Agent run"),
        (
            "Exception upserting into sessions table: (psycopg.errors.QueryCanceled) canceling statement\n"
            "[SQL: INSERT INTO ai_sessions ...] [parameters: {'runs': 'the prompt'}]",
            "Exception upserting into sessions table",
        ),
        (
            "Attempt 1/2 failed. Retrying in 1s...: the provider said 'quota'",
            "Attempt 1/2 failed. Retrying in 1s...",
        ),
        ("Run 0b1c marked for cancellation", "Run 0b1c marked for cancellation"),
        ("{'oops': 1}", "agno"),
    ],
)
def test_agno_messages_keep_agnos_words_and_drop_what_they_quote(message: str, lead: str) -> None:
    assert agno_message_lead(message) == lead


def test_every_agno_logger_goes_through_ours_redacted_and_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agno.utils import log as agno_log

    route_agno_logs()
    with caplog.at_level(logging.INFO):
        try:
            raise RuntimeError("api_key=sk-in-a-traceback")
        except RuntimeError:
            agno_log.log_error("Error in Agent run: api_key=sk-0123", exc_info=True)
        # Modules imported before the routing (the run-cancellation manager …) keep Agno's own "agno"
        # logger, which printed with rich (not JSON) and did not propagate.
        logging.getLogger(agno_log.LOGGER_NAME).warning("Cancelling run r1: because of 'the prompt'")
    records = [r for r in caplog.records if r.name in (AGNO_LOGGER, "agno")]
    assert [(r.name, r.getMessage(), r.exc_info) for r in records] == [
        (AGNO_LOGGER, "Error in Agent run", None),
        ("agno", "Cancelling run r1", None),
    ]
    assert logging.getLogger("agno").handlers == [] and logging.getLogger("agno").propagate
    lines = [JsonFormatter().format(r) for r in records]
    assert all("sk-" not in line and "prompt" not in line for line in lines)
