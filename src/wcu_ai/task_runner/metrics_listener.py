"""The runner's metrics listener: GET /metrics on WCU_RUNNER_METRICS_HOST:WCU_RUNNER_METRICS_PORT.

A WSGI server in a thread of its own (what prometheus_client's start_http_server runs, plus the
bearer key and a path check): it answers whatever the event loop is doing, in standby as while
leading, and the queue's figures it reads from the database (task_runner/metrics.py QueueStats)
never wait on the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from wcu_ai.errors import ConfigError
from wcu_ai.exposition import UNAUTHORIZED, authorized

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # A client that sends nothing cannot hold its thread for longer than this.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line every few seconds per scraper would drown the rest."""


def metrics_app(registry: CollectorRegistry, key: str | None) -> Callable[..., Iterable[bytes]]:
    """/metrics behind the metrics key; anything else is 404."""
    prometheus = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _json(start_response, "404 Not Found", "not found: the runner serves GET /metrics only")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", "method not allowed: use GET")
        if not authorized(environ.get("HTTP_AUTHORIZATION", ""), key):
            return _json(start_response, "401 Unauthorized", UNAUTHORIZED, [("WWW-Authenticate", "Bearer")])
        return prometheus(environ, start_response)

    return app


def _json(
    start_response: StartResponse, status: str, detail: str, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    body = json.dumps({"detail": detail}).encode()
    start_response(status, [("Content-Type", "application/json"), *(headers or [])])
    return [body]


@contextlib.contextmanager
def serve_metrics(registry: CollectorRegistry, host: str, port: int, key: str | None) -> Iterator[int]:
    """Serves the registry for the block; yields the port it listens on."""
    server_class = _IPv6Server if ":" in host else _Server
    try:
        server = make_server(host, port, metrics_app(registry, key), server_class, _QuietHandler)
    except OSError as exc:
        raise ConfigError(
            f"WCU_RUNNER_METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror}); "
            "choose a free port or unset it"
        ) from None
    bound = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="metrics-listener", daemon=True)
    thread.start()
    logger.info(
        "metrics listener started",
        extra={"action": "runner.metrics_listening", "host": host, "port": bound, "key": key is not None},
    )
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
