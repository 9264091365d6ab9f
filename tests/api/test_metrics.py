"""GET /metrics of the real `wcu-ai api` process, read with prometheus_client's parser."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import API_KEY, Proc, wait_http
from tests.scrape import Scrape, scrape

Start = Callable[..., Proc]
ROOT = str(Path(__file__).resolve().parents[2])
METRICS_KEY = "metrics-key-0123456789abcdef"
ON = {"WCU_API_METRICS_ENABLED": "true", "WCU_METRICS_KEY": METRICS_KEY}


def metrics(stack: ServiceStack) -> Scrape:
    return scrape(f"{stack.base}/metrics", METRICS_KEY)


def test_metrics_have_their_own_key_and_count_requests_by_route_template(
    pg_server_url: str, tmp_path: Path
) -> None:
    with service_stack(pg_server_url, tmp_path, runner=False, **ON) as stack:
        url = f"{stack.base}/metrics"
        for headers in ({}, {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": "Bearer wrong"}):
            refused = httpx.get(url, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "WCU_METRICS_KEY" in refused.json()["detail"]
            assert "# TYPE" not in refused.text

        before = metrics(stack)
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for task_id in ids:
            assert stack.get(f"/v1/tasks/{task_id}").status_code == 404
        after = metrics(stack)

        route = {"method": "GET", "route": "/v1/tasks/{task_id}"}
        assert after.types["wcu_http_requests"] == "counter"
        assert after.types["wcu_http_request_duration_seconds"] == "histogram"
        assert after.value("wcu_http_requests_total", status="404", **route) == 3 + before.get(
            "wcu_http_requests_total", status="404", **route
        )
        assert after.value("wcu_http_request_duration_seconds_count", **route) == 3 + before.get(
            "wcu_http_request_duration_seconds_count", **route
        )
        assert after.value("wcu_http_request_duration_seconds_bucket", le="+Inf", **route) == 3
        assert after.value("wcu_http_request_duration_seconds_sum", **route) > 0
        # The scrape itself is the one request in flight.
        assert after.value("wcu_http_requests_in_flight") == 1
        # Route templates, never the raw paths: no id became a label value.
        routes = {labels["route"] for labels in after.labels_of("wcu_http_requests_total")}
        assert not any(task_id in r for r in routes for task_id in ids)
        assert "/metrics" in routes and "/health/ready" in routes

        # An unmatched path and a made-up method fold into bounded values.
        httpx.get(f"{stack.base}/no/such/{uuid.uuid4()}")
        httpx.request("BREW", f"{stack.base}/health")
        folded = metrics(stack)
        assert folded.value("wcu_http_requests_total", method="GET", route="unmatched", status="404") == 1
        assert folded.value("wcu_http_requests_total", method="other", route="/health", status="405") == 1

        assert folded.value("wcu_db_pool_connections_max") == 10  # WCU_DB_POOL_SIZE's default
        assert folded.value("wcu_db_pool_connections") >= 1
        assert folded.value("wcu_db_pool_connections_in_use") == 0
        assert folded.value("wcu_db_pool_requests_waiting") == 0
        assert folded.types["wcu_db_pool_request_errors"] == "counter"
        assert folded.value("process_resident_memory_bytes") > 0


def test_metrics_are_off_by_default_and_open_without_a_key(start: Start, service_env: dict[str, str]) -> None:
    # Neither answer needs the database: the pool opens without waiting for it.
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    off = start("api")
    wait_http(f"{base}/health")
    assert httpx.get(f"{base}/metrics").status_code == 404
    assert "/metrics" not in httpx.get(f"{base}/openapi.json").json()["paths"]
    off.signal(signal.SIGTERM)
    assert off.wait() == 0

    on = start("api", WCU_API_METRICS_ENABLED="true")
    wait_http(f"{base}/health")
    opened = scrape(f"{base}/metrics")
    assert opened.value("wcu_http_requests_total", method="GET", route="/health", status="200") >= 1
    on.signal(signal.SIGTERM)
    assert on.wait() == 0


MODEL = "python:tests.fake_model:make"


def run(stack: ServiceStack, agent: str, *, stream: bool) -> httpx.Response:
    body = {"message": "What do the keepers log?", "user_id": "ada", "stream": stream}
    return httpx.post(f"{stack.base}/v1/agents/{agent}/runs", json=body, headers=stack.auth, timeout=60)


def test_agent_runs_are_counted_by_how_they_ended(pg_server_url: str, tmp_path: Path) -> None:
    env = {**ON, "WCU_AGENT_MODEL": MODEL, "PYTHONPATH": ROOT}
    for name in ("ok", "failing"):
        (tmp_path / name).mkdir()
    with service_stack(pg_server_url, tmp_path / "ok", **env) as stack:
        before = metrics(stack)
        for outcome in ("completed", "failed", "cancelled", "conflict"):
            assert before.value("wcu_agent_runs_total", outcome=outcome) == 0
        assert run(stack, "assistant", stream=False).status_code == 200
        streamed = run(stack, "assistant", stream=True)
        assert streamed.text.rstrip().splitlines()[-2] == "event: done"
        # Not a run: nothing ran, and the request metrics count the 404.
        assert run(stack, "no-such-agent", stream=False).status_code == 404
        counted = metrics(stack)
        assert counted.value("wcu_agent_runs_total", outcome="completed") == 2
        assert counted.value("wcu_agent_runs_total", outcome="failed") == 0

    env["WCU_AGENT_MODEL"] = "python:tests.fake_model:failing"
    with service_stack(pg_server_url, tmp_path / "failing", **env) as stack:
        assert run(stack, "assistant", stream=False).status_code == 502
        streamed = run(stack, "assistant", stream=True)
        assert (streamed.status_code, streamed.text.rstrip().splitlines()[-2]) == (200, "event: error")
        counted = metrics(stack)
        assert counted.value("wcu_agent_runs_total", outcome="failed") == 2
        assert counted.value("wcu_agent_runs_total", outcome="completed") == 0


def test_request_stats_expose_what_prometheus_clients_own_counter_and_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest

    from tests.scrape import parse
    from wcu_ai.api.metrics import _BUCKETS, RequestStats

    ours = CollectorRegistry()
    stats = RequestStats(_BUCKETS)
    ours.register(stats)
    theirs = CollectorRegistry()
    counter = Counter("wcu_http_requests", "x", ["method", "route", "status"], registry=theirs)
    histogram = Histogram(
        "wcu_http_request_duration_seconds", "x", ["method", "route"], buckets=_BUCKETS, registry=theirs
    )
    observations = [0.0, 0.005, 0.0051, 0.3, 1.0, 2.4999, 119.0, 120.0, 500.0]
    for n, seconds in enumerate(observations):
        status = 200 if n % 3 else 503
        stats.observe("GET", "/v1/tasks/{task_id}", status, seconds)
        counter.labels("GET", "/v1/tasks/{task_id}", str(status)).inc()
        histogram.labels("GET", "/v1/tasks/{task_id}").observe(seconds)
    ours_samples = parse(generate_latest(ours).decode()).samples
    theirs_samples = parse(generate_latest(theirs).decode()).samples
    assert {k: v for k, v in theirs_samples.items() if not k[0].endswith("_created")} == {
        k: v for k, v in ours_samples.items() if k[0] != "wcu_http_requests_in_flight"
    }


def test_made_up_methods_fold_into_one_series_and_one_entry() -> None:
    from wcu_ai.api.metrics import _BUCKETS, RequestStats

    stats = RequestStats(_BUCKETS)
    for n in range(1000):
        stats.observe(f"M{n}", "unmatched", 405, 0.001)
    series = next(m.samples for m in stats.collect() if m.name == "wcu_http_requests")
    assert [(s.labels["method"], s.value) for s in series] == [("other", 1000)]
    assert len(stats._counts) == len(stats._durations) == 1
