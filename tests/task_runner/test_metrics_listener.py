"""The runner's metrics listener: real `wcu-ai runner` processes scraped over HTTP, leader and standby."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.conftest import (
    API_KEY,
    Proc,
    free_port,
    insert_task,
    skip_or_fail,
    task_row,
    wait_task,
    wcu_ai_command,
)
from tests.scrape import Scrape, parse, scrape
from wcu_ai.task_runner.metrics_listener import MAX_CONNECTIONS

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
    head = httpx.head(url, headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"].startswith("text/plain") and int(head.headers["content-length"]) > 0
    assert httpx.head(url, timeout=10).status_code == 401
    # The probes need no key (a kubelet has none) and say nothing but their state.
    assert httpx.get(url.replace("/metrics", "/health"), timeout=10).json() == {"status": "ok"}
    assert httpx.get(url.replace("/metrics", "/health/ready"), timeout=10).status_code in (200, 503)
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


def test_a_metrics_key_with_a_newline_opens_the_listener_and_a_blank_one_stops_the_start(
    start: Start,
) -> None:
    # A secret file written with echo: the key with its newline, as the environment gets it.
    url, env = listener(WCU_METRICS_KEY=METRICS_KEY + "\n")
    runner = start("runner", **env)
    runner.wait_for("runner.metrics_listening", timeout=60)
    assert scrape(url, METRICS_KEY).value("wcu_runner_leader") in (0, 1)
    assert "runner.metrics_without_key" not in runner.actions()

    # Whitespace alone (a secret that did not resolve) is refused, not taken for "no key".
    blank = start("runner", **listener(WCU_METRICS_KEY=" \n")[1])
    assert blank.wait() == 2
    assert "configuration error: WCU_METRICS_KEY: " in blank.output() and "whitespace" in blank.output()

    # Empty is "no key": served open, and said so at start.
    open_url, open_env = listener(WCU_METRICS_KEY="")
    opened = start("runner", **open_env)
    warning = opened.wait_for("runner.metrics_without_key", timeout=60)
    assert warning["level"] == "warning" and "WCU_METRICS_KEY" in warning["msg"]
    assert scrape(open_url).value("wcu_runner_leader") in (0, 1)
    for proc in (runner, opened):
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def metrics_backends(db_url: str) -> set[int]:
    """The PostgreSQL backends of the runner's queue reads (QueueStats' connection)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'wcu-ai-metrics'"
        ).fetchall()
    return {int(row[0]) for row in rows}


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def descriptors_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_database_that_stops_answering_holds_neither_a_scrape_nor_the_shutdown(
    start: Start, db_url: str
) -> None:
    url, env = listener(WCU_METRICS_KEY=METRICS_KEY)
    runner = start("runner", **env)
    runner.wait_for("runner.leader", timeout=60)
    assert scrape(url, METRICS_KEY).value("wcu_task_queue_stats_up") == 1
    [backend] = metrics_backends(db_url)
    try:
        # A frozen backend: its kernel still acknowledges, it never answers (as a silent partition).
        os.kill(backend, signal.SIGSTOP)
    except PermissionError:
        skip_or_fail("the test database's processes cannot be signalled from here")
    try:
        headers = {"Authorization": f"Bearer {METRICS_KEY}"}
        # Prometheus' default scrape timeout: an answer, database or not.
        hung = parse(httpx.get(url, headers=headers, timeout=10).text)
        assert hung.value("wcu_task_queue_stats_up") == 0
        assert "wcu_task_queue_depth" not in hung.names()
        assert hung.value("wcu_runner_leader") == 1
        runner.wait_for("runner.metrics_queue_timeout")

        # Scrapers that give up early leave nothing behind, and share one read.
        before = threads_of(runner.popen.pid)
        for _ in range(20):
            with contextlib.suppress(httpx.TimeoutException):
                httpx.get(url, headers=headers, timeout=0.2)
        assert threads_of(runner.popen.pid) <= before + MAX_CONNECTIONS + 1

        # The aborted read let go of the frozen backend: the next one reads on a new connection.
        again = scrape_until(url, lambda s: s.value("wcu_task_queue_stats_up") == 1)
        assert again.value("wcu_task_queue_stats_up") == 1
        [stopped] = metrics_backends(db_url) - {backend}

        # The shutdown waits for no read either.
        os.kill(stopped, signal.SIGSTOP)
        try:
            httpx.get(url, headers=headers, timeout=10)
            runner.signal(signal.SIGTERM)
            assert runner.wait(timeout=30) == 0
        finally:
            os.kill(stopped, signal.SIGCONT)
    finally:
        os.kill(backend, signal.SIGCONT)


class SlowClients:
    """Connections that send a request line, then one header byte a second, never ending their
    headers (the listener_slowloris of a hostile client), each reconnecting when it is closed."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        self.port = port
        self.end = time.monotonic() + seconds
        self.closed_by_server = 0
        self.held = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._one, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _one(self) -> None:
        while time.monotonic() < self.end:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                time.sleep(0.2)
                continue
            with self._lock:
                self.held += 1
            try:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                while time.monotonic() < self.end:
                    time.sleep(1)
                    sock.sendall(b"a")
            except OSError:
                with self._lock:
                    self.closed_by_server += 1
            finally:
                with self._lock:
                    self.held -= 1
                sock.close()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=15)


def test_slow_clients_on_the_listener_cannot_take_the_descriptors_the_runner_works_with(
    tmp_path: Path, service_env: dict[str, str], db_url: str
) -> None:
    url, env = listener(WCU_METRICS_KEY=METRICS_KEY)
    port = int(env["WCU_RUNNER_METRICS_PORT"])
    # A small container's descriptor limit, as the attack was measured with.
    runner = Proc(
        ["prlimit", "--nofile=256:256", *wcu_ai_command(), "runner"],
        {**service_env, **env},
        tmp_path / "r.log",
    )
    try:
        runner.wait_for("runner.leader", timeout=60)
        pid = runner.popen.pid
        assert wait_task(db_url, insert_task(db_url, "noop"), "succeeded")
        fds, threads = descriptors_of(pid), threads_of(pid)
        slow = SlowClients(port, count=300, seconds=20)
        most_fds, most_threads = fds, threads
        try:
            time.sleep(3)
            # A failover: the runner must open new database connections while under attack.
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            runner.wait_for("runner.leadership_lost", timeout=30)
            task_id = insert_task(db_url, "noop")
            deadline = time.monotonic() + 40
            while task_row(db_url, task_id)["status"] != "succeeded" and time.monotonic() < deadline:
                most_fds = max(most_fds, descriptors_of(pid))
                most_threads = max(most_threads, threads_of(pid))
                time.sleep(0.2)
            assert task_row(db_url, task_id)["status"] == "succeeded", runner.output()[-3000:]
            while time.monotonic() < slow.end:
                most_fds = max(most_fds, descriptors_of(pid))
                most_threads = max(most_threads, threads_of(pid))
                time.sleep(0.2)
        finally:
            slow.join()
        print("MEASURED", fds, most_fds, threads, most_threads, slow.closed_by_server)
        # The listener's share: its connections, and not one descriptor or thread more.
        assert most_fds <= fds + MAX_CONNECTIONS + 8, (fds, most_fds)
        assert most_threads <= threads + MAX_CONNECTIONS + 2, (threads, most_threads)
        # No request head may take longer than the deadline, however slowly it trickles.
        assert slow.closed_by_server >= 300, slow.closed_by_server
        assert scrape_until(url, lambda s: True).value("wcu_runner_leader") == 1
        assert "OSError" not in runner.output() and "Too many open files" not in runner.output()
        runner.signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 0
    finally:
        runner.stop()
