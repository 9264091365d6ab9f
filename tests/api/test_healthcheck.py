"""`wcu-ai healthcheck` against the real API process: what an ECS container healthCheck runs."""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.conftest import Proc, free_port, run_cli, wait_http
from tests.tcp_proxy import PostgresProxy

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


def test_healthcheck_of_the_runner_is_alive_while_waiting_ready_once_initialised_failing_when_frozen(
    start: Start, service_env: dict[str, str], db_url: str
) -> None:
    proxy = PostgresProxy(db_url, free_port())
    env = {
        **service_env,
        "DATABASE_URL": proxy.url,
        "WCU_RUNNER_METRICS_HOST": "127.0.0.1",
        "WCU_RUNNER_METRICS_PORT": str(free_port()),
    }
    unset = run_cli("healthcheck", "--runner", env={**env, "WCU_RUNNER_METRICS_PORT": ""})
    assert unset.returncode == 1 and "WCU_RUNNER_METRICS_PORT is not set" in unset.stderr

    runner = start("runner", **env)
    try:
        runner.wait_for("runner.init_waiting", timeout=60)
        alive = run_cli("healthcheck", "--runner", env=env)
        assert (alive.returncode, alive.stdout.strip()) == (0, '/health: 200 {"status": "ok"}')
        waiting = run_cli("healthcheck", "--runner", "--ready", env=env)
        assert waiting.returncode == 1 and "/health/ready: 503" in waiting.stderr
        assert "initialising" in waiting.stderr

        proxy.start()
        runner.wait_for("runner.leader", timeout=90)
        ready = run_cli("healthcheck", "--runner", "--ready", env=env)
        assert ready.returncode == 0 and '"status": "ready"' in ready.stdout

        # A frozen runner (the leader here) answers nothing: the orchestrator's check fails and
        # its restart frees the leadership lock the frozen process would keep.
        runner.signal(signal.SIGSTOP)
        try:
            for ready_flag in ([], ["--ready"]):
                frozen = run_cli("healthcheck", "--runner", *ready_flag, env=env)
                assert frozen.returncode == 1 and "no answer on 127.0.0.1:" in frozen.stderr
        finally:
            runner.signal(signal.SIGCONT)
        assert run_cli("healthcheck", "--runner", env=env).returncode == 0
        runner.signal(signal.SIGTERM)
        assert runner.wait() == 0
    finally:
        proxy.stop()
