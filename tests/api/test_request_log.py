"""RequestLogMiddleware in-process: request ids on responses and log records, one line per request."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI

from wcu_ai.api.app import RequestIdFilter, RequestLogMiddleware

log = logging.getLogger("tests.request_log")


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/work")
    async def work() -> dict[str, str]:
        log.info("inside the request")
        return {"done": "yes"}

    app.add_middleware(RequestLogMiddleware)
    return app


def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(main())


def test_the_given_request_id_is_echoed_and_stamped_on_the_records_of_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        response = get("/work", {"X-Request-ID": "r" * 150})
    assert response.headers["x-request-id"] == "r" * 100
    assert response.headers.get_list("x-request-id") == ["r" * 100]
    inside = next(r for r in caplog.records if r.getMessage() == "inside the request")
    assert inside.request_id == "r" * 100  # type: ignore[attr-defined]
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "http.request"]
    assert (line.method, line.path, line.status) == ("GET", "/work", 200)  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]


def test_health_gets_a_new_request_id_and_no_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        first, second = get("/health"), get("/health")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and ids[0] != ids[1]
    assert first.json() == {"status": "ok"}
    assert not [r for r in caplog.records if getattr(r, "action", None) == "http.request"]
