"""The API's drain after SIGTERM: readiness fails first, requests are served on meanwhile.

A load balancer takes a target out of rotation only after its readiness check fails (or its
deregistration delay runs out) and may keep sending requests until then; a server that stopped at
once would refuse them. So the drain lasts WCU_API_DRAIN_SECONDS, set to that delay; then
uvicorn's graceful shutdown finishes the requests in flight (api/main.py).
"""

from __future__ import annotations

import time


class Drain:
    """Set once, from uvicorn's signal handler: nothing here blocks or takes a lock."""

    def __init__(self) -> None:
        self.deadline: float | None = None

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def begin(self, seconds: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + seconds

    def over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline
