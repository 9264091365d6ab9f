"""The worker loop: claim tasks, run their handlers in concurrency slots, record outcomes.

Side tasks (LISTEN wake-ups, lease heartbeat) are named and supervised. Shutdown: stop
claiming, let in-flight tasks finish within the grace period, then cancel the rest and put them
back in the queue without burning their attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from wcu_ai.database import connect_async
from wcu_ai.errors import PermanentTaskError
from wcu_ai.settings import Settings
from wcu_ai.task_runner.metrics import RunnerMetrics
from wcu_ai.tasks import queue
from wcu_ai.tasks.model import Task, error_text, retry_delay, should_retry
from wcu_ai.tasks.registry import TaskContext, TaskRegistry

logger = logging.getLogger(__name__)

_DB_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError)


class CompletionWriter:
    """Writes successful outcomes; those that arrive while a write is in flight go out together.

    A lone completion is written at once, as before; under load one statement (complete_many)
    records a whole batch, each row guarded as `complete` guards it. A busy runner spent most of
    its time on one round trip per outcome (bench/run, no-op tasks/s).
    """

    def __init__(
        self, connection: Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]], runner_id: str
    ) -> None:
        self._connection = connection
        self._runner_id = runner_id
        self._pending: list[tuple[Task, Any, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def complete(self, task: Task, result: Any) -> bool:
        """True when recorded, False when this runner no longer held the task; raises DB errors."""
        value = queue.jsonable(result)  # a result that cannot be stored fails its own task only
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((task, value, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="completions")
        return await future

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._connection() as conn:
                    held = await queue.complete_many(
                        conn, [(task, value) for task, value, _ in batch], runner=self._runner_id
                    )
            except Exception as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for task, _, future in batch:
                if not future.done():
                    future.set_result(task.id in held)


class Worker:
    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        registry: TaskRegistry,
        runner_id: str,
        resources: dict[str, Any] | None = None,
        *,
        metrics: RunnerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.registry = registry
        self.runner_id = runner_id
        self.resources = resources if resources is not None else {}
        if metrics is None:
            metrics = RunnerMetrics()
            metrics.track_task_types(registry.task_types)
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], Task] = {}
        # In-flight tasks the heartbeat found cancelled by an operator (stopped, not lost).
        self._cancelled: set[UUID] = set()
        self._free_slots = list(range(settings.runner_concurrency - 1, -1, -1))
        self._completions = CompletionWriter(self._queue_connection, runner_id)

    async def run(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        side = [
            asyncio.create_task(self._listen(), name="listener"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        try:
            await self._loop(stop, lost)
        finally:
            side[0].cancel()
            await self._drain(grace=0.0 if lost.is_set() else self.settings.runner_grace_seconds)
            side[1].cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self._completions.close()

    # -- claiming ------------------------------------------------------------------------------

    async def _loop(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        waiters = [
            asyncio.create_task(stop.wait(), name="stop"),
            asyncio.create_task(lost.wait(), name="lost"),
        ]
        try:
            while not stop.is_set() and not lost.is_set():
                # Cleared before claiming: a notification that arrives during the claim is kept.
                self._wake.clear()
                timeout = self.settings.runner_poll_seconds
                try:
                    if self._free_slots:
                        claimed = await self._claim(len(self._free_slots))
                        if claimed and self._free_slots:
                            continue  # a full batch may mean more is waiting
                        if not claimed:
                            due = await self._next_due()
                            if due is not None:
                                timeout = min(timeout, due)
                except _DB_ERRORS as exc:
                    logger.warning(
                        "database unavailable; retrying",
                        extra={"action": "runner.db_error", "error": error_text(exc)},
                    )
                wake = asyncio.create_task(self._wake.wait(), name="wake")
                try:
                    await asyncio.wait([wake, *waiters], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _claim(self, limit: int) -> list[Task]:
        async with self._queue_connection() as conn:
            expired, tasks = await queue.fail_expired_and_claim(
                conn, runner=self.runner_id, limit=limit, lease_seconds=self.settings.task_lease_seconds
            )
        if expired:
            self.metrics.tasks_expired.inc(expired)
            logger.warning(
                "tasks failed after their runner died on the last attempt",
                extra={"action": "task.lease_expired_final", "count": expired},
            )
        for task in tasks:
            self.metrics.task_claimed(task.task_type)
            slot = self._free_slots.pop()
            runner = asyncio.create_task(self._execute(task, slot), name=f"task-{task.id}")
            self._inflight[runner] = task
            runner.add_done_callback(lambda t, slot=slot: self._finished(t, slot))
        return tasks

    async def _next_due(self) -> float | None:
        async with self._queue_connection() as conn:
            return await queue.next_due_in(conn)

    @contextlib.asynccontextmanager
    async def _queue_connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in autocommit for the queue's statements.

        Each of them is atomic on its own: autocommit spares the BEGIN and COMMIT round trips,
        two of the four a task's outcome used to cost (bench/run, no-op tasks/s).
        """
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                # Back to the pool as handlers expect it. A connection in any other state (broken,
                # a statement cut short) is one the pool discards on return anyway.
                if conn.info.transaction_status == TransactionStatus.IDLE:
                    await conn.set_autocommit(False)

    def _finished(self, runner: asyncio.Task[None], slot: int) -> None:
        self._inflight.pop(runner, None)
        self._free_slots.append(slot)
        self._wake.set()

    # -- running one task ----------------------------------------------------------------------

    async def _execute(self, task: Task, slot: int) -> None:
        log = {"task_id": str(task.id), "task_type": task.task_type, "attempt": task.attempts, "slot": slot}
        logger.info("task started", extra={"action": "task.started", **log})
        started = time.monotonic()
        ctx = TaskContext(settings=self.settings, pool=self.pool, slot=slot, resources=self.resources)
        try:
            handler = self.registry.get(task.task_type)
            try:
                async with asyncio.timeout(self.settings.task_timeout_seconds):
                    result = await handler(task, ctx)
            finally:
                self.metrics.task_ran(task.task_type, time.monotonic() - started)
        except asyncio.CancelledError:
            if task.id in self._cancelled:
                # Cancelled by an operator: the row already says so, there is nothing to write.
                self._cancelled.discard(task.id)
                self.metrics.task_outcome(task.task_type, "cancelled")
                logger.info(
                    "task cancelled by an operator; its attempt stopped",
                    extra={"action": "task.cancelled", **log},
                )
                raise
            # Shutdown past the grace period: the task goes back untouched, its attempt unspent.
            await asyncio.shield(self._record(lambda: self._write(queue.release, task), log, "task.released"))
            raise
        except TimeoutError:
            await self._failed(task, f"timed out after {self.settings.task_timeout_seconds:g}s", False, log)
        except PermanentTaskError as exc:
            await self._failed(task, error_text(exc), True, log)
        except Exception as exc:
            logger.exception("task raised", extra={"action": "task.raised", **log})
            await self._failed(task, error_text(exc), False, log)
        else:
            log["duration_ms"] = round((time.monotonic() - started) * 1000)
            # Batched with the completions arriving meanwhile; the writer takes its own connection.
            await asyncio.shield(
                self._record(lambda: self._completions.complete(task, result), log, "task.succeeded")
            )

    async def _failed(self, task: Task, error: str, permanent: bool, log: dict[str, Any]) -> None:
        log = {**log, "error": error}
        if should_retry(task.attempts, task.max_attempts, permanent=permanent):
            delay = retry_delay(
                task.attempts,
                base=self.settings.task_retry_base_seconds,
                cap=self.settings.task_retry_max_seconds,
            )
            await asyncio.shield(
                self._record(
                    lambda: self._write(queue.retry_later, task, error=error, delay_seconds=delay),
                    {**log, "retry_in_s": round(delay, 1)},
                    "task.retrying",
                )
            )
        else:
            await asyncio.shield(
                self._record(lambda: self._write(queue.fail, task, error=error), log, "task.failed")
            )

    async def _write(self, write: Any, task: Task, **kwargs: Any) -> bool:
        async with self._queue_connection() as conn:
            return await write(conn, task, runner=self.runner_id, **kwargs)

    async def _record(self, write: Callable[[], Awaitable[bool]], log: dict[str, Any], action: str) -> None:
        """Writes a task's outcome with `write` (True: still held); retried while the database is briefly down."""
        for attempt in range(5):
            try:
                held = await write()
                break
            except _DB_ERRORS as exc:
                if attempt == 4:
                    self.metrics.task_outcome(log["task_type"], "unrecorded")
                    logger.error(
                        "could not record the task outcome; it will run again when its lease expires",
                        extra={"action": "task.record_failed", "error": error_text(exc), **log},
                    )
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        if held:
            self.metrics.task_recorded(log["task_type"], action)
            logger.info(action.replace("task.", "task "), extra={"action": action, **log})
        else:
            self.metrics.task_outcome(log["task_type"], "lost")
            logger.warning(
                "task outcome discarded: this runner no longer holds the task's lease",
                extra={"action": "task.lease_lost", **log},
            )

    # -- side tasks ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        channel = queue.notify_channel(self.settings.db_schema)
        backoff = 1.0
        while True:
            try:
                conn = await connect_async(self.settings)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    backoff = 1.0
                    self._wake.set()  # catch up with what was enqueued while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "LISTEN connection lost; polling until it is back",
                    extra={"action": "runner.listen_error", "error": error_text(exc)},
                )
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def _heartbeat(self) -> None:
        interval = self.settings.task_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            ids: list[UUID] = [t.id for t in self._inflight.values()]
            if not ids:
                continue
            try:
                async with self._queue_connection() as conn:
                    held, cancelled = await queue.extend_leases(
                        conn,
                        runner=self.runner_id,
                        task_ids=ids,
                        lease_seconds=self.settings.task_lease_seconds,
                    )
            except _DB_ERRORS as exc:
                self.metrics.lease_renewal_errors.inc()
                logger.warning(
                    "lease heartbeat failed",
                    extra={"action": "runner.heartbeat_error", "error": error_text(exc)},
                )
                continue
            self.metrics.lease_renewals.inc(len(held))
            for runner, task in list(self._inflight.items()):
                if task.id in held or runner.cancelling():
                    continue
                if task.id in cancelled:
                    # An operator's decision, not a fault: _execute logs and counts it as such.
                    self._cancelled.add(task.id)
                else:
                    self.metrics.leases_lost.inc()
                    logger.error(
                        "lease lost; abandoning task",
                        extra={"action": "task.lease_lost", "task_id": str(task.id)},
                    )
                runner.cancel()

    async def _drain(self, grace: float) -> None:
        if not self._inflight:
            return
        logger.info(
            "waiting for in-flight tasks",
            extra={"action": "runner.draining", "count": len(self._inflight), "grace_s": grace},
        )
        pending = set(self._inflight)
        if grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for runner in pending:
            runner.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
