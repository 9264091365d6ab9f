"""/v1/tasks over real HTTP, served by the real `wcu-ai api` process."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import API_KEY, Proc, free_port, insert_task, wait_http, wcu_ai_command, with_database
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings


@dataclass
class Stack:
    base: str
    db_url: str
    api: Proc

    def get(self, path: str, *, key: str | None = API_KEY, **params: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.base}{path}", headers=headers, params=params, timeout=10)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = f"wcu_api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = with_database(pg_server_url, name)
    MigrationTool(Settings(DATABASE_URL=db_url)).run_up()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WCU_")}
    env.update(
        DATABASE_URL=db_url,
        WCU_API_KEYS=f"other-key-0123456789,{API_KEY}",
        WCU_API_HOST="127.0.0.1",
        WCU_API_PORT=str(port),
        WCU_LOG_FORMAT="json",
    )
    api = Proc([*wcu_ai_command(), "api"], env, Path(tmp_path_factory.mktemp("api")) / "api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready")
        yield Stack(f"http://127.0.0.1:{port}", db_url, api)
    finally:
        api.signal(signal.SIGTERM)
        api.wait()
        api.stop()
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Basic abc"}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "invalid API key"),
    ],
)
def test_v1_needs_a_valid_bearer_key(stack: Stack, headers: dict[str, str], detail: str) -> None:
    response = httpx.get(f"{stack.base}/v1/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["www-authenticate"] == "Bearer"


def test_every_configured_key_is_accepted(stack: Stack) -> None:
    assert stack.get("/v1/tasks", key="other-key-0123456789").status_code == 200
    assert stack.get("/v1/tasks").status_code == 200


def test_get_task_returns_its_state(stack: Stack) -> None:
    task_id = insert_task(stack.db_url, "noop", {"a": 1})
    body = stack.get(f"/v1/tasks/{task_id}").json()
    assert (body["id"], body["task_type"], body["status"], body["attempts"]) == (task_id, "noop", "queued", 0)
    assert "payload" not in body and "locked_by" not in body


def test_unknown_and_malformed_task_ids(stack: Stack) -> None:
    missing = uuid.uuid4()
    response = stack.get(f"/v1/tasks/{missing}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no task with id {missing}"}
    assert stack.get("/v1/tasks/not-a-uuid").status_code == 422


def test_list_filters_and_pages(stack: Stack) -> None:
    kind = f"kind_{uuid.uuid4().hex[:6]}"
    ids = {insert_task(stack.db_url, kind, {"i": i}) for i in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"task_type": kind, "status": "queued", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = stack.get("/v1/tasks", **params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert stack.get("/v1/tasks", task_type=kind, status="failed").json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"status": "exploded"},
        {"limit": 0},
        {"limit": 1000},
        {"cursor": "bm90IGEgY3Vyc29y"},
        {"cursor": "%%%"},
    ],
)
def test_bad_query_parameters_are_422_with_a_message(stack: Stack, params: dict[str, object]) -> None:
    response = stack.get("/v1/tasks", **params)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_openapi_is_published_without_a_key(stack: Stack) -> None:
    assert httpx.get(f"{stack.base}/docs").status_code == 200
    spec = httpx.get(f"{stack.base}/openapi.json").json()
    assert {"/health", "/health/ready", "/v1/tasks", "/v1/tasks/{task_id}"} <= set(spec["paths"])


def test_requests_are_logged_as_json_with_their_request_id_and_no_keys(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.base}/v1/tasks", headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": "req-42"}
    )
    assert response.headers["x-request-id"] == "req-42"
    event = stack.api.wait_for("http.request", request_id="req-42")
    assert (event["method"], event["path"], event["status"]) == ("GET", "/v1/tasks", 200)
    assert API_KEY not in stack.api.output() and "other-key-0123456789" not in stack.api.output()
