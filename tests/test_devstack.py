"""`wcu-ai dev` on the embedded PostgreSQL: the README's first command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import free_port, wait_http, wcu_ai_command

SEVEN_TABLES = {
    "ai_sessions",
    "ai_memories",
    "ai_metrics",
    "ai_versions",
    "ai_migrations",
    "ai_server_tasks",
    "parsed_documents",
}


@pytest.mark.embedded_postgres
def test_dev_runs_the_stack_on_an_embedded_database_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WCU_") and k != "DATABASE_URL"}
    port = free_port()
    data = Path(f"/tmp/wcu-dev-test-{os.getpid()}")  # short: the database socket lives in it
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [*wcu_ai_command(), "dev", "--data-dir", str(data), "--port", str(port)],
        env={**env, "WCU_LOG_FORMAT": "json"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", timeout=60)
        wait_http(f"{base}/health/ready", timeout=60)
        output = (tmp_path / "dev.log").read_text()
        key = re.search(r"^  API key +(\S+)$", output, re.MULTILINE)
        url = re.search(r"^  database +(postgresql://\S+)$", output, re.MULTILINE)
        assert key and url, output
        assert (
            httpx.get(f"{base}/v1/tasks", headers={"Authorization": f"Bearer {key.group(1)}"}).status_code
            == 200
        )
        with psycopg.connect(url.group(1)) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert {r[0] for r in rows} >= SEVEN_TABLES

        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0
        output = (tmp_path / "dev.log").read_text()
        assert '"action": "runner.stopped"' in output and '"action": "api.stopped"' in output
        deadline = time.monotonic() + 10
        while (data / "pgdata" / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (data / "pgdata" / "postmaster.pid").exists(), "the embedded database was left running"
        assert (data / "api-key").read_text().strip() == key.group(1)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        log.close()
        subprocess.run(["rm", "-rf", str(data)], check=False)


@pytest.mark.embedded_postgres
def test_dev_on_a_given_database_listens_on_wcu_api_port_and_never_prints_the_password(
    tmp_path: Path,
) -> None:
    """DATABASE_URL with its password in the query string (libpq reads it there too), no --port."""
    from tests.reliability.harness import local_postgres

    env = {k: v for k, v in os.environ.items() if not k.startswith("WCU_") and k != "DATABASE_URL"}
    port = free_port()
    data = tmp_path / "dev-data"
    log_path = tmp_path / "dev.log"
    with local_postgres(Path(f"/tmp/wcu-dev-pw-{os.getpid()}")) as server:
        url = f"postgresql://{server.role}@127.0.0.1:{server.port}/postgres?password={server.password}"
        with log_path.open("wb") as log:
            dev = subprocess.Popen(
                [*wcu_ai_command(), "dev", "--data-dir", str(data)],
                env={**env, "DATABASE_URL": url, "WCU_API_PORT": str(port), "WCU_LOG_FORMAT": "json"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_http(f"http://127.0.0.1:{port}/health/ready", timeout=90)
                dev.send_signal(signal.SIGINT)
                assert dev.wait(60) == 0
            finally:
                if dev.poll() is None:
                    # Ctrl-C first: the runner and the API are in process groups of their own, and a
                    # SIGKILL of `wcu-ai dev` alone would leave them running.
                    dev.send_signal(signal.SIGINT)
                    try:
                        dev.wait(60)
                    except subprocess.TimeoutExpired:
                        dev.kill()
                        dev.wait()
    output = log_path.read_text()
    assert f"API       http://127.0.0.1:{port}" in output
    assert re.search(
        r"^  database +postgresql://wcu_app@127\.0\.0\.1:\d+/postgres\?password=\*\*\*$", output, re.M
    )
    assert server.password not in output
