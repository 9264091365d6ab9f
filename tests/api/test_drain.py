"""The real `wcu-ai api` process drains on SIGTERM: readiness fails, serving goes on, then exit 0."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable

import httpx

from tests.conftest import API_KEY, Proc, wait_http

Start = Callable[..., Proc]


def test_sigterm_fails_readiness_and_serves_on_until_the_drain_is_over(
    start: Start, service_env: dict[str, str]
) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    start("runner").wait_for("runner.leader", timeout=60)
    # A drain far longer than the test: the second SIGTERM ends it, so nothing here races a clock.
    api = start("api", WCU_API_DRAIN_SECONDS="600")
    wait_http(f"{base}/health/ready")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, headers=auth, timeout=10) as kept_alive:
        assert kept_alive.get("/v1/tasks").status_code == 200  # a keep-alive connection, as a load balancer's

        api.signal(signal.SIGTERM)
        draining = wait_http(f"{base}/health/ready", status=503)
        assert draining.json() == {
            "status": "draining",
            "reason": "the API is shutting down; it serves until it stops",
        }
        api.wait_for("api.draining")
        # Still serving, on the open connection and on new ones; liveness stays green.
        assert kept_alive.get("/v1/tasks").status_code == 200
        assert httpx.get(f"{base}/v1/tasks", headers=auth).status_code == 200
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        assert api.popen.poll() is None

    api.signal(signal.SIGTERM)  # the second one stops it now
    assert api.wait() == 0
    actions = api.actions()
    assert actions.index("api.draining") < actions.index("api.stopped")
    assert "api.drained" not in actions


def test_the_drain_ends_by_itself_and_the_api_exits_0(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api", WCU_API_DRAIN_SECONDS="1")
    wait_http(f"{base}/health")
    api.signal(signal.SIGTERM)
    assert api.wait(timeout=60) == 0
    actions = api.actions()
    assert actions.index("api.draining") < actions.index("api.drained") < actions.index("api.stopped")


def test_without_a_drain_sigterm_stops_at_once(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api")
    wait_http(f"{base}/health")
    api.signal(signal.SIGTERM)
    assert api.wait() == 0
    assert "api.draining" not in api.actions()
    assert "api.stopped" in api.actions()


def test_sigint_does_not_wait_for_the_drain(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api", WCU_API_DRAIN_SECONDS="600")
    wait_http(f"{base}/health")
    api.signal(signal.SIGINT)
    assert api.wait() == 0
    assert "api.draining" not in api.actions()


class SlowUpload:
    """An upload whose body trickles in a byte every 0.2 s: a request in flight for as long as the
    test wants."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            b"POST /v1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {API_KEY}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            # A well-formed file part whose data never ends: the body stays valid as it trickles.
            + b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.4\n'
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        with contextlib.suppress(OSError):
            while not self.stop.wait(0.2):
                self.sock.sendall(b"x")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_a_second_sigterm_ends_the_drain_and_the_shutdown_waits_for_the_request_in_flight(
    start: Start, service_env: dict[str, str]
) -> None:
    port = int(service_env["WCU_API_PORT"])
    api = start("api", WCU_API_DRAIN_SECONDS="600")
    wait_http(f"http://127.0.0.1:{port}/health")
    upload = SlowUpload(port)
    try:
        api.signal(signal.SIGTERM)
        api.wait_for("api.draining")
        # The second SIGTERM ends the drain: new connections are refused from then on...
        api.signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        refused = False
        while not refused and time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                time.sleep(0.1)
            except httpx.TransportError:
                refused = True
        assert refused
        # ...but the graceful shutdown still waits for the upload in flight (deployment.md), and
        # a SIGINT does not cut that wait short.
        api.signal(signal.SIGINT)
        time.sleep(1)
        assert api.popen.poll() is None, api.output()
        assert "api.stopped" not in api.actions()
    finally:
        upload.close()
    # The upload gone, the shutdown ends.
    assert api.wait(timeout=30) == 0
