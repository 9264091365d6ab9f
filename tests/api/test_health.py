"""Health endpoints of the real `wcu-ai api` process."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx

from tests.conftest import Proc, free_port, wait_http

Start = Callable[..., Proc]


def test_ready_waits_for_the_runner_to_migrate_while_health_is_always_ok(
    start: Start, service_env: dict[str, str]
) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api")
    wait_http(f"{base}/health")
    not_ready = httpx.get(f"{base}/health/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "migrating"
    assert "0001_ai_server_tasks" in not_ready.json()["reason"]

    runner = start("runner")
    ready = wait_http(f"{base}/health/ready", timeout=60)
    assert ready.json()["status"] == "ready"

    api.signal(signal.SIGTERM)
    assert api.wait() == 0
    assert "api.stopped" in api.actions()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_ready_is_503_while_the_database_does_not_answer(start: Start, service_env: dict[str, str]) -> None:
    dead = f"postgresql://app:hunter2hunter2@127.0.0.1:{free_port()}/app"
    api = start("api", DATABASE_URL=dead, WCU_DB_CONNECT_TIMEOUT_SECONDS="1")
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    assert wait_http(f"{base}/health").json() == {"status": "ok"}
    response = httpx.get(f"{base}/health/ready", timeout=10)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "the database does not answer"}
    api.signal(signal.SIGTERM)
    assert api.wait() == 0
    assert "hunter2" not in api.output()


def test_the_seed_entry_point_serves_the_same_app(start: Start, service_env: dict[str, str]) -> None:
    api = start("-m", "wcu_ai.api.main", python=True)
    assert wait_http(f"http://127.0.0.1:{service_env['WCU_API_PORT']}/health").status_code == 200
    api.signal(signal.SIGINT)
    assert api.wait() == 0
