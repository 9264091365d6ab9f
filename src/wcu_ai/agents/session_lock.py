"""One run at a time per session: a lease row in ai_agent_session_locks (migration 0005).

Agno appends a run by writing the session's whole runs list back, so two runs of one session at
once would lose one. Every write of a session (a run, a delete) holds its lock: acquired with a
bounded wait (WCU_AGENT_SESSION_WAIT_SECONDS, then SessionBusyError, answered 409), renewed every
third of WCU_AGENT_SESSION_LEASE_SECONDS while held, released at the end. A lock left by a
process that died runs out with its lease; a release that failed (a database stall) is retried
in the background until it works or the lease has run out anyway. The holder is the lock's
fencing token: a run writes its session only while its row still names it (sessions.py).
Waiting runs poll with back-off, so they are not served in the order they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from wcu_ai.agents.sessions import session_transaction
from wcu_ai.database import load_queries
from wcu_ai.errors import SessionBusyError

logger = logging.getLogger(__name__)

Q = load_queries("wcu_ai.agents", "queries.sql")

_FIRST_RETRY_SECONDS = 0.05
_MAX_RETRY_SECONDS = 0.5
_MAX_RELEASE_RETRY_SECONDS = 5.0

# Releases retried in the background: referenced here so they are not collected mid-retry.
_retried_releases: set[asyncio.Task[None]] = set()


def retry_delays(wait_seconds: float) -> list[float]:
    """The pauses between attempts to take a busy lock: doubling to 0.5 s, summing to the wait (pure)."""
    delays: list[float] = []
    total, delay = 0.0, _FIRST_RETRY_SECONDS
    while total < wait_seconds:
        step = min(delay, wait_seconds - total)
        delays.append(step)
        total += step
        delay = min(delay * 2, _MAX_RETRY_SECONDS)
    return delays


def retry_after(wait_seconds: float) -> int:
    """Retry-After of a 409: as long as this request waited, at least a second (pure)."""
    return max(1, math.ceil(wait_seconds))


class SessionLock:
    """A held session lock; release() ends it (and its renewals)."""

    def __init__(self, pool: AsyncConnectionPool, session_id: str, holder: uuid.UUID, lease_seconds: float):
        self.pool = pool
        self.session_id = session_id
        self.holder = holder
        self.lease_seconds = lease_seconds
        # About when the lease ends, on this process's clock (a little late: read after the write;
        # a release retried past it does no harm, it deletes only this holder's row).
        self.expires = time.monotonic() + lease_seconds
        self._renewing = asyncio.create_task(self._renew(), name=f"agents.session_lock.{session_id}")

    def _params(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "holder": self.holder, "lease": self.lease_seconds}

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            asked = time.monotonic()
            try:
                async with session_transaction(self.pool) as conn:
                    row = await (await conn.execute(Q["renew_session_lock"], self._params())).fetchone()
            except Exception as exc:
                # The next renewal may work: the lease still has two thirds to run.
                logger.warning(
                    "could not renew a session's lock",
                    extra={"action": "agents.session_lock_renew_failed", "error": type(exc).__name__},
                )
                continue
            if row is None:
                logger.warning(
                    "a session's lock ran out while its run went on",
                    extra={"action": "agents.session_lock_lost", "session_id": self.session_id},
                )
                return
            self.expires = asked + self.lease_seconds

    async def release(self) -> None:
        """Ends the lock; when the database does not answer, retries in the background."""
        self._renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewing
        if await self._unlock():
            return
        # The next run of the session would otherwise wait for the whole lease.
        task = asyncio.create_task(
            self._unlock_until_expiry(), name=f"agents.session_unlock.{self.session_id}"
        )
        _retried_releases.add(task)
        task.add_done_callback(_retried_releases.discard)

    async def _unlock(self) -> bool:
        try:
            async with session_transaction(self.pool) as conn:
                await conn.execute(Q["unlock_session"], self._params())
        except Exception as exc:
            logger.warning(
                "could not release a session's lock; retrying until its lease runs out",
                extra={"action": "agents.session_unlock_failed", "error": type(exc).__name__},
            )
            return False
        return True

    async def _unlock_until_expiry(self) -> None:
        delay = 2 * _MAX_RETRY_SECONDS
        while time.monotonic() + delay < self.expires:
            await asyncio.sleep(delay)
            if await self._unlock():
                logger.info(
                    "released a session's lock on a retry",
                    extra={"action": "agents.session_unlocked_late", "session_id": self.session_id},
                )
                return
            delay = min(delay * 2, _MAX_RELEASE_RETRY_SECONDS)


async def lock_session(
    pool: AsyncConnectionPool, session_id: str, *, wait_seconds: float, lease_seconds: float
) -> SessionLock:
    """The session's lock, once no other run holds it; SessionBusyError after wait_seconds."""
    holder = uuid.uuid4()
    params = {"session_id": session_id, "holder": holder, "lease": lease_seconds}
    delays = retry_delays(wait_seconds)
    for attempt in range(len(delays) + 1):
        async with session_transaction(pool) as conn:
            row = await (await conn.execute(Q["lock_session"], params)).fetchone()
        if row is not None:
            return SessionLock(pool, session_id, holder, lease_seconds)
        if attempt == len(delays):
            break
        if attempt == 0:
            logger.info(
                "waiting for the session's current run",
                extra={"action": "agents.session_wait", "session_id": session_id},
            )
        await asyncio.sleep(delays[attempt])
    raise SessionBusyError(retry_after_seconds=retry_after(wait_seconds))
