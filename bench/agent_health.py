"""/health latency while agent runs wait on a locked ai_sessions, against /health with nothing locked.

    uv run python bench/agent_health.py [--runs 5] [--seconds 5] [--clients 4] [--keep DIR]

Starts an embedded PostgreSQL (pgserver, dev group; or WCU_TEST_DATABASE_URL), the real
`wcu-ai runner` (it creates the Agno tables and migrates) and `wcu-ai api` with the tests'
deterministic model (tests/fake_model.py, no network). Then, in the same process and run:

- reference: `--clients` httpx clients call /health back to back for `--seconds`; nothing locked;
- ours: another connection holds `LOCK TABLE ai_sessions IN ACCESS EXCLUSIVE MODE`, `--runs`
  agent runs are sent and waited for until PostgreSQL shows them waiting on that lock, then the
  same load on /health for the same time; the lock is released afterwards and the runs answer.

Prints p50 / p99 / max of both and the ratio ours / reference; a /health call without an answer
within 10 s counts as a timeout, at 10 s. Issue 11 measured one run
freezing /health for 3.45 s with the table locked for 4 s (Agno's synchronous storage on the
event loop). Loopback only; every loop is bounded; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import httpx  # noqa: E402
import psycopg  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.conftest import free_port, fresh_database, postgres_url, wcu_ai_command  # noqa: E402

API_KEY = "bench-key-0123456789abcdef"
HEALTH_TIMEOUT_SECONDS = 10.0
WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def waiting_on_a_lock(db_url: str) -> int:
    # A fresh connection each time: pg_stat_activity is a snapshot for the length of a transaction.
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(WAITING).fetchone()[0]  # type: ignore[index]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_for_line(log: Path, action: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                if json.loads(line).get("action") == action:
                    return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"no {action} in {log} within {timeout}s")


def wait_ready(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base} not ready within {timeout}s")


async def health_latencies(base: str, clients: int, seconds: float) -> list[float]:
    """Seconds per /health call, `clients` at a time back to back for `seconds` (bounded)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=HEALTH_TIMEOUT_SECONDS) as http:
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    response = await http.get("/health")
                except httpx.TimeoutException:
                    # No answer at all (a frozen event loop): counted at the client's timeout.
                    latencies.append(time.perf_counter() - began)
                    continue
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(f"/health answered {response.status_code}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "timeouts": sum(1 for x in latencies if x >= HEALTH_TIMEOUT_SECONDS),
        "p50": statistics.median(latencies) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "max": max(latencies) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="agent runs waiting on the lock")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each /health window")
    parser.add_argument("--clients", type=int, default=4, help="concurrent /health clients")
    parser.add_argument("--keep", type=Path, help="keep the processes' logs here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wcu-bench-agents-") as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        with postgres_url("wcu-bench-agents") as url, fresh_database(url, "bench_agents") as db_url:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("WCU_", "DATABASE_URL"))}
            env.update(
                DATABASE_URL=db_url,
                WCU_API_KEYS=API_KEY,
                WCU_API_HOST="127.0.0.1",
                WCU_API_PORT=str(port),
                WCU_AGENT_MODEL="python:tests.fake_model:make",
                # One pool connection per waiting run, and the rest for the runs' other queries.
                WCU_DB_POOL_SIZE=str(max(10, args.runs * 2)),
                WCU_WORK_DIR=str(tmp / "work"),
                WCU_LOG_FORMAT="json",
                PYTHONPATH=str(ROOT),
                AGNO_TELEMETRY="false",
            )
            base = f"http://127.0.0.1:{port}"
            with (
                process([*wcu_ai_command(), "runner"], env, tmp / "runner.log") as runner,
                contextlib.ExitStack() as stack,
            ):
                wait_for_line(tmp / "runner.log", "runner.leader", runner)
                stack.enter_context(process([*wcu_ai_command(), "api"], env, tmp / "api.log"))
                wait_ready(base)
                auth = {"Authorization": f"Bearer {API_KEY}"}
                warm = httpx.post(
                    f"{base}/v1/agents/assistant/runs",
                    json={"message": "What did I ask before?", "user_id": "bench"},
                    headers=auth,
                    timeout=60,
                )
                warm.raise_for_status()  # the agents are loaded and a run works

                reference = asyncio.run(health_latencies(base, args.clients, args.seconds))

                answers: list[int] = []

                def run_one() -> None:
                    body = {"message": "What did I ask before?", "user_id": "bench"}
                    response = httpx.post(
                        f"{base}/v1/agents/assistant/runs", json=body, headers=auth, timeout=120
                    )
                    answers.append(response.status_code)

                threads = [threading.Thread(target=run_one) for _ in range(args.runs)]
                with psycopg.connect(db_url) as lock_conn:
                    lock_conn.execute("LOCK TABLE ai_sessions IN ACCESS EXCLUSIVE MODE")
                    locked_at = time.monotonic()
                    for thread in threads:
                        thread.start()
                    deadline = time.monotonic() + 20
                    waiting = 0
                    while time.monotonic() < deadline:
                        waiting = waiting_on_a_lock(db_url)
                        if waiting >= args.runs:
                            break
                        time.sleep(0.02)
                    ours = asyncio.run(health_latencies(base, args.clients, args.seconds))
                    still_waiting = waiting_on_a_lock(db_url)
                    held = time.monotonic() - locked_at
                for thread in threads:
                    thread.join(120)

    ref, our = summary(reference), summary(ours)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        f"ai_sessions locked {held:.1f} s; agent runs waiting on it: {waiting} when the window began, "
        f"{still_waiting} when it ended; their answers after the release: {sorted(answers)}"
    )
    print(f"{'':28}{'requests':>10}{'timeouts':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, s in (("/health, nothing locked", ref), ("/health, ai_sessions locked", our)):
        print(
            f"{name:28}{s['n']:>10.0f}{s['timeouts']:>10.0f}{s['p50']:>10.1f}{s['p99']:>10.1f}{s['max']:>10.1f}"
        )
    print(f"ratio locked / unlocked: p50 {our['p50'] / ref['p50']:.2f}x, p99 {our['p99'] / ref['p99']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
