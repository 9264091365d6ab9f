"""Logging to stdout: one JSON object per line (or plain text for a terminal). Called by the CLI only."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from itertools import islice
from typing import Any

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
# uvicorn's color_message duplicates msg with terminal escapes.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}
# LogRecord.__init__ sets these first; `extra` and filters add theirs after them (a dict keeps
# that order), so the formatter looks for fields past them only.
_INIT_ATTRIBUTES = len(vars(logging.makeLogRecord({})))


# Agno's own loggers print with rich and do not propagate; route_agno_logs() swaps them for this one.
AGNO_LOGGER = "wcu_ai.agno"

# Agno builds its messages with f-strings around what it is working on: prompts and tool arguments
# ("Could not run function search_documents(query=...)"), provider errors (which can quote a key),
# SQL errors with their parameters. What comes before the first of these characters is Agno's own
# wording; the rest is dropped.
_AGNO_DETAIL = re.compile(r"[:(=\[{'\"\n]")
_AGNO_MESSAGE_CHARS = 120


def agno_message_lead(message: str) -> str:
    """The part of an Agno log message that is Agno's own text, not what it quotes (pure)."""
    lead = _AGNO_DETAIL.split(message, maxsplit=1)[0].strip()
    return lead[:_AGNO_MESSAGE_CHARS] or "agno"


class AgnoRedaction(logging.Filter):
    """Agno's records keep their lead only, and no traceback (its frames' messages quote the same)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = agno_message_lead(record.getMessage())
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def route_agno_logs() -> None:
    """Agno's log lines through our handlers (JSON, request ids), redacted, never its rich console.

    configure_agno_logging swaps the loggers Agno's log_* functions use; modules that bound
    Agno's logger at import (the run-cancellation manager, string utilities …) still log to the
    "agno" loggers themselves, so those lose their rich handler and pass through ours too.
    """
    from agno.utils import log as agno_log

    ours = logging.getLogger(AGNO_LOGGER)
    if not any(isinstance(f, AgnoRedaction) for f in ours.filters):
        ours.addFilter(AgnoRedaction())
    agno_log.configure_agno_logging(
        custom_default_logger=ours,
        custom_agent_logger=ours,
        custom_team_logger=ours,
        custom_workflow_logger=ours,
        enable_log_tracebacks=False,
    )
    for name in (agno_log.LOGGER_NAME, agno_log.TEAM_LOGGER_NAME, agno_log.WORKFLOW_LOGGER_NAME):
        theirs = logging.getLogger(name)
        theirs.handlers.clear()
        theirs.propagate = True
        theirs.setLevel(ours.level or logging.WARNING)
        if not any(isinstance(f, AgnoRedaction) for f in theirs.filters):
            theirs.addFilter(AgnoRedaction())


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a busy runner writes two per task, so this is kept cheap."""

    def __init__(self) -> None:
        super().__init__()
        self._encode = json.JSONEncoder(default=str).encode
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        """As datetime.isoformat(timespec="milliseconds") in UTC, the date part formatted once a second."""
        second = int(created)  # split and rounded as datetime.fromtimestamp does
        micros = round((created - second) * 1_000_000)
        if micros == 1_000_000:
            second, micros = second + 1, 0
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in islice(vars(record).items(), _INIT_ATTRIBUTES, None):
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encode(entry)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes and flushes each line in one call (one lock, no extra frames)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.formatter.format(record) if self.formatter else self.format(record)
            self.stream.write(line + self.terminator)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}" + (
            f"  {fields}" if fields else ""
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    # Fields neither formatter writes: the caller's file and line (a stack walk per record), the
    # thread, process and asyncio task names. Skipping them is a third of a log line's cost.
    logging._srcfile = None  # the logging module's documented switch for the caller lookup
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False
    handler = LineHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' chatter stays at WARNING unless we debug.
    for name in ("uvicorn.access", "httpx", "psycopg.pool", AGNO_LOGGER, "pgserver"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
