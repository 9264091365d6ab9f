"""Database initialisation at runner start: Agno's tables first, then the project's migrations."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from psycopg import sql

from wcu_ai.agno_storage import AGNO_TABLES, get_agno_postgres_db
from wcu_ai.database import advisory_lock, connect, lock_key
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitReport:
    agno_seconds: float
    migrations_seconds: float
    applied: list[str]


def initialize_database(settings: Settings, *, lock_timeout_seconds: float = 300.0) -> InitReport:
    """Idempotent: on an up-to-date database it creates nothing and applies nothing."""
    # One runner initialises at a time: Agno's CREATE TABLE has no IF NOT EXISTS guard.
    with (
        connect(settings, autocommit=True) as conn,
        advisory_lock(
            conn,
            lock_key("initialize", settings.db_schema),
            lock_timeout_seconds,
            what="database initialisation",
        ),
    ):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.db_schema)))
        started = time.monotonic()
        get_agno_postgres_db(settings)
        agno_seconds = time.monotonic() - started
        logger.info(
            "agno tables ready",
            extra={
                "action": "init.agno",
                "tables": sorted(AGNO_TABLES.values()),
                "duration_ms": round(agno_seconds * 1000),
            },
        )
        started = time.monotonic()
        applied = MigrationTool(settings).run_up()
        migrations_seconds = time.monotonic() - started
        logger.info(
            "migrations up to date",
            extra={
                "action": "init.migrations",
                "applied": applied,
                "duration_ms": round(migrations_seconds * 1000),
            },
        )
    return InitReport(agno_seconds=agno_seconds, migrations_seconds=migrations_seconds, applied=applied)
