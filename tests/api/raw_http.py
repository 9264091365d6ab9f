"""A raw-socket HTTP/1.1 client for hostile-client tests: it sends exactly the bytes it is given, as
slowly as the test wants, and parses what the server answers with h11 (a real client-side parser)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import h11


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    closed: bool = False  # the server closed the connection after it

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawClient:
    host: str
    port: int
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=10)

    @classmethod
    def to(cls, base: str) -> RawClient:
        host, port = base.removeprefix("http://").split(":")
        return cls(host, int(port))

    def send(self, data: bytes) -> bool:
        """False when the server already closed (or reset) the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def response(self, timeout: float = 15.0) -> RawResponse | None:
        """The server's next response, parsed by h11; None if it closed without one."""
        conn = h11.Connection(h11.CLIENT)
        # h11 parses a response only after a request went out: tell it one did (the bytes were raw).
        conn.send(
            h11.Request(method="POST", target="/", headers=[("Host", self.host), ("Content-Length", "0")])
        )
        conn.send(h11.EndOfMessage())
        deadline = time.monotonic() + timeout
        result: RawResponse | None = None
        while time.monotonic() < deadline:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self._recv(deadline))
                continue
            if isinstance(event, h11.Response):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                result = RawResponse(event.status_code, headers)
            elif isinstance(event, h11.Data) and result is not None:
                result.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if result is not None:
                    result.closed = (
                        conn.their_state is h11.MUST_CLOSE or result.headers.get("connection") == "close"
                    )
                return result
            elif isinstance(event, h11.ConnectionClosed):
                return result
        raise AssertionError(f"no complete response within {timeout}s")

    def _recv(self, deadline: float) -> bytes:
        self.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def closed_by_server(self, timeout: float) -> bool:
        """Whether the server closes the connection within `timeout` (reading and dropping anything)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
