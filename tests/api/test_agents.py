"""Agents end to end: real Agno agents in the real API process, real runner, real PostgreSQL.

The model is tests/fake_model.py (WCU_AGENT_MODEL=python:tests.fake_model:make): deterministic,
no network. It searches the documents through the assistant's tool and answers from the
passages the tool returned, so what these tests check is our wiring, not a model's talent.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import psycopg.rows
import pytest

from tests.agents.test_model import sdks_or_fail
from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import API_KEY, Proc, missing_tools_or_fail, run_cli, wait_http
from tests.factories import make_pdf

pytestmark = pytest.mark.documents

ROOT = str(Path(__file__).resolve().parents[2])
MODEL = "python:tests.fake_model:make"


def tables(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {r[0] for r in rows}


def rows(db_url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query, params).fetchall()


class AgentStack:
    def __init__(self, stack: ServiceStack, document_id: str, marker: str, tables_before: set[str]) -> None:
        self.stack = stack
        self.document_id = document_id
        self.marker = marker
        self.tables_before = tables_before

    def run(
        self, message: str, *, user_id: str, session_id: str | None = None, **extra: Any
    ) -> httpx.Response:
        body = {"message": message, "user_id": user_id, **extra}
        if session_id is not None:
            body["session_id"] = session_id
        return httpx.post(
            f"{self.stack.base}/v1/agents/assistant/runs", json=body, headers=self.stack.auth, timeout=30
        )


@pytest.fixture(scope="module")
def agents(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    missing_tools_or_fail()
    tmp = tmp_path_factory.mktemp("agents")
    env = {"WCU_AGENT_MODEL": MODEL, "WCU_AGENT_METRICS_DELAY_SECONDS": "0", "PYTHONPATH": ROOT}
    with service_stack(pg_server_url, tmp, **env) as stack:
        before = tables(stack.db_url)
        marker = uuid.uuid4().hex[:8]
        pages = [
            f"Lighthouse{marker} keepers log the weather every four hours.",
            f"Orchard{marker} growers rent bees in spring.",
        ]
        document_id = stack.upload(make_pdf(tmp / "guide.pdf", pages)).json()["document_id"]
        assert stack.wait_document(document_id)["status"] == "parsed"
        yield AgentStack(stack, document_id, marker, before)


def test_the_assistant_is_listed(agents: AgentStack) -> None:
    body = agents.stack.get("/v1/agents").json()
    assert [(a["id"], a["model"]) for a in body["items"]] == [("assistant", MODEL)]


def test_a_run_answers_from_the_searched_passages_and_cites_them(agents: AgentStack) -> None:
    response = agents.run(f"lighthouse{agents.marker} weather", user_id="ada")
    assert response.status_code == 200, response.text
    body = response.json()
    assert f"Lighthouse{agents.marker} keepers log the weather" in body["reply"]
    assert body["citations"] == [{"document_id": agents.document_id, "page": 1}]
    [session] = rows(
        agents.stack.db_url,
        "SELECT user_id, agent_id FROM ai_sessions WHERE session_id = %s",
        body["session_id"],
    )
    assert session == {"user_id": "ada", "agent_id": "assistant"}


def test_a_follow_up_in_the_same_session_sees_the_history(agents: AgentStack) -> None:
    first = agents.run(f"orchard{agents.marker} bees", user_id="bob").json()
    assert first["citations"] == [{"document_id": agents.document_id, "page": 2}]
    follow_up = agents.run("What did I ask before?", user_id="bob", session_id=first["session_id"]).json()
    assert follow_up["session_id"] == first["session_id"]
    assert follow_up["reply"] == f"Earlier you asked: orchard{agents.marker} bees"

    # A fresh session has no such history.
    fresh = agents.run("What did I ask before?", user_id="bob").json()
    assert fresh["session_id"] != first["session_id"] and fresh["reply"] == "Earlier you asked: "

    history = agents.stack.get(f"/v1/agents/assistant/sessions/{first['session_id']}").json()
    assert [(t["message"], t["citations"]) for t in history["turns"]] == [
        (f"orchard{agents.marker} bees", [{"document_id": agents.document_id, "page": 2}]),
        ("What did I ask before?", []),
    ]
    assert history["turns"][1]["reply"] == follow_up["reply"]
    listed = agents.stack.get("/v1/agents/assistant/sessions", user_id="bob").json()["items"]
    assert {s["session_id"] for s in listed} == {first["session_id"], fresh["session_id"]}
    assert agents.stack.get("/v1/agents/assistant/sessions", user_id="nobody").json() == {"items": []}


def test_a_session_belongs_to_its_user(agents: AgentStack) -> None:
    session_id = agents.run("What did I ask before?", user_id="carol").json()["session_id"]
    stolen = agents.run("What did I ask before?", user_id="mallory", session_id=session_id)
    assert stolen.status_code == 404
    assert (
        agents.stack.get(f"/v1/agents/assistant/sessions/{session_id}", user_id="mallory").status_code == 404
    )
    assert agents.stack.get(f"/v1/agents/assistant/sessions/{session_id}", user_id="carol").status_code == 200


def test_deleting_a_session_forgets_it(agents: AgentStack) -> None:
    session_id = agents.run("What did I ask before?", user_id="dan").json()["session_id"]
    url = f"{agents.stack.base}/v1/agents/assistant/sessions/{session_id}"
    assert httpx.delete(url, headers=agents.stack.auth).status_code == 204
    assert httpx.delete(url, headers=agents.stack.auth).status_code == 404
    assert agents.stack.get(f"/v1/agents/assistant/sessions/{session_id}").status_code == 404
    assert rows(agents.stack.db_url, "SELECT 1 FROM ai_sessions WHERE session_id = %s", session_id) == []


def test_a_memory_lands_in_ai_memories(agents: AgentStack) -> None:
    body = agents.run("Remember that my favourite colour is teal", user_id="erin").json()
    assert body["reply"] == "I will remember that."
    stored = rows(agents.stack.db_url, "SELECT memory FROM ai_memories WHERE user_id = %s", "erin")
    assert stored == [{"memory": "Remember that my favourite colour is teal"}]
    listed = agents.stack.get("/v1/users/erin/memories").json()["items"]
    assert [m["memory"] for m in listed] == ["Remember that my favourite colour is teal"]
    assert agents.stack.get("/v1/users/nobody/memories").json() == {"items": []}


def test_streaming_answers_server_sent_events(agents: AgentStack) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    body = {"message": f"lighthouse{agents.marker}", "user_id": "fay", "stream": True}
    with httpx.stream(
        "POST",
        f"{agents.stack.base}/v1/agents/assistant/runs",
        json=body,
        headers=agents.stack.auth,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    names = [n for n, _ in events]
    assert names[0] == "run_started" and names[-1] == "done", names
    assert "citations" in names and names.count("content") > 1
    done = events[-1][1]
    assert "".join(d["delta"] for n, d in events if n == "content") == done["reply"]
    assert f"Lighthouse{agents.marker}" in done["reply"]
    assert done["citations"] == [{"document_id": agents.document_id, "page": 1}]
    assert events[0][1]["session_id"] == done["session_id"]
    history = agents.stack.get(f"/v1/agents/assistant/sessions/{done['session_id']}").json()
    assert [t["reply"] for t in history["turns"]] == [done["reply"]]


def test_metrics_land_in_ai_metrics(agents: AgentStack) -> None:
    agents.run("What did I ask before?", user_id="gus")
    deadline = time.monotonic() + 20
    metrics: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        metrics = rows(agents.stack.db_url, "SELECT agent_runs_count, token_metrics FROM ai_metrics")
        if metrics and metrics[0]["agent_runs_count"] >= 1:
            break
        time.sleep(0.2)
    assert metrics and metrics[0]["agent_runs_count"] >= 1, metrics
    assert metrics[0]["token_metrics"]["total_tokens"] > 0
    done = rows(
        agents.stack.db_url,
        "SELECT status FROM ai_server_tasks WHERE task_type = 'calculate_agent_metrics' AND status <> 'queued'",
    )
    assert done and {r["status"] for r in done} <= {"running", "succeeded"}


def test_unknown_agent_is_404_and_everything_needs_the_key(agents: AgentStack) -> None:
    response = httpx.post(
        f"{agents.stack.base}/v1/agents/nobody/runs",
        json={"message": "hi", "user_id": "ada"},
        headers=agents.stack.auth,
    )
    assert response.status_code == 404 and "GET /v1/agents" in response.json()["detail"]
    assert agents.stack.get("/v1/agents/nobody/sessions", user_id="ada").status_code == 404
    for path in ("/v1/agents", "/v1/agents/assistant/sessions", "/v1/users/ada/memories"):
        assert agents.stack.get(path, key=None).status_code == 401
    anonymous = httpx.post(
        f"{agents.stack.base}/v1/agents/assistant/runs", json={"message": "hi", "user_id": "ada"}
    )
    assert anonymous.status_code == 401


def test_agent_runs_create_no_table_and_log_no_prompt(agents: AgentStack) -> None:
    # Last of the runs in this module: every run above has happened. The runner owns the schema.
    assert tables(agents.stack.db_url) == agents.tables_before
    logs = agents.stack.api.output()
    assert "agents.run" in logs
    assert "favourite colour" not in logs and "What did I ask" not in logs


def test_without_a_model_the_agent_routes_are_503_and_the_rest_works(
    pg_server_url: str, tmp_path: Path
) -> None:
    with service_stack(pg_server_url, tmp_path, runner=False) as stack:
        for path in ("/v1/agents", "/v1/agents/assistant/sessions", "/v1/users/ada/memories"):
            response = stack.get(path, user_id="ada")
            assert response.status_code == 503, path
            assert "WCU_AGENT_MODEL" in response.json()["detail"]
        run = httpx.post(
            f"{stack.base}/v1/agents/assistant/runs",
            json={"message": "hi", "user_id": "ada"},
            headers=stack.auth,
        )
        assert run.status_code == 503
        assert stack.get("/v1/agents", key=None).status_code == 401
        assert stack.get("/v1/search", q="anything").status_code == 200
        wait_http(f"{stack.base}/health/ready", headers={"Authorization": f"Bearer {API_KEY}"})


def test_a_bad_model_spec_stops_the_api_at_start(service_env: dict[str, str]) -> None:
    env = {**service_env, "WCU_AGENT_MODEL": "cohere:command-r", "PYTHONPATH": ROOT}
    result = run_cli("api", env=env)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "wcu-ai: configuration error: WCU_AGENT_MODEL: unknown provider 'cohere'; use one of openai, "
        "azure_openai, anthropic, bedrock as provider:model, or python:module:factory"
    ]


PROVIDER_SPECS = [
    ("openai:gpt-4o-mini", ("openai",)),
    ("azure_openai:gpt-4o-mini", ("openai",)),
    ("anthropic:claude-sonnet-4-5", ("anthropic",)),
    ("bedrock:amazon.nova-lite-v1:0", ("boto3", "aioboto3")),
]


@pytest.mark.parametrize(("spec", "sdks"), PROVIDER_SPECS)
def test_each_advertised_provider_starts_the_api_with_its_agents(
    spec: str, sdks: tuple[str, ...], start: Callable[..., Proc]
) -> None:
    # No credentials and no network: the start imports the SDK's sync and async clients and builds
    # the model; a request would be the provider's to refuse.
    sdks_or_fail(sdks)
    api = start("api", WCU_AGENT_MODEL=spec)
    api.wait_for("api.started", timeout=60, agents=True)
    port = next(e["port"] for e in api.events() if e.get("action") == "api.started")
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    api.signal(signal.SIGTERM)
    assert api.wait() == 0, api.output()[-2000:]


def test_bedrock_without_its_async_sdk_stops_the_api_at_start(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    # The bedrock extra once installed boto3 only: the API started, and every run (async) failed.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nsys.modules['aioboto3'] = None  # as if not installed\n"
    )
    env = {**service_env, "WCU_AGENT_MODEL": "bedrock:amazon.nova-lite-v1:0", "PYTHONPATH": str(shim)}
    result = run_cli("api", env=env)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(
        "wcu-ai: configuration error: WCU_AGENT_MODEL: the bedrock model needs its SDK: "
        "install wcu-ai-server[bedrock]"
    ), line
    assert "aioboto3" in line


def test_a_failing_model_or_database_is_an_error_never_a_made_up_answer(
    pg_server_url: str, tmp_path: Path
) -> None:
    env = {
        "WCU_AGENT_MODEL": "python:tests.fake_model:failing",
        "WCU_DB_CONNECT_TIMEOUT_SECONDS": "1",
        "PYTHONPATH": ROOT,
    }
    with service_stack(pg_server_url, tmp_path, runner=False, **env) as stack:
        url = f"{stack.base}/v1/agents/assistant/runs"
        response = httpx.post(url, json={"message": "hi", "user_id": "ada"}, headers=stack.auth, timeout=30)
        assert response.status_code == 502
        assert "secret-in-error-text" not in response.text
        body = {"message": "hi", "user_id": "ada", "stream": True}
        streamed = httpx.post(url, json=body, headers=stack.auth, timeout=30)
        assert streamed.status_code == 200
        assert streamed.text.startswith("event: run_started")
        assert streamed.text.rstrip().splitlines()[-2:] == [
            "event: error",
            'data: {"detail": "The agent could not answer (its model or its storage failed); retry later."}',
        ]

        # Agno's storage takes an unreachable database for missing tables (empty lists, unsaved
        # runs): the routes check the database first.
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{urlsplit(stack.db_url).path.lstrip("/")}" WITH (FORCE)')
        for path in ("/v1/agents/assistant/sessions", "/v1/users/ada/memories"):
            response = stack.get(path, user_id="ada")
            assert (response.status_code, response.json()) == (
                503,
                {"detail": "the database is unavailable; retry later"},
            ), path
