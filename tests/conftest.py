"""Fixtures shared by the whole suite: a real PostgreSQL + pgvector and the real `wcu-ai` commands.

The server is WCU_TEST_DATABASE_URL when set (Nix checks, CI against a real server), else an
embedded pgserver started once per test session. Every test that asks for `db_url` gets a fresh
database on it, so tests never see each other's rows, tables or advisory locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import psycopg.rows
import pytest

from wcu_ai.settings import Settings

API_KEY = "test-key-0123456789abcdef"


@contextlib.contextmanager
def postgres_url(prefix: str = "wcu-test-pg") -> Iterator[str]:
    """WCU_TEST_DATABASE_URL if set, else an embedded pgserver for the block (tests and bench/)."""
    url = os.environ.get("WCU_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    # A short path: the server's unix socket lives in the data directory (108-byte limit).
    server = pgserver.get_server(Path(f"/tmp/{prefix}-{os.getpid()}"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_url() as url:
        yield url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "wcu_test") -> Iterator[str]:
    """A new, empty database on the server, dropped afterwards (with whatever still uses it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_server_url: str) -> Iterator[str]:
    with fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(DATABASE_URL=db_url, api_keys=(API_KEY,), runner_poll_seconds=0.5, log_format="json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wcu_ai_command() -> list[str]:
    """The installed console script, exactly what the images run."""
    script = Path(sys.executable).with_name("wcu-ai")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wcu_ai"]


class Proc:
    """A running `wcu-ai` command whose JSON log lines can be awaited."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def actions(self) -> list[str]:
        return [e.get("action", "") for e in self.events()]

    def wait_for(self, action: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("action") == action and all(event.get(k) == v for k, v in fields.items()):
                    return event
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.argv} exited {self.popen.returncode} before {action}:\n{self.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {action} from {self.argv} within {timeout}s:\n{self.output()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv} did not exit within {timeout}s:\n{self.output()}") from None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


def service_environ(db_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment the images give the processes, pointed at a database, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WCU_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=db_url,
        WCU_API_KEYS=API_KEY,
        WCU_API_HOST="127.0.0.1",
        WCU_API_PORT=str(free_port()),
        WCU_RUNNER_POLL_SECONDS="0.5",
        WCU_RUNNER_STANDBY_POLL_SECONDS="0.2",
        WCU_LOG_FORMAT="json",
        WCU_LOG_LEVEL="INFO",
        WCU_WORK_DIR=str(home / "work"),
        HOME=str(home),
    )
    env.update(extra)
    return env


@pytest.fixture
def service_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return service_environ(db_url, tmp_path)


@pytest.fixture
def start(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Callable[..., Proc]]:
    """start("runner") / start("api", WCU_X="1") / start("-m", "wcu_ai.api.main", python=True)."""
    procs: list[Proc] = []

    def _start(*args: str, python: bool = False, **env: str) -> Proc:
        argv = [sys.executable, *args] if python else [*wcu_ai_command(), *args]
        proc = Proc(argv, {**service_env, **env}, tmp_path / f"proc-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.stop()


def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*wcu_ai_command(), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_http(
    url: str, *, status: int = 200, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, headers=headers, timeout=2.0)
            if last.status_code == status:
                return last
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s; last: {last!r}")


def tools_required() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def insert_task(
    db_url: str, task_type: str, payload: dict[str, Any] | None = None, *, max_attempts: int = 3
) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO ai_server_tasks (task_type, payload, max_attempts) VALUES (%s, %s, %s) RETURNING id",
            (task_type, json.dumps(payload or {}), max_attempts),
        ).fetchone()
    assert row is not None
    return str(row[0])


def task_row(db_url: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute("SELECT * FROM ai_server_tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def wait_task(db_url: str, task_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row = task_row(db_url, task_id)
    while row["status"] != status and time.monotonic() < deadline:
        time.sleep(0.05)
        row = task_row(db_url, task_id)
    assert row["status"] == status, row
    return row


def skip_or_fail(message: str) -> None:
    """A missing system tool: a skip on a developer machine, a failure in CI (CI=true)."""
    if tools_required():
        pytest.fail(f"CI requires it: {message}")
    pytest.skip(message)


def missing_tools_or_fail() -> None:
    """LibreOffice, poppler and Tesseract must be on PATH."""
    from wcu_ai.documents.process import missing_tools

    missing = missing_tools()
    if missing:
        skip_or_fail(
            f"not on PATH: {', '.join(missing)} (apt-get install libreoffice-writer-nogui poppler-utils "
            "tesseract-ocr tesseract-ocr-eng; "
            "the runner image has them)"
        )


@pytest.fixture(autouse=True)
def _document_tools(request: pytest.FixtureRequest) -> None:
    """Every test marked `documents` needs the document tools."""
    if request.node.get_closest_marker("documents") is not None:
        missing_tools_or_fail()
