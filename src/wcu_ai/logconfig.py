"""Logging to stdout: one JSON object per line (or plain text for a terminal). Called by the CLI only."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
# uvicorn's color_message duplicates msg with terminal escapes.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


# Agno's own loggers print with rich and do not propagate; route_agno_logs() swaps them for this one.
AGNO_LOGGER = "wcu_ai.agno"


def route_agno_logs() -> None:
    """Agno's log lines through our handlers (JSON, request ids) instead of its rich console output."""
    from agno.utils.log import configure_agno_logging

    ours = logging.getLogger(AGNO_LOGGER)
    configure_agno_logging(
        custom_default_logger=ours,
        custom_agent_logger=ours,
        custom_team_logger=ours,
        custom_workflow_logger=ours,
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' chatter stays at WARNING unless we debug.
    for name in ("uvicorn.access", "httpx", "psycopg.pool", AGNO_LOGGER, "pgserver"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
