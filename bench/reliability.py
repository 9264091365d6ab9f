"""The long reliability runs: the scenarios of tests/reliability with production-sized counts.

    uv run python bench/reliability.py                      # everything, the issue's counts
    uv run python bench/reliability.py sigterm --cycles 50
    uv run python bench/reliability.py sigkill --cycles 10
    uv run python bench/reliability.py noop --tasks 10000
    uv run python bench/reliability.py http --connections 100 --seconds 30

Real `wcu-ai runner` / `wcu-ai api` processes, real signals, on WCU_TEST_DATABASE_URL or an
embedded pgserver; loopback only. Each scenario prints one line of figures (cycles, tasks, lost,
duplicated, errors, p50/p99); the exit status is 1 when anything was lost, duplicated or failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import service_stack
from tests.conftest import API_KEY, fresh_database, postgres_url
from tests.reliability.harness import (
    Verdict,
    enqueue_many,
    http_load,
    noop_flood,
    sigkill_cycles,
    sigterm_cycles,
)


def run_verdict(name: str, server: str, scenario: object, **counts: int) -> bool:
    with tempfile.TemporaryDirectory(prefix=f"wcu-bench-{name}-") as tmp, fresh_database(server) as db_url:
        started = time.monotonic()
        verdict: Verdict = scenario(db_url, Path(tmp), **counts)  # type: ignore[operator]
        verdict.extra["seconds"] = round(time.monotonic() - started, 1)
        print(verdict.line(), flush=True)
        return verdict.ok


def run_http(server: str, connections: int, seconds: float) -> bool:
    ok = True
    with (
        tempfile.TemporaryDirectory(prefix="wcu-bench-http-") as tmp,
        service_stack(server, Path(tmp), runner=False) as stack,
    ):
        # Something for the authenticated read to return.
        enqueue_many(stack.db_url, [("noop", {"n": i}) for i in range(200)])
        auth = {"Authorization": f"Bearer {API_KEY}"}
        for path, headers in (("/health", None), ("/v1/tasks?limit=20", auth)):
            result = http_load(
                f"{stack.base}{path}", connections=connections, seconds=seconds, headers=headers
            )
            print(result.line(path, connections, seconds), flush=True)
            if result.errors:
                print(f"  first errors: {result.sample_errors}", flush=True)
            ok &= result.errors == 0 and result.requests > 0
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenario", nargs="?", choices=["all", "sigterm", "sigkill", "noop", "http"], default="all"
    )
    parser.add_argument("--cycles", type=int, help="SIGTERM (default 50) or SIGKILL (default 10) cycles")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks (default 10000)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    chosen = ["sigterm", "sigkill", "noop", "http"] if args.scenario == "all" else [args.scenario]
    print(f"run {uuid.uuid4().hex[:8]}: {', '.join(chosen)} on {os.cpu_count()} cores", flush=True)
    ok = True
    with postgres_url("wcu-bench-pg") as server:
        for name in chosen:
            if name == "sigterm":
                ok &= run_verdict(name, server, sigterm_cycles, cycles=args.cycles or 50)
            elif name == "sigkill":
                ok &= run_verdict(name, server, sigkill_cycles, cycles=args.cycles or 10)
            elif name == "noop":
                ok &= run_verdict(name, server, noop_flood, tasks=args.tasks)
            else:
                ok &= run_http(server, args.connections, args.seconds)
    print("result: " + ("OK, nothing lost, nothing duplicated, no errors" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
