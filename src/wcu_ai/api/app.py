"""The FastAPI app factory: the API's composition root."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import AsyncConnectionPool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wcu_ai import __version__
from wcu_ai.agents.catalog import open_agents
from wcu_ai.agents.model import ModelCheck, build_model
from wcu_ai.agents.outcome import OutcomeObserver
from wcu_ai.api.deps import require_api_key
from wcu_ai.api.docs import add_docs
from wcu_ai.api.drain import Drain
from wcu_ai.api.limits import BodyTimeoutMiddleware, ConcurrencyLimitMiddleware
from wcu_ai.api.metrics import ApiMetrics, MetricsMiddleware
from wcu_ai.api.routes import agents, documents, health, search, tasks
from wcu_ai.api.scratch import ScratchBudget, upload_scratch
from wcu_ai.database import open_pool
from wcu_ai.documents.handlers import work_dir
from wcu_ai.embeddings import build_embedder
from wcu_ai.errors import (
    DatabaseUnavailableError,
    DocumentError,
    InsufficientStorageError,
    OutOfDescriptorsError,
    StatementTimeoutError,
    WcuError,
)
from wcu_ai.exposition import CONTENT_TYPE, UNAUTHORIZED, authorized
from wcu_ai.settings import Settings

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder
    from agno.models.base import Model

    from wcu_ai.agents.catalog import AgentsLoading

logger = logging.getLogger(__name__)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class AppState(TypedDict):
    settings: Settings
    pool: AsyncConnectionPool
    embedder: Embedder | None
    agents: AgentsLoading | None
    upload_dir: Path
    scratch_budget: ScratchBudget


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
        # Not uuid4: its os.urandom call was 2% of a /health request. An id names a request, it
        # guards nothing; the random module reseeds in a forked child, so workers do not repeat ids.
        request_id = request_id or f"{random.getrandbits(128):032x}"
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


def create_app(settings: Settings, *, model_check: ModelCheck | None = None) -> FastAPI:
    # Built before serving: a misconfigured embedder stops start-up with a ConfigError.
    embedder = build_embedder(settings.embedder, settings.embedder_dimensions)
    # Likewise the agents' model, or its check under way in a child (`wcu-ai api`), whose verdict
    # comes before serving while the model itself is built with the agents; without one the
    # agent routes answer 503.
    model: Model | ModelCheck | None
    if model_check is not None:
        model_check.wait()
        model = model_check
    else:
        model = build_model(settings.agent_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(LoopExceptionLog())
        # This process's upload scratch directory; those of API processes that died are removed.
        with upload_scratch(work_dir(settings) / "uploads") as upload_dir:
            # wait=False: the API starts (and /health answers) while the database is still coming up.
            async with (
                # The API's statements are bounded; the runner's pool has no such limit (long parses).
                open_pool(
                    settings, wait=False, statement_timeout_seconds=settings.db_statement_timeout_seconds
                ) as pool,
                open_agents(settings, model, pool, embedder, agent_run_observer(app)) as catalog,
            ):
                logger.info(
                    "api ready to serve",
                    extra={"action": "api.started", "port": settings.api_port, "agents": catalog is not None},
                )
                yield {
                    "settings": settings,
                    "pool": pool,
                    "embedder": embedder,
                    "agents": catalog,
                    "upload_dir": upload_dir,
                    "scratch_budget": ScratchBudget(settings.api_max_scratch_bytes),
                }
        logger.info("api stopped; database pool closed", extra={"action": "api.stopped"})

    app = FastAPI(
        title="WeconnectU AI Server",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's own pages load their scripts from CDNs: api/docs.py serves them from the image.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    if settings.api_docs:
        add_docs(app)
    # The probes' routes on the app itself: FastAPI matches a route of an included router twice per
    # request; on the app, /health went from 0.86x to 0.94x of a bare app's requests per second.
    app.router.routes.extend(health.router.routes)
    for router in (tasks.router, documents.router, search.router, agents.router):
        app.include_router(router, dependencies=[Depends(require_api_key)])

    # Read by /health/ready; set by api/main.py's server on SIGTERM.
    app.state.drain = Drain()

    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    app.add_middleware(
        BodyTimeoutMiddleware,
        timeout=settings.api_body_timeout_seconds,
        total=settings.api_body_max_seconds,
    )
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.api_max_concurrent_requests)
    # Outside the concurrency limit: the 503s it answers are counted too, as route "over_limit".
    if settings.api_metrics_enabled:
        add_metrics(app, settings)
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

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def statement_cancelled(request: Request, exc: psycopg.errors.QueryCanceled) -> JSONResponse:
        # PostgreSQL cancelled the statement; the pool rolls the connection back and keeps it.
        reason = (exc.diag.message_primary or "").strip()
        logger.warning(
            "a statement of the request was cancelled",
            extra={"action": "api.statement_cancelled", "path": request.url.path, "error": reason},
        )
        return await wcu_error(request, statement_cancelled_error(reason, settings))

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody reads the answer; the status is for the request log line.
        logger.warning(
            "the client disconnected before sending the whole request",
            extra={"action": "api.client_disconnected", "method": request.method, "path": request.url.path},
        )
        return Response(status_code=499)

    @app.exception_handler(OSError)
    async def resource_exhausted(request: Request, exc: OSError) -> JSONResponse:
        mapped = resource_error(exc)
        if mapped is None:
            raise exc
        logger.warning(
            "a request failed for want of a resource",
            extra={"action": "api.resource_exhausted", "path": request.url.path, "error": os_error_text(exc)},
        )
        return await wcu_error(request, mapped)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own 422, but as ASCII JSON: the errors echo the input, and a JSON "\ud800"
        # (an unpaired surrogate) has no UTF-8 form, so FastAPI's response would fail as a 500.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(psycopg.DataError)
    async def invalid_data(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input PostgreSQL cannot take, e.g. a NUL character (%00) in a text parameter: psycopg
        # refuses to send it. The client's mistake: a 422 shaped like FastAPI's own (the schema's).
        reason = str(exc).strip().split("\n")[0]
        error = {"type": "value_error", "loc": ["request"], "msg": f"invalid input: {reason}", "input": None}
        return JSONResponse({"detail": [error]}, status_code=422)

    return app


def statement_cancelled_error(reason: str, settings: Settings) -> StatementTimeoutError:
    if "statement timeout" in reason:
        limit = settings.db_statement_timeout_seconds
        return StatementTimeoutError(
            f"the query ran longer than {limit:g} s (WCU_DB_STATEMENT_TIMEOUT_SECONDS) and was cancelled: "
            "retry later (a search may need fewer or rarer words)"
        )
    return StatementTimeoutError(
        f"the database cancelled the query ({reason or 'no reason given'}); retry later"
    )


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_DESCRIPTORS = {errno.EMFILE, errno.ENFILE}


def resource_error(exc: OSError) -> WcuError | None:
    """A full disk (or RLIMIT_FSIZE, EFBIG) and descriptor exhaustion are the server's state, not a
    bug: 507 and 503 with a reason. None for any other OSError, which stays a 500."""
    if exc.errno in _NO_SPACE:
        return InsufficientStorageError()
    if exc.errno in _NO_DESCRIPTORS:
        return OutOfDescriptorsError()
    return None


def os_error_text(exc: OSError) -> str:
    return f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"


class LoopExceptionLog:
    """The event loop's exception handler: a failed accept() (no descriptor left) is one warning
    per ten seconds, counting the others; anything else goes to asyncio's default handler.

    asyncio retries accept() by itself a second later, but reports each failed attempt as an
    ERROR with a traceback, up to the listen backlog (2048) of them per second: logging those
    alone kept the loop too busy to serve the requests that would free descriptors.
    """

    interval = 10.0

    def __init__(self) -> None:
        self.last = -self.interval
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _NO_DESCRIPTORS | {errno.ENOBUFS, errno.ENOMEM}):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        logger.warning(
            "cannot accept connections for now; asyncio retries every second",
            extra={"action": "api.accept_failed", "error": os_error_text(exc), "suppressed": self.suppressed},
        )
        self.last, self.suppressed = now, 0


def add_metrics(app: FastAPI, settings: Settings) -> None:
    """GET /metrics and the middleware that counts requests (inside RequestLogMiddleware, so a
    request's time includes everything but that log line)."""
    metrics = ApiMetrics()
    key = settings.metrics_key
    if key is None:
        logger.warning(
            "GET /metrics is served without a key: set WCU_METRICS_KEY, or keep the port from anyone "
            "who should not read the metrics",
            extra={"action": "api.metrics_without_key", "port": settings.api_port},
        )

    # Not under require_api_key: its own key (or none: then only the network guards it), and the
    # API keys never open it. Not in the OpenAPI document: it is for Prometheus, not for clients.
    # HEAD too: uptime checkers probe with it (uvicorn sends the headers without the body).
    @app.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
    async def serve_metrics(request: Request) -> Response:
        if not authorized(request.headers.get("authorization", ""), key):
            return JSONResponse(
                {"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        pool = getattr(request.state, "pool", None)
        return Response(metrics.exposition(pool), media_type=CONTENT_TYPE)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics


def agent_run_observer(app: FastAPI) -> OutcomeObserver | None:
    """wcu_agent_runs_total's counter when the metrics are on."""
    metrics: ApiMetrics | None = getattr(app.state, "metrics", None)
    return metrics.count_agent_run if metrics is not None else None


def problem_status(exc: WcuError) -> int:
    """The one place that maps the error tree to HTTP statuses."""
    if isinstance(exc, DatabaseUnavailableError | OutOfDescriptorsError):
        return 503
    if isinstance(exc, InsufficientStorageError):
        return 507
    if isinstance(exc, DocumentError):
        return 422
    return 500
