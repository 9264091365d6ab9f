"""The HTTP/1.1 connection handling the API runs under uvicorn: uvicorn's h11 protocol with two
limits it does not have.

uvicorn (0.54, h11) arms its keep-alive timer only once a response is complete and cancels it on
every byte received: a connection that never completes its request headers (sends nothing, or a
byte every few seconds) is held for ever, one file descriptor each. And once a response went out
before the request's body was read (413, 400, 507, 408), the rest of the body is read and dropped
for as long as the client keeps sending. Here:

- a request's headers must be complete within `header_timeout` of the connection opening, or of
  the first byte of the next request on a kept-alive connection; otherwise the connection is
  closed (with a 408 when part of a request had arrived);
- after such an early response the body is dropped for at most `linger_timeout` in all, then the
  connection is closed: long enough for an honest client to finish sending and read the answer.

The per-chunk body timeout while the application reads is the app's (api/app.py), since only the
application knows when it is waiting for the body rather than for the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


class TimedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    linger_timeout: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._request_bytes = 0
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting_for_headers = self.conn.their_state is h11.IDLE
        if waiting_for_headers:
            self._request_bytes += len(data)
            if self._header_timer is None:
                # The first bytes of the next request on a kept-alive connection.
                self._arm_header_timer()
        super().data_received(data)
        self._after_events()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY and self._linger_timer is None:
            # Answered before the body was read: uvicorn drops the rest, bounded here in total time.
            self._unset_keepalive_if_required()
            self._linger_timer = self.loop.call_later(self.linger_timeout, self._close_lingering)
        else:
            self._after_events()

    def _after_events(self) -> None:
        if self.conn.their_state is h11.IDLE:
            if self._linger_timer is not None:
                # The dropped body ended: the connection may serve the next request.
                self._linger_timer.cancel()
                self._linger_timer = None
            if self.timeout_keep_alive_task is None and self._header_timer is None and self._request_bytes:
                self._arm_header_timer()
        elif self._header_timer is not None:
            # The request's headers are complete.
            self._header_timer.cancel()
            self._header_timer = None
            self._request_bytes = 0

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._close_slow_headers)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._linger_timer = None

    def _close_slow_headers(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._request_bytes:
            # h11 cannot answer a request it has not parsed; the connection closes right after.
            self.transport.write(
                _raw_response(
                    408,
                    "Request Timeout",
                    f"the request's headers did not arrive within {self.header_timeout:g} s "
                    "(WCU_API_HEADER_TIMEOUT_SECONDS)",
                )
            )
        # A connection that sent nothing is routine (browsers' preconnects): not worth a warning.
        logger.log(
            logging.WARNING if self._request_bytes else logging.DEBUG,
            "closed a connection whose request headers did not arrive in time",
            extra={
                "action": "http.header_timeout",
                "client": _client(self.client),
                "bytes_received": self._request_bytes,
                "timeout_seconds": self.header_timeout,
            },
        )
        self.transport.close()

    def _close_lingering(self) -> None:
        self._linger_timer = None
        if not self.transport.is_closing():
            logger.warning(
                "closed a connection still sending a body that was already answered",
                extra={"action": "http.linger_timeout", "client": _client(self.client)},
            )
            self.transport.close()


def _client(address: Any) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def timed_protocol(*, header_timeout: float, linger_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with the settings' timeouts."""
    return type(
        "TimedH11Protocol",
        (TimedH11Protocol,),
        {"header_timeout": header_timeout, "linger_timeout": linger_timeout},
    )
