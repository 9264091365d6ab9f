"""The worker loop: claim tasks, run their handlers in concurrency slots, record outcomes.

Side tasks (LISTEN wake-ups, handler time limits, lease heartbeat) are named and supervised.
Shutdown: stop claiming, let in-flight tasks finish within the grace period, then cancel the rest
and put them back in the queue without burning their attempt; outcomes not yet written are
written before the pool closes.
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


class HeldConnection:
    """One pooled connection kept, in autocommit, by one sequential user: the claim loop or the
    completion writer.

    Taking a connection from the pool for every statement cost a second round trip each time: the
    pool's check before handing it out (bench/run, no-op tasks/s). A connection kept is checked
    the same way only after it sat idle for `check_after` seconds, so a connection the server
    dropped while the runner had no work is still noticed before use. After any error, or a
    statement cut short, the connection goes back to the pool (which discards a broken one) and
    the next use takes a fresh, checked one.
    """

    def __init__(self, pool: AsyncConnectionPool, check_after: float = 1.0) -> None:
        self._pool = pool
        self._check_after = check_after
        self._conn: AsyncConnection[Any] | None = None
        self._last_used = 0.0

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection[Any]]:
        conn = self._conn
        if conn is not None and time.monotonic() - self._last_used > self._check_after:
            try:
                await AsyncConnectionPool.check_connection(conn)
            except _DB_ERRORS:
                await self.close()
                conn = None
        if conn is None:
            conn = await self._pool.getconn()
            try:
                await conn.set_autocommit(True)
            except BaseException:
                await self._pool.putconn(conn)
                raise
            self._conn = conn
        try:
            yield conn
        except BaseException:
            await self.close()
            raise
        finally:
            self._last_used = time.monotonic()

    async def close(self) -> None:
        """Back to the pool as handlers expect it (in a transaction block unless broken)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(*_DB_ERRORS):
            if conn.info.transaction_status == TransactionStatus.IDLE:
                await conn.set_autocommit(False)
        await self._pool.putconn(conn)


Report = Callable[[str, dict[str, Any], bool], None]


class CompletionWriter:
    """Writes successful outcomes in its own asyncio task; those that arrive while a write is in
    flight go out together, in one statement (complete_many, each row guarded as `complete`
    guards it), and each is then reported with `report(action, log, held)`.

    A handler's task ends when it hands its outcome over: a busy runner spent most of its time on
    one round trip per outcome, then on waking every task up again to log it (bench/run, no-op
    tasks/s). Until reported, an outcome counts as unrecorded (`unrecorded`): its lease is still
    renewed and it still counts against the claims. A batch that meets a connection error is sent
    again (5 attempts); one the database refuses is written outcome by outcome, so that a result
    it cannot store fails its own task only.
    """

    ATTEMPTS = 5

    def __init__(
        self,
        connection: Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]],
        runner_id: str,
        report: Report,
    ) -> None:
        self._connection = connection
        self._runner_id = runner_id
        self._report = report
        self._pending: list[tuple[Task, str, dict[str, Any]]] = []
        self.unrecorded: dict[str, Task] = {}  # by log["task_id"]
        self._writer: asyncio.Task[None] | None = None

    def submit(self, task: Task, result: str, log: dict[str, Any]) -> None:
        """Queues `result` (JSON text, queue.encode_result) to be written, then reported with
        `log`, the task's log fields (its "task_id" among them)."""
        self._pending.append((task, result, log))
        self.unrecorded[log["task_id"]] = task
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="completions")

    async def close(self) -> None:
        """Waits until every outcome submitted so far is written (or given up on)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        failures = 0
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                held = await self._write_batch(batch)
            except _DB_ERRORS as exc:
                failures += 1
                if failures < self.ATTEMPTS:
                    self._pending[:0] = batch  # again, with what arrived meanwhile
                    await asyncio.sleep(0.5 * 2 ** (failures - 1))
                    continue
                self._settle(batch, "task.record_failed", set(), error_text(exc))
            except psycopg.Error:
                await self._write_each(batch)
            except Exception as exc:
                self._settle(batch, "task.record_failed", set(), error_text(exc))
            else:
                self._settle(batch, "task.succeeded", held)
            failures = 0

    async def _write_batch(self, batch: list[tuple[Task, str, dict[str, Any]]]) -> set[UUID]:
        async with self._connection() as conn:
            return await queue.complete_many(
                conn, [(task, result) for task, result, _ in batch], runner=self._runner_id
            )

    async def _write_each(self, batch: list[tuple[Task, str, dict[str, Any]]]) -> None:
        """The database refused a value of the batch: each outcome alone, the refused ones failed."""
        for task, result, log in batch:
            try:
                try:
                    held = await self._write_batch([(task, result, log)])
                except _DB_ERRORS:
                    raise
                except psycopg.Error as exc:
                    error = f"the result could not be stored: {error_text(exc)}"
                    async with self._connection() as conn:
                        failed = await queue.fail(conn, task, runner=self._runner_id, error=error)
                    self._settle(
                        [(task, result, {**log, "error": error})],
                        "task.failed",
                        {task.id} if failed else set(),
                    )
                    continue
            except Exception as exc:
                self._settle([(task, result, log)], "task.record_failed", set(), error_text(exc))
                continue
            self._settle([(task, result, log)], "task.succeeded", held)

    def _settle(
        self, batch: list[tuple[Task, str, dict[str, Any]]], action: str, held: set[UUID], error: str = ""
    ) -> None:
        for task, _, log in batch:
            self.unrecorded.pop(log["task_id"], None)
            if error:
                self._report(action, {**log, "error": error}, True)
            else:
                self._report(action, log, task.id in held)


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
        # Claimed tasks until their handler has returned and they have handed their outcome over
        # (successes to the completion writer, which holds them until written).
        self._inflight: dict[asyncio.Task[None], Task] = {}
        # In-flight tasks the heartbeat found cancelled by an operator (stopped, not lost).
        self._cancelled: set[UUID] = set()
        # When the handlers running now run out of time.
        self._deadlines: dict[asyncio.Task[None], float] = {}
        self._timed_out: set[asyncio.Task[None]] = set()
        self._free_slots = list(range(settings.runner_concurrency - 1, -1, -1))
        self._next_expiry_check = 0.0
        self._claims = HeldConnection(pool)
        self._outcomes = HeldConnection(pool)
        self._completions = CompletionWriter(self._outcomes.use, runner_id, self._report)

    async def run(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        side = [
            asyncio.create_task(self._listen(), name="listener"),
            asyncio.create_task(self._enforce_timeouts(), name="timeouts"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        try:
            await self._loop(stop, lost)
        finally:
            side[0].cancel()
            await self._drain(grace=0.0 if lost.is_set() else self.settings.runner_grace_seconds)
            side[1].cancel()
            await self._completions.close()
            side[2].cancel()  # leases renewed until the last outcome is written
            await asyncio.gather(*side, return_exceptions=True)
            await self._claims.close()
            await self._outcomes.close()

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
                    limit = self._claim_limit()
                    if limit:
                        claimed = await self._claim(limit)
                        if claimed and self._claim_limit():
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

    def _claim_limit(self) -> int:
        """Free slots, but never more than twice the concurrency claimed and not yet recorded.

        A slot is free again as soon as its handler returns, so claims overlap with the writing of
        the last outcomes; the cap bounds what a stalled outcome write lets pile up.
        """
        claimed = len(self._inflight) + len(self._completions.unrecorded)
        return max(0, min(len(self._free_slots), 2 * self.settings.runner_concurrency - claimed))

    async def _claim(self, limit: int) -> list[Task]:
        lease = self.settings.task_lease_seconds
        async with self._claims.use() as conn:
            # Tasks whose runner died on their last attempt are failed with a claim at most once a
            # second: on every claim it doubled the statements of a round trip (bench/run).
            if time.monotonic() >= self._next_expiry_check:
                expired, tasks = await queue.fail_expired_and_claim(
                    conn, runner=self.runner_id, limit=limit, lease_seconds=lease
                )
                self._next_expiry_check = time.monotonic() + 1.0
            else:
                expired = 0
                tasks = await queue.claim(conn, runner=self.runner_id, limit=limit, lease_seconds=lease)
        if expired:
            self.metrics.tasks_expired.inc(expired)
            logger.warning(
                "tasks failed after their runner died on the last attempt",
                extra={"action": "task.lease_expired_final", "count": expired},
            )
        loop = asyncio.get_running_loop()
        for task in tasks:
            self.metrics.task_claimed(task.task_type)
            # Started here, up to the handler's first wait: a handler that never waits is done, and
            # its outcome handed over, before the next one starts (no round of the event loop each).
            asyncio.eager_task_factory(loop, self._execute(task, self._free_slots.pop()))
        return tasks

    async def _next_due(self) -> float | None:
        async with self._claims.use() as conn:
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

    # -- running one task ----------------------------------------------------------------------

    async def _execute(self, task: Task, slot: int) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._inflight[current] = task
        try:
            await self._run(current, task, slot)
        finally:
            del self._inflight[current]
            self._timed_out.discard(current)
            self._wake.set()

    async def _run(self, current: asyncio.Task[None], task: Task, slot: int) -> None:
        log = {"task_id": str(task.id), "task_type": task.task_type, "attempt": task.attempts, "slot": slot}
        # "task started" is written as soon as the handler first waits (at once for anything doing
        # I/O) and before any outcome but success; a handler that succeeds without ever waiting has
        # its outcome line only, which names the attempt, slot and duration. Two log lines per task
        # were a third of a no-op task's cost (bench/run).
        start_line = [log]
        announce = asyncio.get_running_loop().call_soon(self._write_start_line, start_line)
        started = time.monotonic()
        self._deadlines[current] = started + self.settings.task_timeout_seconds
        ctx = TaskContext(settings=self.settings, pool=self.pool, slot=slot, resources=self.resources)
        try:
            handler = None
            try:
                handler = self.registry.get(task.task_type)
                result = await handler(task, ctx)
                try:
                    value = queue.encode_result(result)
                except ValueError as exc:
                    raise PermanentTaskError(
                        f"the {task.task_type} handler returned a result that cannot be stored as JSON: {exc}"
                    ) from None
            finally:
                if handler is not None:
                    self.metrics.task_ran(task.task_type, time.monotonic() - started)
                # The handler is done with its slot: the next task may start while this outcome is written.
                del self._deadlines[current]
                self._free_slots.append(slot)
                self._wake.set()
                announce.cancel()
        except asyncio.CancelledError:
            self._write_start_line(start_line)
            if task.id in self._cancelled:
                # Cancelled by an operator: the row already says so, there is nothing to write.
                self._cancelled.discard(task.id)
                self.metrics.task_outcome(task.task_type, "cancelled")
                logger.info(
                    "task cancelled by an operator; its attempt stopped",
                    extra={"action": "task.cancelled", **log},
                )
                raise
            if current in self._timed_out and current.uncancel() == 0:
                # Cancelled by _enforce_timeouts alone, not by a shutdown.
                error = f"timed out after {self.settings.task_timeout_seconds:g}s"
                await self._failed(task, error, False, log)
                return
            # Shutdown past the grace period: the task goes back untouched, its attempt unspent.
            await asyncio.shield(self._record(lambda: self._write(queue.release, task), log, "task.released"))
            raise
        except PermanentTaskError as exc:
            self._write_start_line(start_line)
            await self._failed(task, error_text(exc), True, log)
        except Exception as exc:
            self._write_start_line(start_line)
            logger.exception("task raised", extra={"action": "task.raised", **log})
            await self._failed(task, error_text(exc), False, log)
        else:
            log["duration_ms"] = round((time.monotonic() - started) * 1000)
            # Written together with the completions arriving meanwhile, and reported, by the writer.
            self._completions.submit(task, value, log)

    @staticmethod
    def _write_start_line(line: list[dict[str, Any]]) -> None:
        if line:
            logger.info("task started", extra={"action": "task.started", **line.pop()})

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
        for attempt in range(CompletionWriter.ATTEMPTS):
            try:
                held = await write()
                break
            except _DB_ERRORS as exc:
                if attempt == CompletionWriter.ATTEMPTS - 1:
                    self._report("task.record_failed", {**log, "error": error_text(exc)}, True)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        self._report(action, log, held)

    def _report(self, action: str, log: dict[str, Any], held: bool) -> None:
        """Every outcome of a task ends here, written (`held`: this runner still held it) or not."""
        self._wake.set()  # one claimed task fewer: room for another claim
        if action == "task.record_failed":
            self.metrics.task_outcome(log["task_type"], "unrecorded")
            logger.error(
                "could not record the task outcome; it will run again when its lease expires",
                extra={"action": action, **log},
            )
        elif held:
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

    async def _enforce_timeouts(self) -> None:
        """Cancels handlers past WCU_TASK_TIMEOUT_SECONDS, within a second (or a quarter of the limit).

        One timer here instead of one per task (asyncio.timeout): a busy runner's task spent 7% of
        its time arming and cancelling its own (bench/run, no-op tasks/s).
        """
        interval = min(1.0, self.settings.task_timeout_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for runner, deadline in list(self._deadlines.items()):
                if deadline <= now and runner not in self._timed_out:
                    self._timed_out.add(runner)
                    runner.cancel()

    async def _heartbeat(self) -> None:
        interval = self.settings.task_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            ids: list[UUID] = [t.id for t in self._inflight.values()]
            ids += [t.id for t in self._completions.unrecorded.values()]
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
