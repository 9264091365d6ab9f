"""Health for the load balancer (liveness) and for deploys (readiness)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from fastapi import APIRouter, Request, Response, status
from psycopg_pool import PoolTimeout

from wcu_ai.api.deps import PoolDep
from wcu_ai.migrations import packaged_migrations

router = APIRouter(tags=["health"])

# How long readiness may wait for the database: a free connection and two short queries.
READY_SECONDS = 1.5


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process serves HTTP. Never touches the database."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "not ready, with the reason"}})
async def ready(pool: PoolDep, request: Request, response: Response) -> dict[str, Any]:
    """Ready when the database answers and its schema is at this version's newest migration, and
    not once the API is draining for a shutdown (api/drain.py)."""
    drain = getattr(request.app.state, "drain", None)
    if drain is not None and drain.draining:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "draining", "reason": "the API is shutting down; it serves until it stops"}
    expected = [m.name for m in packaged_migrations()]
    try:
        # The answer, whatever the database does, well within a probe's timeout (Kubernetes: 3 s
        # here; the tests' clients: 2 s): a late 503 reads as a timeout, not a reason.
        async with asyncio.timeout(READY_SECONDS), pool.connection() as conn:
            present = await (
                await conn.execute("SELECT to_regclass('ai_migrations') IS NOT NULL AS ok")
            ).fetchone()
            applied: set[str] = set()
            if present and present["ok"]:
                rows = await (await conn.execute("SELECT name FROM ai_migrations")).fetchall()
                applied = {r["name"] for r in rows}
    except (psycopg.Error, PoolTimeout, OSError, TimeoutError):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable", "reason": "the database does not answer"}
    missing = [name for name in expected if name not in applied]
    if missing:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {
            "status": "migrating",
            "reason": f"waiting for the task runner to apply migrations: {', '.join(missing)}",
        }
    return {"status": "ready", "migration": expected[-1] if expected else None}
