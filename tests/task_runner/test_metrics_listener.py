"""The runner's metrics listener: real `wcu-ai runner` processes scraped over HTTP, leader and standby."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx

from tests.conftest import API_KEY, Proc, free_port, insert_task, wait_task
from tests.scrape import Scrape, scrape

Start = Callable[..., Proc]
METRICS_KEY = "metrics-key-0123456789abcdef"


def listener(**extra: str) -> tuple[str, dict[str, str]]:
    port = free_port()
    env = {"WCU_RUNNER_METRICS_HOST": "127.0.0.1", "WCU_RUNNER_METRICS_PORT": str(port), **extra}
    return f"http://127.0.0.1:{port}/metrics", env


def scrape_until(url: str, ready: Callable[[Scrape], bool], key: str | None = METRICS_KEY) -> Scrape:
    """Counters move when the runner has recorded an outcome, a moment after the row changed."""
    deadline = time.monotonic() + 30
    last = scrape(url, key)
    while not ready(last) and time.monotonic() < deadline:
        time.sleep(0.1)
        last = scrape(url, key)
    return last


def test_leader_and_standby_both_serve_metrics_and_task_runs_move_the_counters(
    start: Start, db_url: str
) -> None:
    leader_url, leader_env = listener(WCU_METRICS_KEY=METRICS_KEY, WCU_TASK_RETRY_BASE_SECONDS="0")
    standby_url, standby_env = listener(WCU_METRICS_KEY=METRICS_KEY)
    leader = start("runner", **leader_env)
    leader.wait_for("runner.leader", timeout=60)
    standby = start("runner", **standby_env)
    standby.wait_for("runner.standby", timeout=60)

    assert scrape(leader_url, METRICS_KEY).value("wcu_runner_leader") == 1
    on_standby = scrape(standby_url, METRICS_KEY)
    assert on_standby.value("wcu_runner_leader") == 0
    # A standby works nothing but reads the queue all the same.
    assert on_standby.value("wcu_task_queue_stats_up") == 1
    assert on_standby.value("wcu_task_queue_depth", status="queued") == 0

    before = scrape(leader_url, METRICS_KEY)
    assert before.value("wcu_runner_tasks_claimed_total", task_type="noop") == 0
    assert before.value("wcu_libreoffice_restarts_total", reason="timeout") == 0
    assert before.value("process_resident_memory_bytes") > 0
    ok = insert_task(db_url, "noop")
    flaky = insert_task(db_url, "fail", {"message": "try again"}, max_attempts=2)
    unknown = insert_task(db_url, "no_such_type")
    wait_task(db_url, ok, "succeeded")
    wait_task(db_url, flaky, "failed")
    wait_task(db_url, unknown, "failed")

    def outcome(s: Scrape, task_type: str, name: str) -> float:
        return s.value("wcu_runner_task_outcomes_total", task_type=task_type, outcome=name)

    after = scrape_until(leader_url, lambda s: outcome(s, "unknown", "failed") == 1)
    assert after.types["wcu_runner_tasks_claimed"] == "counter"
    assert after.value("wcu_runner_tasks_claimed_total", task_type="noop") == 1
    assert after.value("wcu_runner_tasks_claimed_total", task_type="fail") == 2
    assert after.value("wcu_runner_tasks_claimed_total", task_type="unknown") == 1
    assert outcome(after, "noop", "succeeded") == 1
    assert (outcome(after, "fail", "retried"), outcome(after, "fail", "failed")) == (1, 1)
    assert outcome(after, "unknown", "failed") == 1
    assert "no_such_type" not in {
        labels.get("task_type") for labels in after.labels_of("wcu_runner_tasks_claimed_total")
    }
    assert after.value("wcu_runner_task_duration_seconds_count", task_type="noop") == 1
    assert after.value("wcu_runner_task_duration_seconds_count", task_type="fail") == 2
    assert after.types["wcu_runner_task_duration_seconds"] == "histogram"

    # The leader stops; the standby takes over, and says so.
    leader.signal(signal.SIGTERM)
    assert leader.wait() == 0
    standby.wait_for("runner.leader", timeout=30)
    assert scrape(standby_url, METRICS_KEY).value("wcu_runner_leader") == 1
    standby.signal(signal.SIGTERM)
    assert standby.wait() == 0


def test_the_listener_needs_the_metrics_key_and_serves_only_metrics(start: Start) -> None:
    url, env = listener(WCU_METRICS_KEY=METRICS_KEY)
    runner = start("runner", **env)
    runner.wait_for("runner.metrics_listening", timeout=60)
    for headers in ({}, {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": "Basic eDp5"}):
        refused = httpx.get(url, headers=headers, timeout=10)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "WCU_METRICS_KEY" in refused.json()["detail"]
    assert httpx.get(url.replace("/metrics", "/"), timeout=10).status_code == 404
    assert httpx.post(url, headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=10).status_code == 405
    assert scrape(url, METRICS_KEY).value("wcu_runner_leader") in (0, 1)
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_the_listener_is_off_by_default_and_a_taken_port_stops_the_start(start: Start) -> None:
    quiet = start("runner")
    quiet.wait_for("runner.leader", timeout=60)
    assert "runner.metrics_listening" not in quiet.actions()

    url, env = listener()
    opened = start("runner", **env)
    opened.wait_for("runner.metrics_listening", timeout=60)
    assert scrape(url).value("wcu_runner_leader") == 0  # no key set: open; standby behind `quiet`

    taken = start("runner", **env)
    assert taken.wait() == 2
    assert "WCU_RUNNER_METRICS_PORT: cannot listen on 127.0.0.1:" in taken.output()
    for proc in (opened, quiet):
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
