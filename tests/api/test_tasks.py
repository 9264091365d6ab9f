"""/v1/tasks over real HTTP, served by the real `wcu-ai api` process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import API_KEY, insert_task


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    keys = f"other-key-0123456789,{API_KEY}"
    with service_stack(
        pg_server_url, tmp_path_factory.mktemp("api"), runner=False, WCU_API_KEYS=keys
    ) as stack:
        yield stack


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Basic abc"}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "invalid API key"),
    ],
)
def test_v1_needs_a_valid_bearer_key(stack: ServiceStack, headers: dict[str, str], detail: str) -> None:
    response = httpx.get(f"{stack.base}/v1/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["www-authenticate"] == "Bearer"


def test_every_configured_key_is_accepted(stack: ServiceStack) -> None:
    assert stack.get("/v1/tasks", key="other-key-0123456789").status_code == 200
    assert stack.get("/v1/tasks").status_code == 200


def test_get_task_returns_its_state(stack: ServiceStack) -> None:
    task_id = insert_task(stack.db_url, "noop", {"a": 1})
    body = stack.get(f"/v1/tasks/{task_id}").json()
    assert (body["id"], body["task_type"], body["status"], body["attempts"]) == (task_id, "noop", "queued", 0)
    assert "payload" not in body and "locked_by" not in body


def test_unknown_and_malformed_task_ids(stack: ServiceStack) -> None:
    missing = uuid.uuid4()
    response = stack.get(f"/v1/tasks/{missing}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no task with id {missing}"}
    assert stack.get("/v1/tasks/not-a-uuid").status_code == 422


def test_list_filters_and_pages(stack: ServiceStack) -> None:
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
def test_bad_query_parameters_are_422_with_a_message(stack: ServiceStack, params: dict[str, object]) -> None:
    response = stack.get("/v1/tasks", **params)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_openapi_is_published_without_a_key(stack: ServiceStack) -> None:
    assert httpx.get(f"{stack.base}/docs").status_code == 200
    spec = httpx.get(f"{stack.base}/openapi.json").json()
    assert {"/health", "/health/ready", "/v1/tasks", "/v1/tasks/{task_id}"} <= set(spec["paths"])


def test_requests_are_logged_as_json_with_their_request_id_and_no_keys(stack: ServiceStack) -> None:
    response = httpx.get(
        f"{stack.base}/v1/tasks", headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": "req-42"}
    )
    assert response.headers["x-request-id"] == "req-42"
    event = stack.api.wait_for("http.request", request_id="req-42")
    assert (event["method"], event["path"], event["status"]) == ("GET", "/v1/tasks", 200)
    assert API_KEY not in stack.api.output() and "other-key-0123456789" not in stack.api.output()
