"""The runner's metrics: leadership, tasks by type and outcome, leases, documents, LibreOffice,
and the queue as the database sees it. Served by task_runner/metrics_listener.py.

Counting is a few increments at the points where the worker already logs an outcome: no await,
no database round trip per task. Task types are label values only when this runner registers
them; any other (the API enqueues whatever type it is given) counts as "unknown", so a client
cannot grow the number of series.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

from wcu_ai.database import connect_kwargs, conninfo, load_queries
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
    ToolError,
    ToolMissingError,
    ToolTimeoutError,
)
from wcu_ai.settings import Settings

logger = logging.getLogger(__name__)

Q = load_queries("wcu_ai.task_runner", "metrics.sql")

UNKNOWN_TYPE = "unknown"
# What _record's log actions (task_runner/worker.py) mean as outcomes.
_OUTCOMES = {
    "task.succeeded": "succeeded",
    "task.retrying": "retried",
    "task.failed": "failed",
    "task.released": "released",
}
OUTCOMES = (*_OUTCOMES.values(), "lost", "unrecorded")
DOCUMENT_KINDS = ("pdf", "docx", "other")
FAILURE_REASONS = ("limit", "timeout", "encrypted", "unreadable", "tool_missing", "tool", "error")
RESTART_REASONS = ("timeout", "died", "exited", "recycled", "error")
# From a no-op (milliseconds) to WCU_TASK_TIMEOUT_SECONDS' default (900 s).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
# Counts above this are reported as this: the scrape's cost stays bounded (metrics.sql).
QUEUE_COUNT_CAP = 100_000


def failure_reason(exc: BaseException) -> str:
    """The class of a document failure, a bounded label (the message itself goes to the task)."""
    if isinstance(exc, DocumentLimitError):
        return "limit"
    if isinstance(exc, DocumentTimeoutError | ToolTimeoutError):
        return "timeout"
    if isinstance(exc, EncryptedDocumentError):
        return "encrypted"
    if isinstance(exc, ToolMissingError):
        return "tool_missing"
    if isinstance(exc, DocumentError):
        return "unreadable"
    if isinstance(exc, ToolError):
        return "tool"
    return "error"


class RunnerMetrics:
    """One registry per runner process (run_runner), passed down to the worker and the parser."""

    def __init__(self) -> None:
        # No `_created` series: they double the counters' series and nothing here reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.leader = Gauge(
            "wcu_runner_leader", "1 while this runner holds the leadership lock, 0 on standby", registry=r
        )
        self.tasks_claimed = Counter(
            "wcu_runner_tasks_claimed", "Task attempts claimed, by task type", ["task_type"], registry=r
        )
        self.task_outcomes = Counter(
            "wcu_runner_task_outcomes",
            "Task attempts ended, by task type and outcome: succeeded, failed, retried (failed, "
            "queued again), released (handed back at shutdown), lost (another runner held the task "
            "by then), unrecorded (the database did not take the outcome; the lease will expire)",
            ["task_type", "outcome"],
            registry=r,
        )
        self.task_duration = Histogram(
            "wcu_runner_task_duration_seconds",
            "Time a task's handler ran, every attempt whatever its outcome",
            ["task_type"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.tasks_expired = Counter(
            "wcu_runner_tasks_expired",
            "Tasks failed because the runner working their last attempt died (lease expired)",
            registry=r,
        )
        self.lease_renewals = Counter(
            "wcu_runner_lease_renewals", "Task leases renewed by the heartbeat", registry=r
        )
        self.lease_renewal_errors = Counter(
            "wcu_runner_lease_renewal_errors",
            "Heartbeats that could not reach the database",
            registry=r,
        )
        self.leases_lost = Counter(
            "wcu_runner_leases_lost",
            "Running tasks abandoned because the heartbeat found their lease taken",
            registry=r,
        )
        self.documents_parsed = Counter(
            "wcu_documents_parsed", "Documents parsed and stored, by kind", ["kind"], registry=r
        )
        self.documents_failed = Counter(
            "wcu_documents_failed",
            "Documents marked failed (for good: a permanent error or the last attempt), by kind and "
            "reason class",
            ["kind", "reason"],
            registry=r,
        )
        self.libreoffice_restarts = Counter(
            "wcu_libreoffice_restarts",
            "Warm LibreOffice instances stopped to be started afresh, by reason: timeout, died "
            "(under a conversion), exited (between conversions), recycled (after its quota of "
            "conversions), error (a conversion failed or was cancelled)",
            ["reason"],
            registry=r,
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, …: this process only; each
        # LibreOffice is a process of its own (deployment.md, "Sizing").
        ProcessCollector(registry=r)
        for reason in RESTART_REASONS:
            self.libreoffice_restarts.labels(reason)
        self._types: frozenset[str] = frozenset()
        self._claimed: dict[str, Any] = {}
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        for kind in DOCUMENT_KINDS:
            self.documents_parsed.labels(kind)
            for reason in FAILURE_REASONS:
                self.documents_failed.labels(kind, reason)
        self.track_task_types(())

    def track_task_types(self, task_types: Iterable[str]) -> None:
        """The registered types become label values; every series starts at 0 so rate() and ratios
        see it from the first scrape."""
        self._types = frozenset(task_types)
        for task_type in (*sorted(self._types), UNKNOWN_TYPE):
            self._claimed[task_type] = self.tasks_claimed.labels(task_type)
            self._durations[task_type] = self.task_duration.labels(task_type)
            for outcome in OUTCOMES:
                self._outcomes[task_type, outcome] = self.task_outcomes.labels(task_type, outcome)

    def _type(self, task_type: str) -> str:
        return task_type if task_type in self._types else UNKNOWN_TYPE

    # -- the worker's outcome points --------------------------------------------------------------

    def task_claimed(self, task_type: str) -> None:
        self._claimed[self._type(task_type)].inc()

    def task_ran(self, task_type: str, seconds: float) -> None:
        self._durations[self._type(task_type)].observe(seconds)

    def task_recorded(self, task_type: str, action: str) -> None:
        """An outcome written while this runner still held the task (`action`: _record's)."""
        outcome = _OUTCOMES.get(action)
        if outcome is not None:
            self._outcomes[self._type(task_type), outcome].inc()

    def task_outcome(self, task_type: str, outcome: str) -> None:
        self._outcomes[self._type(task_type), outcome].inc()

    # -- the document parser's (documents/handlers.py ParseMetrics) -----------------------------

    def document_parsed(self, kind: str) -> None:
        self.documents_parsed.labels(kind if kind in DOCUMENT_KINDS else "other").inc()

    def document_failed(self, kind: str, exc: BaseException) -> None:
        self.documents_failed.labels(kind if kind in DOCUMENT_KINDS else "other", failure_reason(exc)).inc()

    def libreoffice_restarted(self, reason: str) -> None:
        self.libreoffice_restarts.labels(reason).inc()


class QueueStats(Collector):
    """Queue depth by status and the age of the oldest due task, read from the database per scrape.

    At scrape time rather than on an interval: the figures are as fresh as Prometheus' own
    timestamp says, nothing runs when nobody scrapes, and there is no side task to supervise in
    either leadership state (a standby, which works nothing, reports the queue too: that is when a
    stuck queue matters most). The cost is bounded per scrape: one statement on partial indexes
    with capped counts (metrics.sql), under a statement timeout, on one connection of its own
    (never the worker's pool). Scrapes are serialised, so concurrent scrapers never open more. When
    the database does not answer, `wcu_task_queue_stats_up` is 0 and the figures are left out
    rather than reported stale.
    """

    def __init__(self, settings: Settings, *, timeout_seconds: float = 2.0) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._lock = threading.RLock()  # close() takes it too, also from inside _read

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            row = self._read()
        yield GaugeMetricFamily(
            "wcu_task_queue_stats_up",
            "1 when this scrape could read the queue from the database, else 0",
            0 if row is None else 1,
        )
        if row is None:
            return
        depth = GaugeMetricFamily(
            "wcu_task_queue_depth",
            f"Tasks by status, queued (due or later) and running; counted up to {QUEUE_COUNT_CAP}",
            labels=["status"],
        )
        depth.add_metric(["queued"], row["queued"])
        depth.add_metric(["running"], row["running"])
        yield depth
        yield GaugeMetricFamily(
            "wcu_task_queue_oldest_due_age_seconds",
            "How long the oldest queued task has been due (0 when none is)",
            max(0.0, row["oldest_due_age"] or 0.0),
        )

    def _read(self) -> dict[str, Any] | None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            return self._conn.execute(Q["queue_stats"], {"cap": QUEUE_COUNT_CAP}).fetchone()
        except (psycopg.Error, OSError) as exc:
            logger.warning(
                "metrics: could not read the queue",
                extra={"action": "runner.metrics_queue_error", "error": str(exc).strip().split("\n")[0]},
            )
            self.close()
            return None

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        kwargs = connect_kwargs(self._settings)
        timeout_ms = int(self._timeout * 1000)
        kwargs["options"] += f" -c statement_timeout={timeout_ms}"
        # A scrape must answer before Prometheus gives up on it (10 s by default), database or not.
        kwargs["connect_timeout"] = max(1, min(kwargs["connect_timeout"], int(self._timeout)))
        kwargs["application_name"] = "wcu-ai-metrics"
        return psycopg.connect(conninfo(self._settings), autocommit=True, row_factory=dict_row, **kwargs)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
