"""MigrationTool: applies the packaged SQL migrations, tracked in ai_migrations.

A migration is a file `NNNN_name.sql` under wcu_ai/migrations/sql with a `-- migrate:up` and a
`-- migrate:down` section. Each is applied in its own transaction, together with its row in
ai_migrations; the whole run holds a session-level advisory lock so concurrent runs (several
runners during a rolling deploy, an operator's `wcu-ai migrate up`) never race. An applied
migration whose file changed is refused: migrations only move forward.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from wcu_ai.database import advisory_lock, connect, lock_key
from wcu_ai.errors import MigrationError
from wcu_ai.settings import Settings, load_settings

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_UP = "-- migrate:up"
_DOWN = "-- migrate:down"
TRACKING_TABLE = "ai_migrations"


@dataclass(frozen=True)
class Migration:
    name: str
    up_sql: str
    down_sql: str
    checksum: str


@dataclass(frozen=True)
class MigrationStatus:
    name: str
    applied_at: datetime | None
    changed: bool

    @property
    def state(self) -> str:
        if self.applied_at is None:
            return "pending"
        return "changed" if self.changed else "applied"


def parse_migration(name: str, text: str) -> Migration:
    """Split a migration file into its up and down SQL (pure)."""
    if not _FILE_NAME.match(name):
        raise MigrationError(f"migration file {name!r} must be named NNNN_lower_snake.sql")
    up_at = text.find(_UP)
    down_at = text.find(_DOWN)
    if up_at < 0 or down_at < up_at:
        raise MigrationError(f"migration {name} needs a '{_UP}' section followed by a '{_DOWN}' section")
    return Migration(
        name=name.removesuffix(".sql"),
        up_sql=text[up_at + len(_UP) : down_at].strip(),
        down_sql=text[down_at + len(_DOWN) :].strip(),
        checksum=hashlib.sha256(text.encode()).hexdigest(),
    )


def packaged_migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    folder = resources.files("wcu_ai.migrations") / "sql"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [parse_migration(f.name, f.read_text(encoding="utf-8")) for f in files]


class MigrationTool:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        migrations: list[Migration] | None = None,
        lock_timeout_seconds: float = 300.0,
    ) -> None:
        self.settings = settings or load_settings()
        self.migrations = packaged_migrations() if migrations is None else migrations
        self.lock_timeout_seconds = lock_timeout_seconds

    # -- public API ---------------------------------------------------------------------------

    def status(self) -> list[MigrationStatus]:
        with connect(self.settings, autocommit=True) as conn:
            applied = self._applied(conn)
        known = {m.name: m for m in self.migrations}
        rows = [
            MigrationStatus(
                name=m.name,
                applied_at=applied[m.name]["applied_at"] if m.name in applied else None,
                changed=m.name in applied and applied[m.name]["checksum"] != m.checksum,
            )
            for m in self.migrations
        ]
        # Applied by a newer version of the service: shown, never touched.
        rows += [
            MigrationStatus(name=name, applied_at=row["applied_at"], changed=False)
            for name, row in sorted(applied.items())
            if name not in known
        ]
        return rows

    def run_up(self) -> list[str]:
        """Apply every pending migration; returns the names applied (empty when up to date)."""
        applied_now: list[str] = []
        with connect(self.settings, autocommit=True) as conn, self._locked(conn):
            self._ensure_tracking_table(conn)
            applied = self._applied(conn)
            self._refuse_changed(applied)
            for migration in self.migrations:
                if migration.name in applied:
                    continue
                started = time.monotonic()
                with conn.transaction():
                    conn.execute(migration.up_sql.encode())
                    duration = time.monotonic() - started
                    conn.execute(
                        "INSERT INTO ai_migrations (name, checksum, duration_ms) VALUES (%s, %s, %s)",
                        (migration.name, migration.checksum, round(duration * 1000)),
                    )
                applied_now.append(migration.name)
                logger.info(
                    "migration applied",
                    extra={
                        "action": "migration.applied",
                        "migration": migration.name,
                        "duration_ms": round(duration * 1000),
                    },
                )
        return applied_now

    def run_down(self, steps: int = 1) -> list[str]:
        """Revert the newest `steps` applied migrations; returns the names reverted."""
        if steps < 1:
            raise MigrationError("run_down needs steps >= 1")
        reverted: list[str] = []
        by_name = {m.name: m for m in self.migrations}
        with connect(self.settings, autocommit=True) as conn, self._locked(conn):
            self._ensure_tracking_table(conn)
            applied = self._applied(conn)
            self._refuse_changed(applied)
            for name in sorted(applied, reverse=True)[:steps]:
                migration = by_name.get(name)
                if migration is None:
                    raise MigrationError(
                        f"migration {name} was applied by a newer version of wcu-ai; revert it with that version"
                    )
                with conn.transaction():
                    conn.execute(migration.down_sql.encode())
                    conn.execute("DELETE FROM ai_migrations WHERE name = %s", (name,))
                reverted.append(name)
                logger.info("migration reverted", extra={"action": "migration.reverted", "migration": name})
        return reverted

    def pending(self) -> list[str]:
        return [s.name for s in self.status() if s.state == "pending"]

    # -- internals ----------------------------------------------------------------------------

    def _locked(self, conn: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[None]:
        return advisory_lock(
            conn,
            lock_key("migrations", self.settings.db_schema),
            self.lock_timeout_seconds,
            what="migration run",
        )

    def _ensure_tracking_table(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.settings.db_schema))
        )
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS ai_migrations (
                name        text PRIMARY KEY,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now(),
                duration_ms integer NOT NULL
            )
            """
        )

    def _applied(self, conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AS present",
            (f"{self.settings.db_schema}.{TRACKING_TABLE}",),
        ).fetchone()
        if not exists or not exists["present"]:
            return {}
        rows = conn.execute("SELECT name, checksum, applied_at FROM ai_migrations").fetchall()
        return {row["name"]: row for row in rows}

    def _refuse_changed(self, applied: dict[str, dict[str, Any]]) -> None:
        for migration in self.migrations:
            row = applied.get(migration.name)
            if row is not None and row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} was changed after it was applied "
                    f"(checksum {row['checksum'][:12]} in ai_migrations, {migration.checksum[:12]} in the file); "
                    "applied migrations are never edited: restore the file and add a new migration"
                )
