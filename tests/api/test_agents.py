"""Agents end to end: real Agno agents in the real API process, real runner, real PostgreSQL.

The model is tests/fake_model.py (WCU_AGENT_MODEL=python:tests.fake_model:make): deterministic,
no network. It searches the documents through the assistant's tool and answers from the
passages the tool returned, so what these tests check is our wiring, not a model's talent. A
"[hold PATH]" in a message keeps the run's model call waiting until the test creates PATH: runs
in flight are made by opening and closing gates, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import psycopg.rows
import pytest

from tests import sse
from tests.agents.test_model import sdks_or_fail
from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import API_KEY, Proc, missing_tools_or_fail, run_cli, wait_http
from tests.factories import make_pdf
from tests.fake_model import FAIL_MIDWAY, NUL_SEARCH, SECRET
from tests.scrape import scrape

pytestmark = pytest.mark.documents

ROOT = str(Path(__file__).resolve().parents[2])
MODEL = "python:tests.fake_model:make"
HEARTBEAT_SECONDS = "0.2"


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


def stored_runs(db_url: str, session_id: str) -> list[tuple[str, str]]:
    """(run_id, Agno status) of each run stored in the session, as PostgreSQL has them."""
    found = rows(db_url, "SELECT runs FROM ai_sessions WHERE session_id = %s", session_id)
    return [(r["run_id"], r["status"]) for r in (found[0]["runs"] or [])] if found else []


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def json_lines_only(output: str) -> list[dict[str, Any]]:
    """Every line the API wrote is one JSON object (nothing printed around the logging)."""
    events = []
    for line in output.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
    return events


class AgentStack:
    def __init__(
        self, stack: ServiceStack, tmp: Path, document_id: str, marker: str, tables_before: set[str]
    ) -> None:
        self.stack = stack
        self.tmp = tmp
        self.document_id = document_id
        self.marker = marker
        self.tables_before = tables_before
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="client")

    @property
    def runs_url(self) -> str:
        return f"{self.stack.base}/v1/agents/assistant/runs"

    def run(
        self, message: str, *, user_id: str, session_id: str | None = None, **extra: Any
    ) -> httpx.Response:
        body = {"message": message, "user_id": user_id, **extra}
        if session_id is not None:
            body["session_id"] = session_id
        return httpx.post(self.runs_url, json=body, headers=self.stack.auth, timeout=60)

    def run_later(
        self, message: str, *, user_id: str, session_id: str | None = None
    ) -> Future[httpx.Response]:
        """The same request from another client, sent now and answered whenever."""
        return self.pool.submit(self.run, message, user_id=user_id, session_id=session_id)

    def gate(self) -> Path:
        return self.tmp / f"gate-{uuid.uuid4().hex}"

    def history(self, session_id: str, **params: Any) -> httpx.Response:
        return self.stack.get(f"/v1/agents/assistant/sessions/{session_id}", **params)

    def waits_for_session(self, session_id: str) -> None:
        """The API logged that a run of this session waits for the session's current run."""
        self.stack.api.wait_for("agents.session_wait", timeout=30, session_id=session_id)

    def locked(self, session_id: str) -> bool:
        query = "SELECT 1 FROM ai_agent_session_locks WHERE session_id = %s"
        return bool(rows(self.stack.db_url, query, session_id))


@contextlib.contextmanager
def agent_stack(pg_server_url: str, tmp: Path, **env: str) -> Iterator[AgentStack]:
    """A service with the fake model and a parsed document with two known pages."""
    missing_tools_or_fail()
    environ = {
        "WCU_AGENT_MODEL": MODEL,
        "WCU_AGENT_METRICS_DELAY_SECONDS": "0",
        "WCU_AGENT_STREAM_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS,
        "PYTHONPATH": ROOT,
        **env,
    }
    with service_stack(pg_server_url, tmp, **environ) as stack:
        before = tables(stack.db_url)
        marker = uuid.uuid4().hex[:8]
        pages = [
            f"Lighthouse{marker} keepers log the weather every four hours.",
            f"Orchard{marker} growers rent bees in spring.",
        ]
        document_id = stack.upload(make_pdf(tmp / "guide.pdf", pages)).json()["document_id"]
        assert stack.wait_document(document_id)["status"] == "parsed"
        agents = AgentStack(stack, tmp, document_id, marker, before)
        try:
            yield agents
        finally:
            agents.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def agents(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    # A patient second run: it waits for the first (up to 60 s) instead of being refused.
    with agent_stack(
        pg_server_url, tmp_path_factory.mktemp("agents"), WCU_AGENT_SESSION_WAIT_SECONDS="60"
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def impatient(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    # A second run of a busy session is refused at once; Agno's statements stop after 3 s.
    with agent_stack(
        pg_server_url,
        tmp_path_factory.mktemp("impatient"),
        WCU_AGENT_SESSION_WAIT_SECONDS="0",
        WCU_DB_STATEMENT_TIMEOUT_SECONDS="3",
        WCU_API_METRICS_ENABLED="true",
        WCU_METRICS_KEY=METRICS_KEY,
    ) as stack:
        yield stack


def read_stream(
    agents: AgentStack,
    body: dict[str, Any],
    on_event: Callable[[sse.Event | sse.Comment], None] | None = None,
) -> list[sse.Event | sse.Comment]:
    """The run's server-sent events through the WHATWG parser (tests/sse.py), comments included."""
    seen: list[sse.Event | sse.Comment] = []
    with httpx.stream(
        "POST", agents.runs_url, json={**body, "stream": True}, headers=agents.stack.auth, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for item in sse.parse(response.iter_bytes()):
            seen.append(item)
            if on_event is not None:
                on_event(item)
    return seen


def events_of(items: list[sse.Event | sse.Comment]) -> list[tuple[str, dict[str, Any]]]:
    return [(i.type, json.loads(i.data)) for i in items if isinstance(i, sse.Event)]


METRICS_KEY = "agents-metrics-key-0123456789"


def runs_counted(agents: AgentStack) -> dict[str, float]:
    """wcu_agent_runs_total by outcome, scraped from the API (the impatient stack has metrics on)."""
    scraped = scrape(f"{agents.stack.base}/metrics", METRICS_KEY)
    return {
        labels["outcome"]: scraped.value("wcu_agent_runs_total", **labels)
        for labels in scraped.labels_of("wcu_agent_runs_total")
    }


# -- the basics --------------------------------------------------------------------------------


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
    assert stored_runs(agents.stack.db_url, body["session_id"]) == [(body["run_id"], "COMPLETED")]
    assert not agents.locked(body["session_id"])  # the lock went with the run


def test_a_follow_up_in_the_same_session_sees_the_history(agents: AgentStack) -> None:
    first = agents.run(f"orchard{agents.marker} bees", user_id="bob").json()
    assert first["citations"] == [{"document_id": agents.document_id, "page": 2}]
    follow_up = agents.run("What did I ask before?", user_id="bob", session_id=first["session_id"]).json()
    assert follow_up["session_id"] == first["session_id"]
    assert follow_up["reply"] == f"Earlier you asked: orchard{agents.marker} bees"

    # A fresh session has no such history.
    fresh = agents.run("What did I ask before?", user_id="bob").json()
    assert fresh["session_id"] != first["session_id"] and fresh["reply"] == "Earlier you asked: "

    history = agents.history(first["session_id"]).json()
    assert [(t["status"], t["message"], t["citations"]) for t in history["turns"]] == [
        ("completed", f"orchard{agents.marker} bees", [{"document_id": agents.document_id, "page": 2}]),
        ("completed", "What did I ask before?", []),
    ]
    assert history["turns"][1]["reply"] == follow_up["reply"]
    listed = agents.stack.get("/v1/agents/assistant/sessions", user_id="bob").json()["items"]
    assert {s["session_id"] for s in listed} == {first["session_id"], fresh["session_id"]}
    assert agents.stack.get("/v1/agents/assistant/sessions", user_id="nobody").json() == {"items": []}


def test_a_session_belongs_to_its_user(agents: AgentStack) -> None:
    session_id = agents.run("What did I ask before?", user_id="carol").json()["session_id"]
    stolen = agents.run("What did I ask before?", user_id="mallory", session_id=session_id)
    assert stolen.status_code == 404
    assert agents.history(session_id, user_id="mallory").status_code == 404
    assert agents.history(session_id, user_id="carol").status_code == 200
    assert len(stored_runs(agents.stack.db_url, session_id)) == 1


def test_deleting_a_session_needs_its_owner_and_forgets_it(agents: AgentStack) -> None:
    session_id = agents.run("What did I ask before?", user_id="dan").json()["session_id"]
    url = f"{agents.stack.base}/v1/agents/assistant/sessions/{session_id}"
    auth = agents.stack.auth
    # Without a user it once deleted anyone's session.
    assert httpx.delete(url, headers=auth, timeout=30).status_code == 422
    assert httpx.delete(url, headers=auth, params={"user_id": "mallory"}, timeout=30).status_code == 404
    assert agents.history(session_id, user_id="dan").status_code == 200
    assert httpx.delete(url, headers=auth, params={"user_id": "dan"}, timeout=30).status_code == 204
    assert httpx.delete(url, headers=auth, params={"user_id": "dan"}, timeout=30).status_code == 404
    assert agents.history(session_id).status_code == 404
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
    items = read_stream(agents, {"message": f"lighthouse{agents.marker}", "user_id": "fay"})
    events = events_of(items)
    names = [n for n, _ in events]
    assert names[0] == "run_started" and names[-1] == "done", names
    assert "citations" in names and names.count("content") > 1
    done = events[-1][1]
    assert "".join(d["delta"] for n, d in events if n == "content") == done["reply"]
    assert f"Lighthouse{agents.marker}" in done["reply"]
    assert done["citations"] == [{"document_id": agents.document_id, "page": 1}]
    assert events[0][1] == {"session_id": done["session_id"], "run_id": done["run_id"]}
    history = agents.history(done["session_id"]).json()
    assert [(t["status"], t["reply"]) for t in history["turns"]] == [("completed", done["reply"])]


def test_metrics_land_in_ai_metrics(agents: AgentStack) -> None:
    session_id = agents.run("What did I ask before?", user_id="gus").json()["session_id"]
    # The first run of a new session has its tokens in the session, where Agno's metrics read them.
    [stored] = rows(
        agents.stack.db_url,
        "SELECT session_data, agent_data FROM ai_sessions WHERE session_id = %s",
        session_id,
    )
    assert stored["session_data"]["session_metrics"]["total_tokens"] > 0
    assert stored["agent_data"]["agent_id"] == "assistant"
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
        timeout=30,
    )
    assert response.status_code == 404 and "GET /v1/agents" in response.json()["detail"]
    assert agents.stack.get("/v1/agents/nobody/sessions", user_id="ada").status_code == 404
    for path in ("/v1/agents", "/v1/agents/assistant/sessions", "/v1/users/ada/memories"):
        assert agents.stack.get(path, key=None).status_code == 401
    anonymous = httpx.post(agents.runs_url, json={"message": "hi", "user_id": "ada"}, timeout=30)
    assert anonymous.status_code == 401


# -- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"message": "hi", "user_id": "a\x00b"},
        {"message": "hi", "user_id": "ada", "session_id": "a\x00b"},
        {"message": "hi", "user_id": "ada", "session_id": "a/b"},  # once a session no URL could reach
        {"message": "hi", "user_id": "ada", "session_id": ".."},
        {"message": "hi", "user_id": "ada/x"},
        {"message": "hi", "user_id": "x" * 201},
        {"message": "hi\x00", "user_id": "ada"},
        {"message": "hi \ud800", "user_id": "ada"},  # a lone surrogate: no UTF-8 form, once a 500
        {"message": "hi", "user_id": "ada\ud83d"},
        {"message": "hi", "user_id": "ada", "session_id": "s-\ud83d"},
    ],
)
def test_unsafe_ids_and_nul_in_a_run_are_422(agents: AgentStack, body: dict[str, Any]) -> None:
    before = rows(agents.stack.db_url, "SELECT count(*) AS n FROM ai_sessions")
    marker = f"refused-{uuid.uuid4().hex[:8]}"
    body = {**body, "message": f"{body['message']} {marker}"}
    for stream in (False, True):
        response = httpx.post(
            agents.runs_url,
            content=json.dumps({**body, "stream": stream}),  # ASCII JSON: NUL as \u0000
            headers={**agents.stack.auth, "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert rows(agents.stack.db_url, "SELECT count(*) AS n FROM ai_sessions") == before
    assert marker not in agents.stack.api.output()  # the refused message's text is logged nowhere


def test_nul_in_an_id_of_every_agent_route_is_422(agents: AgentStack) -> None:
    base, auth = agents.stack.base, agents.stack.auth
    requests = [
        ("GET", "/v1/agents/assistant/sessions", {"user_id": "a\x00b"}),
        ("GET", "/v1/agents/assistant/sessions/a%00b", {}),
        ("GET", "/v1/agents/assistant/sessions/abc", {"user_id": "a\x00b"}),
        ("DELETE", "/v1/agents/assistant/sessions/a%00b", {"user_id": "ada"}),
        ("DELETE", "/v1/agents/assistant/sessions/abc", {"user_id": "a\x00b"}),
        ("GET", "/v1/users/a%00b/memories", {}),
    ]
    for method, path, params in requests:
        response = httpx.request(method, base + path, params=params, headers=auth, timeout=30)
        assert response.status_code == 422, (method, path, response.text)
        assert isinstance(response.json()["detail"], list)


# -- one run at a time per session ---------------------------------------------------------------


def test_two_runs_at_once_in_one_session_are_both_stored(agents: AgentStack) -> None:
    session_id = f"chat-{uuid.uuid4().hex}"
    gate = agents.gate()
    first = agents.run_later(f"[hold {gate}] lighthouse{agents.marker}", user_id="hal", session_id=session_id)
    wait_until(lambda: agents.locked(session_id), "the first run holds the session")
    second = agents.run_later("What did I ask before?", user_id="hal", session_id=session_id)
    agents.waits_for_session(session_id)  # the second is in, waiting: now let the first go on
    gate.touch()
    answers = [first.result(timeout=60), second.result(timeout=60)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    bodies = [a.json() for a in answers]
    # The second ran after the first was stored: it saw it as history.
    assert bodies[1]["reply"] == f"Earlier you asked: [hold {gate}] lighthouse{agents.marker}"
    assert stored_runs(agents.stack.db_url, session_id) == [
        (bodies[0]["run_id"], "COMPLETED"),
        (bodies[1]["run_id"], "COMPLETED"),
    ]


def test_many_clients_at_once_in_one_session_lose_no_turn(agents: AgentStack) -> None:
    # Each run awaits its document search between reading the session and writing it back, so
    # runs of one process interleave there: without the lock only the last write's turn stayed.
    session_id = f"burst-{uuid.uuid4().hex}"
    futures = [
        agents.run_later(f"orchard{agents.marker} bees {i}", user_id="ida", session_id=session_id)
        for i in range(6)
    ]
    answers = [f.result(timeout=120) for f in futures]
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    stored = stored_runs(agents.stack.db_url, session_id)
    assert sorted(r for r, _ in stored) == sorted(a.json()["run_id"] for a in answers)
    assert {s for _, s in stored} == {"COMPLETED"}


def test_a_new_session_is_owned_from_its_first_request(agents: AgentStack) -> None:
    # The takeover race: while ann's first run of a client-chosen id was in flight, ben posted to
    # the same id; his run was stored, he owned the session, and ann got 200 and then 404.
    session_id = f"mine-{uuid.uuid4().hex}"
    gate = agents.gate()
    ann = agents.run_later(f"[hold {gate}] orchard{agents.marker}", user_id="ann", session_id=session_id)
    wait_until(
        lambda: rows(
            agents.stack.db_url, "SELECT user_id FROM ai_sessions WHERE session_id = %s", session_id
        ),
        "ann's session is claimed",
    )
    ben = agents.run_later("What did I ask before?", user_id="ben", session_id=session_id)
    agents.waits_for_session(session_id)
    gate.touch()
    assert ann.result(timeout=60).status_code == 200
    assert ben.result(timeout=60).status_code == 404
    [owner] = rows(agents.stack.db_url, "SELECT user_id FROM ai_sessions WHERE session_id = %s", session_id)
    assert owner == {"user_id": "ann"}
    assert len(stored_runs(agents.stack.db_url, session_id)) == 1
    assert agents.history(session_id, user_id="ann").json()["runs"] == 1
    assert agents.history(session_id, user_id="ben").status_code == 404


def test_a_second_run_that_outwaits_the_first_is_409_and_nothing_is_lost(impatient: AgentStack) -> None:
    session_id = f"busy-{uuid.uuid4().hex}"
    counted_before = runs_counted(impatient)
    gate = impatient.gate()
    first = impatient.run_later(f"[hold {gate}] lighthouse", user_id="jo", session_id=session_id)
    wait_until(lambda: impatient.locked(session_id), "the first run holds the session")
    second = impatient.run("What did I ask before?", user_id="jo", session_id=session_id)
    streamed = httpx.post(
        impatient.runs_url,
        json={"message": "and now?", "user_id": "jo", "session_id": session_id, "stream": True},
        headers=impatient.stack.auth,
        timeout=30,
    )
    deleted = httpx.delete(
        f"{impatient.stack.base}/v1/agents/assistant/sessions/{session_id}",
        params={"user_id": "jo"},
        headers=impatient.stack.auth,
        timeout=30,
    )
    for refused in (second, streamed, deleted):
        assert refused.status_code == 409, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "still going" in refused.json()["detail"]
    gate.touch()
    answered = first.result(timeout=60)
    assert answered.status_code == 200
    assert stored_runs(impatient.stack.db_url, session_id) == [(answered.json()["run_id"], "COMPLETED")]
    outcomes = [
        e["outcome"]
        for e in impatient.stack.api.events()
        if e.get("action") == "agents.run_finished" and e.get("session_id") == session_id
    ]
    # Recorded before the answer is sent, like the session's release.
    assert sorted(outcomes) == ["completed", "conflict", "conflict"]
    # The metric counts the same outcomes (the refused DELETE is no run).
    counted = runs_counted(impatient)
    assert {o: counted[o] - counted_before[o] for o in counted} == {
        "completed": 1,
        "conflict": 2,
        "failed": 0,
        "cancelled": 0,
    }
    # Once the first has answered, the session takes the next run.
    assert impatient.run("What did I ask before?", user_id="jo", session_id=session_id).status_code == 200


# -- failures and cancellations are turns of their own --------------------------------------------


def test_a_stream_that_fails_half_way_is_a_failed_turn_without_its_text(agents: AgentStack) -> None:
    items = read_stream(agents, {"message": f"{FAIL_MIDWAY} tell me", "user_id": "kim"})
    events = events_of(items)
    assert [n for n, _ in events] == ["run_started", "content", "content", "content", "error"]
    session_id = events[0][1]["session_id"]
    assert SECRET not in json.dumps(events)
    [turn] = agents.history(session_id).json()["turns"]
    assert (turn["status"], turn["reply"], turn["citations"]) == ("failed", "", [])
    [stored] = rows(
        agents.stack.db_url, "SELECT runs::text AS runs FROM ai_sessions WHERE session_id = %s", session_id
    )
    assert SECRET not in stored["runs"] and "The answer begins" not in stored["runs"]
    assert stored_runs(agents.stack.db_url, session_id) == [(events[0][1]["run_id"], "ERROR")]
    # A follow-up's history leaves the failed turn out.
    follow_up = agents.run("What did I ask before?", user_id="kim", session_id=session_id).json()
    assert follow_up["reply"] == "Earlier you asked: "


def test_a_client_that_leaves_mid_stream_leaves_a_cancelled_turn(agents: AgentStack) -> None:
    gate = agents.gate()
    body = {"message": f"[hold {gate}] lighthouse{agents.marker}", "user_id": "lea", "stream": True}
    with httpx.stream("POST", agents.runs_url, json=body, headers=agents.stack.auth, timeout=60) as response:
        parser = sse.SSEParser()
        started: dict[str, Any] = {}
        for chunk in response.iter_bytes():
            for item in parser.feed(chunk):
                if isinstance(item, sse.Event) and item.type == "run_started":
                    started = json.loads(item.data)
            if started:
                break
    # The connection is closed: the API notices, asks Agno to stop, and Agno stops at its next step.
    session_id = started["session_id"]
    gate.touch()
    wait_until(lambda: not agents.locked(session_id), "the run ended and released the session", timeout=60)
    [turn] = agents.history(session_id).json()["turns"]
    assert (turn["status"], turn["reply"]) == ("cancelled", "")
    assert stored_runs(agents.stack.db_url, session_id) == [(started["run_id"], "CANCELLED")]
    assert agents.stack.api.wait_for("agents.run_finished", run=started["run_id"])["outcome"] == "cancelled"
    assert agents.run("What did I ask before?", user_id="lea", session_id=session_id).status_code == 200


def test_a_heartbeat_comment_flows_while_the_model_is_silent(agents: AgentStack) -> None:
    gate = agents.gate()
    seen_before_gate: list[sse.Event | sse.Comment] = []

    def on_item(item: sse.Event | sse.Comment) -> None:
        if not gate.exists():
            seen_before_gate.append(item)
            if isinstance(item, sse.Comment):
                gate.touch()  # a heartbeat came while the model waited: let it answer

    # Without heartbeats the model waits for the gate until its limit and the run fails.
    items = read_stream(
        agents, {"message": f"[hold {gate}] lighthouse{agents.marker}", "user_id": "max"}, on_item
    )
    assert [type(i).__name__ for i in seen_before_gate][-1] == "Comment"
    assert isinstance(seen_before_gate[0], sse.Event) and seen_before_gate[0].type == "run_started"
    assert next(i.text for i in seen_before_gate if isinstance(i, sse.Comment)) == "keep-alive"
    events = events_of(items)
    assert events[-1][0] == "done" and f"Lighthouse{agents.marker}" in events[-1][1]["reply"]


def waiting_on_a_lock(db_url: str) -> int:
    """Backends of the database waiting for a lock (a fresh connection: pg_stat_activity is a
    snapshot for the length of a transaction)."""
    query = (
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    )
    return rows(db_url, query)[0]["n"]


def test_a_locked_ai_sessions_fails_runs_quickly_and_starves_no_other_request(agents: AgentStack) -> None:
    # Each starting run waited on the locked table until the statement timeout (30 s), holding a
    # pooled connection: with more runs than the pool (10) every other endpoint answered 503.
    # Agno's synchronous storage on the event loop had frozen /health too.
    db_url = agents.stack.db_url
    session_id = agents.run(f"lighthouse{agents.marker}", user_id="ned").json()["session_id"]
    with psycopg.connect(db_url) as conn, ThreadPoolExecutor(max_workers=12) as clients:
        conn.execute("LOCK TABLE ai_sessions IN ACCESS EXCLUSIVE MODE")
        runs = [  # more at once than the API's pool has connections (WCU_DB_POOL_SIZE 10)
            clients.submit(
                agents.run,
                f"lighthouse{agents.marker} {i}",
                user_id="ned",
                session_id=None if i else session_id,
            )
            for i in range(12)
        ]
        wait_until(lambda: waiting_on_a_lock(db_url) > 0, "a run waits on the lock")
        assert httpx.get(f"{agents.stack.base}/health", timeout=10).status_code == 200
        # A connection comes within the pool's wait (10 s): the runs give theirs back in 3 s.
        assert agents.stack.get("/v1/tasks").status_code == 200
        answers = [r.result(timeout=60) for r in runs]
        # Everything below happens while the lock is still held.
        for answered in answers:
            assert answered.status_code == 503, answered.text
            assert "locked in the database by another transaction" in answered.json()["detail"]
        assert agents.stack.get("/v1/tasks").status_code == 200
        assert agents.stack.get("/health/ready").status_code == 200
        assert not agents.locked(session_id)  # released at once, not left for its lease
    answered = agents.run("What did I ask before?", user_id="ned", session_id=session_id)
    assert answered.status_code == 200
    assert len(stored_runs(db_url, session_id)) == 2


def test_a_run_that_lost_its_session_lock_does_not_overwrite_the_next_run(agents: AgentStack) -> None:
    # The lease of a run ran out while the database stalled (renewals failed); a second run took
    # the session and was stored; then the first finished and wrote its stale copy over it.
    session_id = f"lease-{uuid.uuid4().hex}"
    db_url = agents.stack.db_url
    first = agents.run("turn zero", user_id="uma", session_id=session_id).json()
    for stream in (False, True):
        gate = agents.gate()
        late_body = {
            "message": f"[hold {gate}] lighthouse{agents.marker}",
            "user_id": "uma",
            "session_id": session_id,
        }
        late: Future[Any] = (
            agents.pool.submit(read_stream, agents, late_body)
            if stream
            else agents.run_later(late_body["message"], user_id="uma", session_id=session_id)
        )
        wait_until(lambda: agents.locked(session_id), "the late run holds the session")
        # What a stall longer than the lease leaves behind: the lock's lease has run out.
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "UPDATE ai_agent_session_locks SET expires_at = now() - interval '1 second'"
                " WHERE session_id = %s",
                (session_id,),
            )
        taker = agents.run("What did I ask before?", user_id="uma", session_id=session_id)
        assert taker.status_code == 200, taker.text
        gate.touch()
        if stream:
            events = events_of(late.result(timeout=60))
            assert events[-1][0] == "error" and "could not be saved" in events[-1][1]["detail"]
        else:
            refused = late.result(timeout=60)
            assert refused.status_code == 502, refused.text
            assert "could not be saved" in refused.json()["detail"]
        stored = [run_id for run_id, _ in stored_runs(db_url, session_id)]
        assert stored[-1] == taker.json()["run_id"]  # the taker's turn is kept
        wait_until(lambda: not agents.locked(session_id), "the session is free again")
    assert stored[0] == first["run_id"] and len(stored) == 3
    assert agents.stack.api.wait_for("agents.session_write_fenced", session_id=session_id)


def test_a_run_whose_storage_fails_is_an_error_not_a_lost_turn(impatient: AgentStack) -> None:
    session_id = f"stuck-{uuid.uuid4().hex}"
    gate = impatient.gate()
    marker = f"prompt-{uuid.uuid4().hex[:8]}"
    run = impatient.run_later(f"[hold {gate}] {marker}", user_id="ola", session_id=session_id)
    wait_until(
        lambda: rows(impatient.stack.db_url, "SELECT 1 FROM ai_sessions WHERE session_id = %s", session_id),
        "the session is claimed",
    )
    with psycopg.connect(impatient.stack.db_url) as conn:
        # The session's row is locked: Agno's write at the end of the run meets the statement timeout.
        conn.execute("SELECT 1 FROM ai_sessions WHERE session_id = %s FOR UPDATE", (session_id,))
        gate.touch()
        answered = run.result(timeout=60)
    assert answered.status_code == 502, answered.text
    assert "could not be saved" in answered.json()["detail"]
    assert stored_runs(impatient.stack.db_url, session_id) == []
    events = json_lines_only(impatient.stack.api.output())
    assert any(e.get("action") == "agents.session_not_stored" for e in events)
    assert marker not in impatient.stack.api.output()
    assert not impatient.locked(session_id)


# -- logs ----------------------------------------------------------------------------------------


def test_a_failing_tool_is_logged_without_the_prompt(agents: AgentStack) -> None:
    marker = f"needle-{uuid.uuid4().hex[:8]}"
    answered = agents.run(f"{NUL_SEARCH} {marker}", user_id="pat")
    assert answered.status_code == 200 and answered.json()["reply"] == "The document search failed."
    events = wait_until(
        lambda: [
            e for e in agents.stack.api.events() if e.get("msg") == "Could not run function search_documents"
        ],
        "Agno's warning about the tool, as its lead only",
    )
    assert {(e["logger"], e["level"]) for e in events} == {("wcu_ai.agno", "warning")}
    assert marker not in agents.stack.api.output()


def test_agent_runs_create_no_table_and_log_no_prompt(agents: AgentStack) -> None:
    # Last of the runs in this module: every run above has happened. The runner owns the schema.
    assert tables(agents.stack.db_url) == agents.tables_before
    logs = agents.stack.api.output()
    events = json_lines_only(logs)
    assert "agents.run" in {e.get("action") for e in events}
    assert "favourite colour" not in logs and "What did I ask" not in logs and SECRET not in logs
    assert "[hold" not in logs


# -- configurations --------------------------------------------------------------------------------


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
            timeout=30,
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
    wait_http(f"http://127.0.0.1:{port}/health")  # api.started comes just before uvicorn listens
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
    with service_stack(pg_server_url, tmp_path, **env) as stack:
        url = f"{stack.base}/v1/agents/assistant/runs"
        response = httpx.post(url, json={"message": "hi", "user_id": "ada"}, headers=stack.auth, timeout=30)
        assert response.status_code == 502
        assert SECRET not in response.text
        session_id = json.loads(
            next(
                line
                for line in stack.api.output().splitlines()
                if '"agents.run_finished"' in line and '"failed"' in line
            )
        )["session_id"]
        body = {"message": "hi again", "user_id": "ada", "session_id": session_id, "stream": True}
        with httpx.stream("POST", url, json=body, headers=stack.auth, timeout=30) as streamed:
            assert streamed.status_code == 200
            events = [
                (e.type, json.loads(e.data))
                for e in sse.parse(streamed.iter_bytes())
                if isinstance(e, sse.Event)
            ]
        assert [n for n, _ in events] == ["run_started", "error"]
        assert events[-1][1] == {
            "detail": "The agent could not answer (its model or its storage failed); retry later."
        }
        # Both turns are stored, as failed, without the provider's words.
        history = stack.get(f"/v1/agents/assistant/sessions/{session_id}", user_id="ada").json()
        assert [(t["message"], t["status"], t["reply"]) for t in history["turns"]] == [
            ("hi", "failed", ""),
            ("hi again", "failed", ""),
        ]
        [stored] = rows(
            stack.db_url, "SELECT runs::text AS runs FROM ai_sessions WHERE session_id = %s", session_id
        )
        assert SECRET not in stored["runs"] and "upstream said no" not in stored["runs"]
        logs = stack.api.output()
        json_lines_only(logs)
        assert SECRET not in logs and "upstream said no" not in logs

        # A database that is gone is a 503, never an empty list.
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{urlsplit(stack.db_url).path.lstrip("/")}" WITH (FORCE)')
        for path in ("/v1/agents/assistant/sessions", "/v1/users/ada/memories"):
            response = stack.get(path, user_id="ada")
            assert (response.status_code, response.json()) == (
                503,
                {"detail": "the database is unavailable; retry later"},
            ), path
