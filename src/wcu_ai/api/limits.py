"""Limits the API puts on each request at the ASGI level, before any route runs.

- BodyTimeoutMiddleware: while the application waits for the next piece of a request's body, the
  client has WCU_API_BODY_TIMEOUT_SECONDS to send it, and WCU_API_BODY_MAX_SECONDS for all of
  them together, else 408 (without the sum, a byte every 29 s keeps an upload, and its slot of
  the concurrency limit, forever). Only those waits count: a request whose handler is busy (the
  database, a model) is not the client's fault, and once the body is complete the wait for a
  disconnect (streaming responses) has no limit.
- ConcurrencyLimitMiddleware: at most WCU_API_MAX_CONCURRENT_REQUESTS requests in flight per
  process, the rest answered 503 at once; the probes (/health*) are never refused.

uvicorn's own limit_concurrency answers in plain text, not in the API's JSON error shape.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, *, timeout: float, total: float) -> None:
        self.app = app
        self.timeout = timeout
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False
        waited = 0.0

        async def receive_in_time() -> Message:
            nonlocal body_complete, waited
            if body_complete:
                return await receive()
            left = self.total - waited
            started = time.monotonic()
            try:
                async with asyncio.timeout(min(self.timeout, left)):
                    message = await receive()
            except TimeoutError:
                # An HTTPException, which FastAPI's body parsing passes through unchanged.
                if left <= self.timeout:
                    detail = (
                        f"the request body took longer than {self.total:g} s in all "
                        "(WCU_API_BODY_MAX_SECONDS): send it again over a faster connection"
                    )
                else:
                    detail = (
                        f"no part of the request body arrived for {self.timeout:g} s "
                        "(WCU_API_BODY_TIMEOUT_SECONDS): send the request again"
                    )
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT, detail, headers={"Connection": "close"}
                ) from None
            waited += time.monotonic() - started
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, receive_in_time, send)


class ConcurrencyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/health"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await _send_json(
                send,
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"the API is serving its limit of {self.limit} requests at once "
                "(WCU_API_MAX_CONCURRENT_REQUESTS): retry shortly",
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _send_json(send: Send, status_code: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
