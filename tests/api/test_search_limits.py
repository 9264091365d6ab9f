"""The cost of /v1/search is bounded: the query's size (422 naming the limit) and every statement of
the API (WCU_DB_STATEMENT_TIMEOUT_SECONDS: 503 with the reason), without tying up the pool, and
without bounding the runner's own statements."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.factories import make_pdf

STATEMENT_TIMEOUT = 0.5
POOL_SIZE = 4


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    env = {
        "WCU_DB_STATEMENT_TIMEOUT_SECONDS": str(STATEMENT_TIMEOUT),
        "WCU_DB_POOL_SIZE": str(POOL_SIZE),
        # Also the pool's wait for a free connection.
        "WCU_DB_CONNECT_TIMEOUT_SECONDS": "2",
    }
    with service_stack(pg_server_url, tmp_path_factory.mktemp("search"), runner=False, **env) as running:
        yield running


def test_a_query_of_too_many_words_is_422_naming_the_limit(stack: ServiceStack) -> None:
    query = " or ".join(f"word{i}" for i in range(200))
    response = stack.get("/v1/search", q=query)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "q"]
    assert (
        "200 words" in error["msg"]
        and "at most 24" in error["msg"]
        and "WCU_SEARCH_MAX_TERMS" in error["msg"]
    )
    # At the limit it is a search like any other.
    at_limit = stack.get("/v1/search", q=" or ".join(f"word{i}" for i in range(24)))
    assert at_limit.status_code == 200, at_limit.text


@pytest.mark.parametrize("separator", ["_", "-", " "])
def test_words_joined_by_underscores_or_hyphens_count_one_by_one(stack: ServiceStack, separator: str) -> None:
    # PostgreSQL makes a lexeme of each part: "w0_w1_…" once passed as one word and cost 25.
    response = stack.get("/v1/search", q=separator.join(f"w{i}" for i in range(25)))
    assert response.status_code == 422, response.text
    assert "WCU_SEARCH_MAX_TERMS" in response.json()["detail"][0]["msg"]


def test_a_query_too_long_is_422_naming_the_limit(stack: ServiceStack) -> None:
    response = stack.get("/v1/search", q="a" * 501)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert "501 characters" in error["msg"] and "WCU_SEARCH_MAX_QUERY_CHARS" in error["msg"]
    assert stack.get("/v1/search", q="a" * 500).status_code == 200


def test_twenty_searches_stuck_past_the_statement_timeout_get_503_and_the_pool_recovers(
    stack: ServiceStack,
) -> None:
    """A lock on the chunks makes every search wait: PostgreSQL's statement_timeout cancels the
    four that hold the pool's connections, the others give up waiting for one (pool timeout);
    /health answers meanwhile, and once the lock is gone the same pool serves again."""
    searches = 20
    with psycopg.connect(stack.db_url) as holder:
        holder.execute("LOCK TABLE parsed_document_chunks IN ACCESS EXCLUSIVE MODE")
        with concurrent.futures.ThreadPoolExecutor(searches) as pool:
            futures = [
                pool.submit(
                    httpx.get,
                    f"{stack.base}/v1/search",
                    params={"q": f"stuck {i}"},
                    headers=stack.auth,
                    timeout=30,
                )
                for i in range(searches)
            ]
            health = httpx.get(f"{stack.base}/health", timeout=10)
            responses = [f.result() for f in futures]
        holder.rollback()
    assert health.status_code == 200
    assert sorted({r.status_code for r in responses}) == [503], [r.text for r in responses]
    details = [r.json()["detail"] for r in responses]
    cancelled = [d for d in details if "WCU_DB_STATEMENT_TIMEOUT_SECONDS" in d]
    assert cancelled, details
    assert all(d == "the database is unavailable; retry later" for d in details if d not in cancelled), (
        details
    )
    assert f"longer than {STATEMENT_TIMEOUT:g} s" in cancelled[0]

    after = stack.get("/v1/search", q="anything")
    assert after.status_code == 200, after.text
    with psycopg.connect(stack.db_url) as conn:
        busy = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wcu-ai' AND state <> 'idle'"
        ).fetchone()
        total = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wcu-ai'"
        ).fetchone()
    assert busy == (0,)
    assert total is not None and total[0] <= POOL_SIZE
    assert "Traceback" not in stack.api.output()


@pytest.mark.documents
def test_the_runner_s_statements_do_not_get_the_api_s_timeout(pg_server_url: str, tmp_path: Path) -> None:
    """The runner, configured with the same WCU_DB_STATEMENT_TIMEOUT_SECONDS, waits on a lock for
    several times that limit and still saves the parse."""
    env = {"WCU_DB_STATEMENT_TIMEOUT_SECONDS": str(STATEMENT_TIMEOUT)}
    with service_stack(pg_server_url, tmp_path, **env) as stack, psycopg.connect(stack.db_url) as holder:
        holder.execute("LOCK TABLE parsed_document_pages IN SHARE MODE")
        response = stack.upload(make_pdf(tmp_path / "locked.pdf", ["Saved after a long wait on a lock."]))
        assert response.status_code == 202, response.text
        waited = 0.0
        deadline = time.monotonic() + 60
        with psycopg.connect(stack.db_url, autocommit=True) as watcher:
            while waited < 4 * STATEMENT_TIMEOUT and time.monotonic() < deadline:
                row = watcher.execute(
                    "SELECT coalesce(max(extract(epoch FROM now() - query_start)), 0) FROM pg_stat_activity"
                    " WHERE application_name = 'wcu-ai' AND wait_event_type = 'Lock'"
                    " AND query LIKE '%%parsed_document_pages%%'"
                ).fetchone()
                waited = float(row[0]) if row else 0.0
                time.sleep(0.1)
        holder.rollback()
        assert waited >= 4 * STATEMENT_TIMEOUT, "the runner's statement never waited past the API's timeout"
        document = stack.wait_document(response.json()["document_id"])
        assert document["status"] == "parsed", document
