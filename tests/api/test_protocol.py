"""Slow and idle clients on real sockets against the real `wcu-ai api`: the connection limits of
api/protocol.py (header timeout, bounded drain of a body answered early)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.api.raw_http import RawClient, request_head
from tests.conftest import API_KEY

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
UPLOAD_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    env = {
        "WCU_API_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "WCU_API_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "WCU_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
    }
    with service_stack(pg_server_url, tmp_path_factory.mktemp("protocol"), runner=False, **env) as running:
        yield running


def trickle(client: RawClient, data: bytes, *, every: float, for_at_most: float) -> int:
    """Sends `data` a byte at a time; returns how many bytes went out before the server closed."""
    deadline = time.monotonic() + for_at_most
    for i, byte in enumerate(data):
        if time.monotonic() > deadline or not client.send(bytes([byte])):
            return i
        time.sleep(every)
    return len(data)


def test_headers_sent_a_byte_at_a_time_get_408_and_the_connection_closed(stack: ServiceStack) -> None:
    client = RawClient.to(stack.base)
    try:
        head = request_head(
            "GET", "/v1/tasks", {"Authorization": f"Bearer {API_KEY}", "X-Padding": "p" * 200}
        )
        client.send(head[:20])
        # 10 bytes a second: the whole head would take 25 s; the server gives it HEADER_TIMEOUT.
        sent = trickle(client, head[20:], every=0.1, for_at_most=20)
        assert sent < len(head) - 20, "the server let a client send headers for 20 s"
        response = client.response()
        assert response is not None and response.status == 408
        assert "WCU_API_HEADER_TIMEOUT_SECONDS" in response.json()["detail"]
        assert client.closed_by_server(5)
    finally:
        client.close()
    stack.api.wait_for("http.header_timeout", timeout=5)


def test_a_hundred_idle_connections_are_closed_and_health_answers_meanwhile(stack: ServiceStack) -> None:
    clients = [RawClient.to(stack.base) for _ in range(100)]
    try:
        assert httpx.get(f"{stack.base}/health", timeout=10).status_code == 200
        closed = [c.closed_by_server(HEADER_TIMEOUT + 10) for c in clients]
        assert all(closed), f"{closed.count(False)} idle connections were still open"
    finally:
        for c in clients:
            c.close()
    assert httpx.get(f"{stack.base}/health", timeout=10).status_code == 200


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(stack: ServiceStack) -> None:
    client = RawClient.to(stack.base)
    try:
        client.send(request_head("GET", "/health", {}))
        first = client.response()
        assert first is not None and first.status == 200 and not first.closed
        # The next request starts, then stalls: uvicorn's keep-alive timer was cancelled by its first byte.
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        response = client.response(timeout=HEADER_TIMEOUT + 10)
        assert response is not None and response.status == 408
        assert client.closed_by_server(5)
    finally:
        client.close()


def test_a_body_still_coming_after_an_early_answer_is_drained_for_a_bounded_time(stack: ServiceStack) -> None:
    """413 from Content-Length, answered before the body: the client still gets it, then the
    connection is closed though the client keeps sending."""
    client = RawClient.to(stack.base)
    try:
        head = request_head(
            "POST",
            "/v1/documents",
            {
                "Authorization": f"Bearer {API_KEY}",
                "Content-Type": "multipart/form-data; boundary=b",
                "Content-Length": str(UPLOAD_LIMIT * 4),
            },
        )
        client.send(head + b"--b\r\n")
        response = client.response()
        assert response is not None and response.status == 413
        assert "WCU_UPLOAD_MAX_BYTES" in response.json()["detail"]
        sent = trickle(client, b"x" * 200, every=0.1, for_at_most=20)
        assert sent < 200, "the server kept reading an answered body for 20 s"
    finally:
        client.close()
    stack.api.wait_for("http.linger_timeout", timeout=5)


def test_many_concurrent_requests_past_the_limit_are_503_in_json(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"WCU_API_MAX_CONCURRENT_REQUESTS": "2", "WCU_API_BODY_TIMEOUT_SECONDS": "30"}
    with service_stack(pg_server_url, tmp_path_factory.mktemp("limit"), runner=False, **env) as limited:
        stalled = [RawClient.to(limited.base) for _ in range(2)]
        try:
            for client in stalled:
                client.send(
                    request_head(
                        "POST",
                        "/v1/documents",
                        {
                            "Authorization": f"Bearer {API_KEY}",
                            "Content-Type": "multipart/form-data; boundary=b",
                            "Content-Length": "5000",
                        },
                    )
                    + b"--b\r\n"
                )
            deadline = time.monotonic() + 10
            response = limited.get("/v1/tasks")
            while response.status_code != 503 and time.monotonic() < deadline:
                time.sleep(0.1)
                response = limited.get("/v1/tasks")
            assert response.status_code == 503, response.text
            assert "WCU_API_MAX_CONCURRENT_REQUESTS" in response.json()["detail"]
            assert response.headers["retry-after"] == "1"
            assert limited.get("/health").status_code == 200
            assert limited.get("/health/ready").status_code == 200
        finally:
            for client in stalled:
                client.close()
        deadline = time.monotonic() + 10
        while limited.get("/v1/tasks").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert limited.get("/v1/tasks").status_code == 200
