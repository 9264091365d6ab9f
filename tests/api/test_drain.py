"""The real `wcu-ai api` process drains on SIGTERM: readiness fails, serving goes on, then exit 0."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx

from tests.conftest import API_KEY, Proc, wait_http

Start = Callable[..., Proc]


def test_sigterm_fails_readiness_and_serves_on_until_the_drain_is_over(
    start: Start, service_env: dict[str, str]
) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    start("runner").wait_for("runner.leader", timeout=60)
    # A drain far longer than the test: the second SIGTERM ends it, so nothing here races a clock.
    api = start("api", WCU_API_DRAIN_SECONDS="600")
    wait_http(f"{base}/health/ready")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, headers=auth, timeout=10) as kept_alive:
        assert kept_alive.get("/v1/tasks").status_code == 200  # a keep-alive connection, as a load balancer's

        api.signal(signal.SIGTERM)
        draining = wait_http(f"{base}/health/ready", status=503)
        assert draining.json() == {
            "status": "draining",
            "reason": "the API is shutting down; it serves until it stops",
        }
        api.wait_for("api.draining")
        # Still serving, on the open connection and on new ones; liveness stays green.
        assert kept_alive.get("/v1/tasks").status_code == 200
        assert httpx.get(f"{base}/v1/tasks", headers=auth).status_code == 200
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        assert api.popen.poll() is None

    api.signal(signal.SIGTERM)  # the second one stops it now
    assert api.wait() == 0
    actions = api.actions()
    assert actions.index("api.draining") < actions.index("api.stopped")
    assert "api.drained" not in actions


def test_the_drain_ends_by_itself_and_the_api_exits_0(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api", WCU_API_DRAIN_SECONDS="1")
    wait_http(f"{base}/health")
    api.signal(signal.SIGTERM)
    assert api.wait(timeout=60) == 0
    actions = api.actions()
    assert actions.index("api.draining") < actions.index("api.drained") < actions.index("api.stopped")


def test_without_a_drain_sigterm_stops_at_once(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api")
    wait_http(f"{base}/health")
    api.signal(signal.SIGTERM)
    assert api.wait() == 0
    assert "api.draining" not in api.actions()
    assert "api.stopped" in api.actions()


def test_sigint_does_not_wait_for_the_drain(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api", WCU_API_DRAIN_SECONDS="600")
    wait_http(f"{base}/health")
    api.signal(signal.SIGINT)
    assert api.wait() == 0
    assert "api.draining" not in api.actions()
