"""Agno's PostgreSQL storage, with the service's table names.

Agno creates its tables lazily on first write. The runner owns the schema, so it forces the four
tables the service uses at start-up (get_agno_postgres_db); the API only ever reads and writes
rows in tables that already exist.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from wcu_ai.database import sqlalchemy_url
from wcu_ai.logconfig import route_agno_logs
from wcu_ai.settings import Settings, load_settings

if TYPE_CHECKING:
    from agno.db.postgres import PostgresDb

logger = logging.getLogger(__name__)

# Agno table type -> the service's table name.
AGNO_TABLES = {
    "sessions": "ai_sessions",
    "memories": "ai_memories",
    "metrics": "ai_metrics",
    "versions": "ai_versions",
}


def build_agno_postgres_db(settings: Settings) -> PostgresDb:
    """Agno's PostgresDb for our schema and table names; creates nothing."""
    from agno.db.postgres import PostgresDb  # Agno is heavy to import: keep it off import paths.

    route_agno_logs()

    return PostgresDb(
        db_url=sqlalchemy_url(settings),
        db_schema=settings.db_schema,
        session_table=AGNO_TABLES["sessions"],
        memory_table=AGNO_TABLES["memories"],
        metrics_table=AGNO_TABLES["metrics"],
        versions_table=AGNO_TABLES["versions"],
        id="wcu-ai",
    )


def ensure_agno_tables(db: PostgresDb) -> None:
    # Versions first: Agno records every table it creates in ai_versions.
    for table_type in ("versions", "sessions", "memories", "metrics"):
        # _get_table is Agno 2.9's own lazy-create path (pinned in pyproject.toml).
        table = db._get_table(table_type=table_type, create_table_if_not_found=True)
        if table is None:
            raise RuntimeError(f"Agno did not create its {table_type} table")


@functools.cache
def _cached_db(settings: Settings) -> PostgresDb:
    db = build_agno_postgres_db(settings)
    ensure_agno_tables(db)
    return db


def get_agno_postgres_db(settings: Settings | None = None) -> PostgresDb:
    """Agno's PostgresDb with ai_sessions, ai_memories, ai_metrics and ai_versions created (cached)."""
    settings = settings or load_settings()
    settings.require_database_url()
    return _cached_db(settings)
