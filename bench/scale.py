"""Cost against size (issue 13): what a claim, a full-text search, a page of documents and an
upload cost as the rows behind them grow by 10x steps.

    bench/run --only scale [--scale-sizes 10000,100000,1000000] [--scale-samples 40]

bench/run starts the processes and prints the rows; this module generates the data (with SQL,
generate_series, never through the API) and times the package's own statements: the named
queries of wcu_ai.tasks and wcu_ai.documents through their functions, so that the figures follow
the code as it changes. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg.rows import dict_row

# Words of the generated chunks; SEARCH_RARE is in 50 chunks at every size, SEARCH_COMMON in 1%.
_WORDS = [
    "board",
    "committee",
    "budget",
    "revenue",
    "quarter",
    "annual",
    "report",
    "meeting",
    "minutes",
    "approved",
    "members",
    "policy",
    "review",
    "audit",
    "finance",
    "operations",
    "program",
    "project",
    "staff",
    "office",
    "county",
    "school",
    "health",
    "service",
    "district",
    "public",
    "safety",
    "water",
    "road",
    "transport",
    "plan",
    "strategy",
    "growth",
    "market",
    "customer",
    "product",
    "sales",
    "contract",
    "supplier",
    "invoice",
    "payment",
    "account",
    "balance",
    "asset",
    "liability",
    "equity",
    "income",
    "expense",
    "tax",
    "director",
    "manager",
    "employee",
    "training",
    "incident",
    "risk",
    "control",
    "compliance",
    "regulation",
    "standard",
]
SEARCH_RARE = "zebrafish"
SEARCH_COMMON = "kaleidoscope"
RARE_PER_SIZE = 50


@dataclass
class Timing:
    p50: float  # seconds
    samples: int


def p50(measure: Callable[[], object], samples: int) -> Timing:
    times = []
    for _ in range(samples):
        begun = time.perf_counter()
        measure()
        times.append(time.perf_counter() - begun)
    return Timing(statistics.median(times), samples)


def in_turn(measures: dict[str, Callable[[], object]], samples: int) -> dict[str, Timing]:
    """Medians of `samples` runs of each measure, taken in turn so that a noisy moment hits all."""
    times: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(samples):
        for name, measure in measures.items():
            begun = time.perf_counter()
            measure()
            times[name].append(time.perf_counter() - begun)
    return {name: Timing(statistics.median(t), samples) for name, t in times.items()}


# -- HTTP ---------------------------------------------------------------------------------------


class KeepAliveClient:
    """GETs on one kept-alive HTTP/1.1 connection with the standard library's client.

    The latency rows time the server, so the client is the leanest there is: httpx's sync client
    spent ~0.8 ms of its own on each request here, more than the whole /health route, and only
    the API side of a row against SQL pays it. The status and body are checked all the same.
    """

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = headers

    def get(self, path: str, **params: Any) -> tuple[int, bytes]:
        target = f"{path}?{urlencode(params)}" if params else path
        for attempt in (1, 2):
            try:
                self.connection.request("GET", target, headers=self.headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the kept-alive connection while it sat idle (WCU_API_KEEPALIVE_SECONDS,
                # while the next size's rows were made): a GET is sent again on a new one, once.
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


# -- the queue -----------------------------------------------------------------------------------


def fill_tasks(db_url: str, count: int) -> None:
    """`count` due noop tasks, the oldest first in line, as a backlog builds up."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_server_tasks")
        conn.execute(
            "INSERT INTO ai_server_tasks (task_type, run_after, created_at) "
            "SELECT 'noop', now() - make_interval(secs => g), now() - make_interval(secs => g) "
            "FROM generate_series(1, %s) AS g",
            (count,),
        )
        conn.execute("VACUUM ANALYZE ai_server_tasks")


def claim_latency(db_url: str, samples: int, limit: int) -> Timing:
    """queue.claim as the worker calls it, each in a transaction rolled back: the backlog stays."""
    from wcu_ai.tasks import queue

    async def main() -> Timing:
        conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
        async with conn:
            times = []
            for _ in range(samples + 5):  # the first five prepare the statement
                await conn.execute("BEGIN")
                begun = time.perf_counter()
                claimed = await queue.claim(conn, runner="bench", limit=limit, lease_seconds=60)
                times.append(time.perf_counter() - begun)
                await conn.execute("ROLLBACK")
                if len(claimed) != limit:
                    raise RuntimeError(f"the claim took {len(claimed)} tasks, not {limit}")
            return Timing(statistics.median(times[5:]), samples)

    return asyncio.run(main())


def claim_plan(db_url: str, limit: int) -> list[str]:
    """The indexes the claim's plan reads (EXPLAIN, not run)."""
    from wcu_ai.tasks.queue import Q

    params = {"limit": limit, "runner": "bench", "lease": 60.0}
    return plan_indexes(db_url, Q["claim"], params)


# -- full-text search ----------------------------------------------------------------------------


def fill_chunks(db_url: str, count: int, per_document: int = 100) -> None:
    """`count` chunks of generated English words in parsed documents of `per_document` chunks.

    SEARCH_RARE is in RARE_PER_SIZE chunks whatever the count, SEARCH_COMMON in one in a hundred.
    """
    documents = max(1, count // per_document)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE parsed_documents CASCADE")
        conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status, page_count, "
            "text_search_config) "
            "SELECT 'scale-' || d || '.pdf', 'application/pdf', 'pdf', sha256(('scale-' || d)::bytea), 1000, "
            "'parsed', 10, 'english' FROM generate_series(1, %s) AS d",
            (documents,),
        )
        conn.execute(
            """
            INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text)
            SELECT d.id, 1 + g %% 10, g, 0, 120,
                   (SELECT string_agg(w.words[1 + abs(hashint4((s.n * 16 + k)::int)) %% cardinality(w.words)], ' ')
                    FROM generate_series(1, 15) AS k)
                   || CASE WHEN s.n %% %(rare_every)s = 0 THEN ' ' || %(rare)s ELSE '' END
                   || CASE WHEN s.n %% 100 = 7 THEN ' ' || %(common)s ELSE '' END
            FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS doc FROM parsed_documents) AS d
            CROSS JOIN generate_series(0, %(per)s - 1) AS g
            CROSS JOIN LATERAL (SELECT d.doc * %(per)s + g AS n) AS s
            CROSS JOIN (SELECT %(words)s::text[] AS words) AS w
            WHERE s.n < %(count)s
            """,
            {
                "words": _WORDS,
                "rare": SEARCH_RARE,
                "common": SEARCH_COMMON,
                "rare_every": max(1, count // RARE_PER_SIZE),
                "per": per_document,
                "count": count,
            },
        )
        conn.execute("VACUUM ANALYZE parsed_documents")
        conn.execute("VACUUM ANALYZE parsed_document_chunks")


def search_direct(db_url: str) -> Callable[[str, int], Callable[[], object]]:
    """A measure running the route's SQL alone (search_text's named query, its parameters) on one
    synchronous connection, rows fetched: no event loop and none of the route's Python around it."""
    from wcu_ai.documents.store import Q
    from wcu_ai.documents.textsearch import TEXT_SEARCH_CONFIGS

    conn = psycopg.connect(db_url, autocommit=True, row_factory=dict_row)

    def measure(query: str, limit: int) -> Callable[[], object]:
        params = {"q": query, "limit": limit, "configs": list(TEXT_SEARCH_CONFIGS)}
        return lambda: conn.execute(Q["search_text"], params).fetchall()

    measure.close = conn.close  # type: ignore[attr-defined]
    return measure


def search_plan(db_url: str, query: str, limit: int) -> list[str]:
    """The indexes search_text's plan reads, with the parameters search.py passes it."""
    from wcu_ai.documents.store import Q
    from wcu_ai.documents.textsearch import TEXT_SEARCH_CONFIGS

    params = {"q": query, "limit": limit, "configs": list(TEXT_SEARCH_CONFIGS)}
    return plan_indexes(db_url, Q["search_text"], params)


# -- listing -------------------------------------------------------------------------------------


def fill_documents(db_url: str, count: int) -> None:
    """`count` parsed documents, one a second into the past (the listing is newest first)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE parsed_documents CASCADE")
        conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status, "
            "page_count, created_at, updated_at) "
            "SELECT 'doc-' || d || '.pdf', 'application/pdf', 'pdf', sha256(('doc-' || d)::bytea), 1000, "
            "'parsed', 10, now() - make_interval(secs => d), now() - make_interval(secs => d) "
            "FROM generate_series(1, %s) AS d",
            (count,),
        )
        conn.execute("VACUUM ANALYZE parsed_documents")


def list_direct(db_url: str) -> Callable[[Any, int], Callable[[], object]]:
    """A measure running store.list_documents (the route's call) on one connection."""
    from wcu_ai.documents import store

    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(
        psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
    )

    def measure(before: Any, limit: int) -> Callable[[], object]:
        return lambda: loop.run_until_complete(
            store.list_documents(conn, status=None, before=before, limit=limit)
        )

    measure.close = lambda: (loop.run_until_complete(conn.close()), loop.close())  # type: ignore[attr-defined]
    return measure


# -- uploads -------------------------------------------------------------------------------------


def pdf_of(size: int) -> bytes:
    """`size` bytes the API takes for a PDF (the %PDF- header, then incompressible bytes)."""
    head = b"%PDF-1.4\n% bench upload\n"
    return head + os.urandom(size - len(head))


def raw_insert_seconds(db_url: str, content: bytes) -> float:
    """One INSERT of the same bytes into a bytea column stored EXTERNAL, as the upload tables are,
    in a table as durable as theirs (a TEMP table would skip the write-ahead log)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_blob")
        conn.execute("CREATE TABLE bench_blob (content bytea NOT NULL)")
        conn.execute("ALTER TABLE bench_blob ALTER COLUMN content SET STORAGE EXTERNAL")
        begun = time.perf_counter()
        conn.execute("INSERT INTO bench_blob (content) VALUES (%b)", (content,))
        seconds = time.perf_counter() - begun
        conn.execute("DROP TABLE bench_blob")
        return seconds


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


# -- plans ---------------------------------------------------------------------------------------


def plan_indexes(db_url: str, query: str, params: dict[str, Any]) -> list[str]:
    """The index names in `query`'s plan (EXPLAIN (FORMAT JSON), not executed)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        plan = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()[0]  # type: ignore[index]
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            found.append(f"{node['Node Type']} on {node['Index Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan)[0]["Plan"])
    return found


@contextlib.contextmanager
def closing(measure: Any) -> Iterator[Any]:
    try:
        yield measure
    finally:
        measure.close()
