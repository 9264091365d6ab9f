"""What the runner's probes answer (served by task_runner/metrics_listener.py).

- Readiness (`/health/ready`): 200 once the database is initialised (Agno's tables, the
  migrations), leader or standby alike, while the runner is alive; 503 before. A rolling update
  waits for it before it stops an old runner, so the new one is a standby that can take over at
  once, not one still creating tables (7-11 s here for Agno's alone).
- Liveness (`/health`): 200 while the runner's event loop turns. The listener runs in a thread of
  its own and would answer for a process whose loop is stuck; a frozen process (SIGSTOP, a frozen
  container) answers nothing at all. Either way the orchestrator restarts it, and a stuck leader's
  advisory lock goes with its connections.

Written from the event loop, read from the listener's threads: plain attribute stores and loads,
no lock (a reader sees the old or the new value, both valid).
"""

from __future__ import annotations

import asyncio
import time

#: The loop has not turned for this long: the runner is stuck (no legitimate work blocks the loop
#: for more than a fraction of this; conversions and Agno's storage run in processes and threads).
STALL_SECONDS = 60.0
_TICK_SECONDS = 1.0


class RunnerHealth:
    def __init__(self) -> None:
        self.initialised = False
        self.last_tick = time.monotonic()

    def ready(self) -> bool:
        # A stuck runner is not ready either: a command-based check (ECS) can use this one alone.
        return self.initialised and self.alive()

    def alive(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self.last_tick < STALL_SECONDS

    async def tick(self) -> None:
        """Run as a side task for the runner's life: marks the loop as turning."""
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(_TICK_SECONDS)
