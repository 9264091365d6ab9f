"""`wcu-ai healthcheck` against the real API process: what an ECS container healthCheck runs."""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.conftest import Proc, run_cli, wait_http

Start = Callable[..., Proc]


def test_healthcheck_follows_liveness_and_readiness_of_the_api(
    start: Start, service_env: dict[str, str]
) -> None:
    down = run_cli("healthcheck", env=service_env)
    assert down.returncode == 1
    assert f"/health: no answer on 127.0.0.1:{service_env['WCU_API_PORT']}" in down.stderr

    api = start("api")
    wait_http(f"http://127.0.0.1:{service_env['WCU_API_PORT']}/health")
    live = run_cli("healthcheck", env=service_env)
    assert (live.returncode, live.stdout.strip()) == (0, '/health: 200 {"status":"ok"}')
    # No migrations yet: alive but not ready.
    unready = run_cli("healthcheck", "--ready", env=service_env)
    assert (
        unready.returncode == 1 and "/health/ready: 503" in unready.stderr and "migrating" in unready.stderr
    )

    runner = start("runner")
    wait_http(f"http://127.0.0.1:{service_env['WCU_API_PORT']}/health/ready", timeout=60)
    ready = run_cli("healthcheck", "--ready", env=service_env)
    assert ready.returncode == 0 and '"status":"ready"' in ready.stdout
    for proc in (api, runner):
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
