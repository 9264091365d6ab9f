"""The FastAPI app factory: the API's composition root."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wcu_ai import __version__
from wcu_ai.agents.catalog import open_agents
from wcu_ai.agents.model import build_model
from wcu_ai.api.deps import require_api_key
from wcu_ai.api.drain import Drain
from wcu_ai.api.metrics import ApiMetrics, MetricsMiddleware
from wcu_ai.api.routes import agents, documents, health, search, tasks
from wcu_ai.database import open_pool
from wcu_ai.embeddings import build_embedder
from wcu_ai.errors import DatabaseUnavailableError, DocumentError, WcuError
from wcu_ai.exposition import CONTENT_TYPE, UNAUTHORIZED, authorized
from wcu_ai.settings import Settings

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder

    from wcu_ai.agents.catalog import AgentsLoading

logger = logging.getLogger(__name__)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class AppState(TypedDict):
    settings: Settings
    pool: AsyncConnectionPool
    embedder: Embedder | None
    agents: AgentsLoading | None


class RequestIdFilter(logging.Filter):
    """Stamps every log record made while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class RequestLogMiddleware:
    """Each request's id (its x-request-id, else a new one) on its log records and its response,
    and one log line per request but /health (the load balancer's probe would drown the rest).

    Plain ASGI: as an @app.middleware("http") function (Starlette's BaseHTTPMiddleware), /health
    answered 0.27x the requests per second of a bare FastAPI app; as this, 0.86x (bench/run).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:100]
                break
        request_id = request_id or uuid.uuid4().hex
        header = (b"x-request-id", request_id.encode("latin-1"))
        started = time.monotonic()
        response: list[Any] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0] != b"x-request-id"),
                    header,
                ]
                response.extend((message["status"], time.monotonic() - started))
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
        if response and scope["path"] != "/health":
            logger.info(
                "request",
                extra={
                    "action": "http.request",
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": response[0],
                    "duration_ms": round(response[1] * 1000, 1),
                },
            )


def create_app(settings: Settings) -> FastAPI:
    # Built before serving: a misconfigured embedder stops start-up with a ConfigError.
    embedder = build_embedder(settings.embedder, settings.embedder_dimensions)
    # Likewise the agents' model; without one the agent routes answer 503.
    model = build_model(settings.agent_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        # wait=False: the API starts (and /health answers) while the database is still coming up.
        async with (
            open_pool(settings, wait=False) as pool,
            open_agents(settings, model, pool, embedder) as catalog,
        ):
            logger.info(
                "api ready to serve",
                extra={"action": "api.started", "port": settings.api_port, "agents": catalog is not None},
            )
            yield {"settings": settings, "pool": pool, "embedder": embedder, "agents": catalog}
        logger.info("api stopped; database pool closed", extra={"action": "api.stopped"})

    app = FastAPI(
        title="WeconnectU AI Server",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    # The probes' routes on the app itself: FastAPI matches a route of an included router twice per
    # request; on the app, /health went from 0.86x to 0.94x of a bare app's requests per second.
    app.router.routes.extend(health.router.routes)
    for router in (tasks.router, documents.router, search.router, agents.router):
        app.include_router(router, dependencies=[Depends(require_api_key)])

    # Read by /health/ready; set by api/main.py's server on SIGTERM.
    app.state.drain = Drain()
    if settings.api_metrics_enabled:
        add_metrics(app, settings)

    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    app.add_middleware(RequestLogMiddleware)

    @app.exception_handler(WcuError)
    async def wcu_error(request: Request, exc: WcuError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=problem_status(exc))

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The server went away while the request used its connection (restart, failover), or no
        # connection came in time (PoolTimeout is an OperationalError): the client may retry.
        logger.warning(
            "database unavailable during a request",
            extra={"action": "api.db_unavailable", "error": str(exc).strip().split("\n")[0]},
        )
        return await wcu_error(request, DatabaseUnavailableError())

    @app.exception_handler(psycopg.DataError)
    async def invalid_data(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input PostgreSQL cannot take, e.g. a NUL character (%00) in a text parameter: psycopg
        # refuses to send it. The client's mistake: a 422 shaped like FastAPI's own (the schema's).
        reason = str(exc).strip().split("\n")[0]
        error = {"type": "value_error", "loc": ["request"], "msg": f"invalid input: {reason}", "input": None}
        return JSONResponse({"detail": [error]}, status_code=422)

    return app


def add_metrics(app: FastAPI, settings: Settings) -> None:
    """GET /metrics and the middleware that counts requests (inside RequestLogMiddleware, so a
    request's time includes everything but that log line)."""
    metrics = ApiMetrics()
    key = settings.metrics_key

    # Not under require_api_key: its own key (or none: then only the network guards it), and the
    # API keys never open it. Not in the OpenAPI document: it is for Prometheus, not for clients.
    @app.get("/metrics", include_in_schema=False)
    async def serve_metrics(request: Request) -> Response:
        if not authorized(request.headers.get("authorization", ""), key):
            return JSONResponse(
                {"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        pool = getattr(request.state, "pool", None)
        return Response(metrics.exposition(pool), media_type=CONTENT_TYPE)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics


def problem_status(exc: WcuError) -> int:
    """The one place that maps the error tree to HTTP statuses."""
    if isinstance(exc, DatabaseUnavailableError):
        return 503
    if isinstance(exc, DocumentError):
        return 422
    return 500
