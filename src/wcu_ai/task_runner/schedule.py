"""Built-in periodic tasks, enqueued by the leading runner when due.

A schedule only decides when a task is enqueued; the work runs as an ordinary task through the
queue, with its retries, timeout and handler from the registry. Due times live in
ai_server_schedules (migration 0006, claimed as task_runner/queries.sql explains), so a restart
or a new leader neither skips nor doubles a run. The scheduler is a side task of the leader
(task_runner.main): a standby enqueues nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from wcu_ai.agents.metrics import METRICS_TASK
from wcu_ai.database import load_queries
from wcu_ai.documents.sweep import SWEEP_TASK
from wcu_ai.settings import Settings
from wcu_ai.tasks.model import error_text
from wcu_ai.tasks.retention import PRUNE_TASK

logger = logging.getLogger(__name__)

Q = load_queries("wcu_ai.task_runner", "queries.sql")

_DB_ERRORS = (psycopg.Error, PoolTimeout, OSError)
_MIDNIGHT_UTC = datetime(2000, 1, 1, tzinfo=UTC)
HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True)
class Schedule:
    """Runs of `task_type` every `every_seconds`, on slots `at_seconds` past midnight UTC."""

    name: str
    task_type: str
    every_seconds: int
    at_seconds: int = 0

    @property
    def origin(self) -> datetime:
        return _MIDNIGHT_UTC + timedelta(seconds=self.at_seconds)


def builtin_schedules(settings: Settings) -> list[Schedule]:
    schedules = [
        # Just after midnight, so the day before is complete when Agno aggregates it.
        Schedule("agent_metrics", METRICS_TASK, every_seconds=DAY, at_seconds=30 * 60),
        Schedule("document_sweep", SWEEP_TASK, every_seconds=10 * 60),
    ]
    if settings.task_retention_days > 0:
        # Hourly: each run deletes about an hour's worth of tasks, never a year's at once.
        schedules.append(Schedule("task_retention", PRUNE_TASK, every_seconds=HOUR, at_seconds=20 * 60))
    return schedules


class Scheduler:
    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, schedules: list[Schedule], runner_id: str
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.schedules = {s.name: s for s in schedules}
        self.runner_id = runner_id

    async def add_schedules(self) -> None:
        """Records the schedules this version knows; those already recorded keep their due times."""
        async with self.pool.connection() as conn:
            for s in self.schedules.values():
                await conn.execute(Q["add_schedule"], self.query_params(s))

    async def enqueue_due(self) -> list[UUID]:
        """Enqueues one task for each schedule that is due; returns their ids."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["due_schedules"], {"names": list(self.schedules)})).fetchall()
        enqueued = []
        for row in rows:
            schedule = self.schedules[row["name"]]
            async with self.pool.connection() as conn:
                claimed = await (
                    await conn.execute(Q["claim_schedule"], self.query_params(schedule))
                ).fetchone()
            if claimed is None:
                continue  # another runner claimed this run between the two statements
            enqueued.append(claimed["id"])
            logger.info(
                "scheduled task enqueued",
                extra={
                    "action": "schedule.enqueued",
                    "schedule": schedule.name,
                    "task_type": schedule.task_type,
                    "task_id": str(claimed["id"]),
                    "runner": self.runner_id,
                },
            )
        return enqueued

    def query_params(self, schedule: Schedule) -> dict[str, Any]:
        """The parameters of add_schedule and claim_schedule for `schedule`."""
        return {
            "name": schedule.name,
            "task_type": schedule.task_type,
            "every": schedule.every_seconds,
            "origin": schedule.origin,
            "payload": Jsonb({"schedule": schedule.name}),
            "max_attempts": self.settings.task_max_attempts,
        }

    async def run(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Looks for due runs every WCU_RUNNER_POLL_SECONDS until stop or lost is set."""
        added = False
        waiters = [
            asyncio.create_task(stop.wait(), name="scheduler-stop"),
            asyncio.create_task(lost.wait(), name="scheduler-lost"),
        ]
        try:
            while not stop.is_set() and not lost.is_set():
                try:
                    if not added:
                        await self.add_schedules()
                        added = True
                    await self.enqueue_due()
                except _DB_ERRORS as exc:
                    # Nothing is lost: a run not claimed now stays due for the next look.
                    logger.warning(
                        "schedules unavailable; retrying",
                        extra={"action": "schedule.db_error", "error": error_text(exc)},
                    )
                except Exception:
                    # A fault here must not stop the leader's task work; the next look tries again.
                    logger.exception("scheduler failed; retrying", extra={"action": "schedule.error"})
                await asyncio.wait(
                    waiters, timeout=self.settings.runner_poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for waiter in waiters:
                waiter.cancel()

    @contextlib.asynccontextmanager
    async def running(self, stop: asyncio.Event, lost: asyncio.Event) -> AsyncIterator[None]:
        """The scheduler as a named side task for the block; cancelled when the block ends."""
        side = asyncio.create_task(self.run(stop, lost), name="scheduler")
        try:
            yield
        finally:
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await side
