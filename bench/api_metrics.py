"""What counting requests costs the API: /health through the real app, metrics on vs off, in-process.

    uv run python bench/api_metrics.py [--requests 5000] [--rounds 21]

No network and no load generator: each request is one call of the ASGI app (create_app, every
middleware), so what is left is the app's own time per request, and the two apps are measured in
turn `rounds` times so that a noisy moment hits both. bench/run's "/health req/s, metrics on"
row is the same comparison over HTTP, which on a shared machine swings far more. Prints the
median microseconds per request of each and their ratio. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wcu_ai.api.app import create_app
from wcu_ai.settings import Settings


def build(metrics: bool) -> Any:
    settings = Settings.model_validate(
        {
            # Never connected to: /health makes no database call and the lifespan is not run.
            "database_url": "postgresql://bench:bench@127.0.0.1:1/bench",
            "api_keys": ["bench-key-0123456789abcdef"],
            "api_metrics_enabled": metrics,
        }
    )
    return create_app(settings)


async def per_request(app: Any, requests: int) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health",
        "raw_path": b"/health",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    begun = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - begun
    if set(statuses) != {200}:
        raise RuntimeError(f"/health answered {sorted(set(statuses))}")
    return elapsed / requests * 1e6


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    off, on = build(False), build(True)
    for app in (off, on):
        await per_request(app, 500)  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(args.rounds):
        times[0].append(await per_request(off, args.requests))
        times[1].append(await per_request(on, args.requests))
    off_us, on_us = statistics.median(times[0]), statistics.median(times[1])
    print(f"/health, metrics off: {off_us:.1f} us per request (median of {args.rounds} x {args.requests})")
    print(f"/health, metrics on:  {on_us:.1f} us per request")
    print(f"cost: {on_us - off_us:+.1f} us per request; requests/s on / off = {off_us / on_us:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
