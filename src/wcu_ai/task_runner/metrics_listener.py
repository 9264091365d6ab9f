"""The runner's metrics listener on WCU_RUNNER_METRICS_HOST:WCU_RUNNER_METRICS_PORT: GET /metrics
(behind the metrics key), and the probes GET /health/ready and /health (task_runner/health.py).

A WSGI server in threads of its own (what prometheus_client's start_http_server runs, plus the
bearer key, the paths and the bounds below): it answers whatever the event loop is doing, in
standby as while leading, and the queue's figures it reads from the database (task_runner/metrics.py
QueueStats) never wait on the loop.

Whoever reaches the port can connect before any key is checked, so what a connection may cost is
bounded: at most MAX_CONNECTIONS at once (one thread and one descriptor each; the next ones are
answered 503 and closed at once), the whole request head within HEAD_TIMEOUT_SECONDS however
slowly its bytes trickle in, the answer written within WRITE_TIMEOUT_SECONDS, one request per
connection. The listener therefore never holds more than a dozen descriptors: slow clients cannot
take those the runner needs for its database connections and LibreOffice.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from wcu_ai.errors import ConfigError
from wcu_ai.exposition import UNAUTHORIZED, authorized
from wcu_ai.task_runner.health import RunnerHealth

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

METRICS_PATH = "/metrics"
READY_PATH = "/health/ready"
LIVE_PATH = "/health"

#: Connections served at once: Prometheus (an HA pair), a person with curl, the kubelet's probes.
MAX_CONNECTIONS = 8
#: A request's line and headers must all arrive within this, from the connection's start.
HEAD_TIMEOUT_SECONDS = 5.0
#: The answer (tens of KiB) must be taken by the client within this.
WRITE_TIMEOUT_SECONDS = 10.0
MAX_HEAD_BYTES = 16 * 1024
_NO_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BUSY = json.dumps(
    {"detail": f"the runner's metrics listener is serving its limit of {MAX_CONNECTIONS} connections"}
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._held: set[socket.socket] = set()
        self._held_lock = threading.Lock()
        super().server_activate()

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            # accept() failed for want of a descriptor: the connection stays in the backlog and the
            # selector reports it again at once. Pause rather than spin a core on it.
            if exc.errno in _NO_DESCRIPTORS:
                time.sleep(0.1)
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self._slots.acquire(blocking=False):
            with self._held_lock:
                self._held.add(request)
            return True
        # Over the limit: a short answer if the socket takes it now, then socketserver closes it.
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY_RESPONSE)
        return False

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._held_lock:
                held = request in self._held
                self._held.discard(request)
            if held:
                self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished or stalled is not worth a traceback on the runner's output."""
        logger.debug("metrics listener: a connection failed", exc_info=True)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietServerHandler(ServerHandler):
    def log_exception(self, exc_info: Any) -> None:
        logger.debug("metrics listener: an answer failed", exc_info=exc_info)


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        # The head is read here under one deadline for all of it (the socket's own timeout bounds
        # each read only: a byte every few seconds would hold the thread for ever); the request is
        # then parsed from memory.
        self.rfile.close()
        self.rfile = io.BytesIO(read_head(self.connection, HEAD_TIMEOUT_SECONDS, MAX_HEAD_BYTES))
        self.connection.settimeout(WRITE_TIMEOUT_SECONDS)

    def handle(self) -> None:
        """wsgiref's handle(), with a handler that logs failed answers at debug level."""
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline or len(self.raw_requestline) > 65536 or not self.parse_request():
            return
        handler = _QuietServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line every few seconds per scraper would drown the rest."""


def read_head(sock: socket.socket, timeout: float, limit: int) -> bytes:
    """The request line and headers, read within `timeout` in all; empty when they do not come in
    time or are longer than `limit` (the connection is then closed without an answer)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(data) > limit:
            return b""
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except OSError:  # TimeoutError included
            return b""
        if not chunk:
            return data
        data += chunk
    return data


def metrics_app(
    registry: CollectorRegistry, key: str | None, health: RunnerHealth | None = None
) -> Callable[..., Iterable[bytes]]:
    """/metrics behind the metrics key, the probes without it; anything else is 404."""
    prometheus = make_wsgi_app(registry)
    health = health or RunnerHealth()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path not in (METRICS_PATH, LIVE_PATH, READY_PATH):
            return _json(
                start_response,
                "404 Not Found",
                "not found: the runner serves /metrics, /health and /health/ready",
            )
        if method not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", "method not allowed: use GET")
        if path == READY_PATH:
            if health.ready():
                return _body(start_response, method, "200 OK", {"status": "ready"})
            body = {"status": "initialising", "reason": "the runner is initialising the database"}
            return _body(start_response, method, "503 Service Unavailable", body)
        if path == LIVE_PATH:
            if health.alive():
                return _body(start_response, method, "200 OK", {"status": "ok"})
            body = {"status": "stuck", "reason": "the runner's event loop has not turned for a minute"}
            return _body(start_response, method, "503 Service Unavailable", body)
        if not authorized(environ.get("HTTP_AUTHORIZATION", ""), key):
            return _json(start_response, "401 Unauthorized", UNAUTHORIZED, [("WWW-Authenticate", "Bearer")])
        if method == "GET":
            return prometheus(environ, start_response)
        # HEAD: GET's headers, no body (prometheus_client's app answers 405 to HEAD).
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answer.update(status=status, headers=headers)

        output = b"".join(prometheus({**environ, "REQUEST_METHOD": "GET"}, capture))
        start_response(answer["status"], [*answer["headers"], ("Content-Length", str(len(output)))])
        return []

    return app


def _body(
    start_response: StartResponse, method: str | None, status: str, body: dict[str, str]
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [] if method == "HEAD" else [data]


def _json(
    start_response: StartResponse, status: str, detail: str, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    body = json.dumps({"detail": detail}).encode()
    start_response(status, [("Content-Type", "application/json"), *(headers or [])])
    return [body]


@contextlib.contextmanager
def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, key: str | None, health: RunnerHealth | None = None
) -> Iterator[int]:
    """Serves the registry and the probes for the block; yields the port it listens on."""
    server_class = _IPv6Server if ":" in host else _Server
    try:
        server = make_server(host, port, metrics_app(registry, key, health), server_class, _Handler)
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
    if key is None:
        logger.warning(
            "the metrics listener serves without a key: set WCU_METRICS_KEY, or keep the port from "
            "anyone who should not read the metrics",
            extra={"action": "runner.metrics_without_key", "port": bound},
        )
    try:
        yield bound
    finally:
        # Stops accepting; connections being answered run on in daemon threads, never waited for.
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
