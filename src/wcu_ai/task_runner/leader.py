"""Keeps the runner a singleton: a session-level advisory lock held for the runner's lifetime.

A second runner waits as a hot standby, retrying the lock, and takes over the moment the first
one releases it (clean stop) or its connection dies (crash). Leadership is re-checked
periodically; losing the connection means losing the lock: the runner stops working and
stands by again (task_runner.main).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from wcu_ai.database import connect_async, lock_key
from wcu_ai.errors import DatabaseUnavailableError
from wcu_ai.settings import Settings

logger = logging.getLogger(__name__)


class Leadership:
    def __init__(self, settings: Settings, runner_id: str) -> None:
        self.settings = settings
        self.runner_id = runner_id
        self.key = lock_key("runner", settings.db_schema)
        self.lost = asyncio.Event()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._watch: asyncio.Task[None] | None = None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Waits as standby until leader (True) or until stop is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await connect_async(self.settings)
                row = await (
                    await self._conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (self.key,))
                ).fetchone()
                if row and row["ok"]:
                    logger.info(
                        "leader: working tasks", extra={"action": "runner.leader", "runner": self.runner_id}
                    )
                    self._watch = asyncio.create_task(self._watch_lock(stop), name="leadership-watch")
                    return True
                if not announced:
                    logger.info(
                        "standby: another runner holds the lock; waiting to take over",
                        extra={"action": "runner.standby", "runner": self.runner_id},
                    )
                    announced = True
            # connect_async reports a refused connection as DatabaseUnavailableError.
            except (DatabaseUnavailableError, psycopg.OperationalError, OSError) as exc:
                logger.warning(
                    "standby: database unavailable, retrying",
                    extra={
                        "action": "runner.standby_db_error",
                        "error": str(exc).splitlines()[0] if str(exc) else "",
                    },
                )
                await self._close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.runner_standby_poll_seconds)
        return False

    async def _watch_lock(self, stop: asyncio.Event) -> None:
        interval = max(1.0, min(5.0, self.settings.task_lease_seconds / 4))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                assert self._conn is not None
                await self._conn.execute("SELECT 1")
            except (psycopg.Error, OSError, AssertionError):
                logger.error(
                    "leadership lost: the lock connection broke; stopping work",
                    extra={"action": "runner.leadership_lost", "runner": self.runner_id},
                )
                self.lost.set()
                return

    async def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._conn is not None and not self._conn.closed and not self.lost.is_set():
            with contextlib.suppress(psycopg.Error):
                await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                logger.info(
                    "leadership released", extra={"action": "runner.released", "runner": self.runner_id}
                )
        await self._close()

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None
