"""The reliability scenarios, shared by the fast tests (tests/reliability) and the long runs
(bench/reliability.py): the same code, only the counts differ.

Everything here drives real processes (`wcu-ai runner`, `wcu-ai api`) against a real PostgreSQL
and sends real signals. "Exactly once" is judged by PostgreSQL itself: `install_audit` adds a
trigger (test-only, created in the test's database, never in src/) that records every change of a
task's status, attempt or owner. A task is lost when it did not end `succeeded`; it is duplicated
when it became `succeeded` more than once, was claimed again after it succeeded, or when the
runners' logs report its success more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.rows

from tests.conftest import Proc, free_port, service_environ, wcu_ai_command

_AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS reliability_audit (
    seq        bigserial PRIMARY KEY,
    task_id    uuid NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    attempts   integer NOT NULL,
    locked_by  text
);
CREATE OR REPLACE FUNCTION reliability_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF ROW(NEW.status, NEW.attempts, NEW.locked_by) IS DISTINCT FROM ROW(OLD.status, OLD.attempts, OLD.locked_by) THEN
        INSERT INTO reliability_audit (task_id, old_status, new_status, attempts, locked_by)
        VALUES (NEW.id, OLD.status, NEW.status, NEW.attempts, NEW.locked_by);
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS reliability_audit ON ai_server_tasks;
CREATE TRIGGER reliability_audit AFTER UPDATE ON ai_server_tasks
    FOR EACH ROW EXECUTE FUNCTION reliability_audit_change();
"""


# -- databases -----------------------------------------------------------------------------------


def migrate(db_url: str) -> None:
    from wcu_ai.migrations import MigrationTool
    from wcu_ai.settings import Settings

    MigrationTool(Settings(DATABASE_URL=db_url)).run_up()


def install_audit(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(_AUDIT_SQL)


def enqueue_many(db_url: str, tasks: list[tuple[str, dict[str, Any]]], *, max_attempts: int = 3) -> list[str]:
    """One transaction, so the runner sees them together; returns their ids in order."""
    with psycopg.connect(db_url) as conn:
        ids = []
        for task_type, payload in tasks:
            row = conn.execute(
                "INSERT INTO ai_server_tasks (task_type, payload, max_attempts) VALUES (%s, %s, %s) RETURNING id",
                (task_type, psycopg.types.json.Jsonb(payload), max_attempts),
            ).fetchone()
            assert row is not None
            ids.append(str(row[0]))
    return ids


def status_counts(db_url: str) -> Counter[str]:
    with psycopg.connect(db_url) as conn:
        return Counter(
            dict(conn.execute("SELECT status, count(*) FROM ai_server_tasks GROUP BY status").fetchall())
        )


def wait_all_terminal(db_url: str, timeout: float, procs: list[Proc] | None = None) -> Counter[str]:
    deadline = time.monotonic() + timeout
    counts = status_counts(db_url)
    while counts["queued"] + counts["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = status_counts(db_url)
    if counts["queued"] + counts["running"]:
        tails = "\n".join(p.output()[-3000:] for p in procs or [])
        raise AssertionError(f"tasks still open after {timeout}s: {dict(counts)}\n{tails}")
    return counts


# -- the verdict ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    """Figures of one scenario; `ok` is what the tests assert and the bench prints."""

    scenario: str
    tasks: int = 0
    succeeded: int = 0
    lost: int = 0
    duplicated: int = 0
    left_running: int = 0
    retaken: int = 0
    released: int = 0
    cycles: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.left_running == 0

    def line(self) -> str:
        figures = {
            "cycles": self.cycles,
            "tasks": self.tasks,
            "succeeded": self.succeeded,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "left_running": self.left_running,
            "retaken_after_lease": self.retaken,
            "released_at_stop": self.released,
            **self.extra,
        }
        return f"{self.scenario}: " + " ".join(f"{k}={v}" for k, v in figures.items())


def judge(scenario: str, db_url: str, procs: list[Proc], *, cycles: int = 0) -> Verdict:
    """Exactly-once from the audit trail and from every runner's log."""
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        rows = conn.execute("SELECT id::text, status FROM ai_server_tasks").fetchall()
        audit = conn.execute(
            "SELECT task_id::text, old_status, new_status, attempts, locked_by FROM reliability_audit ORDER BY seq"
        ).fetchall()
    succeeded_writes: Counter[str] = Counter()
    after_success: set[str] = set()
    retaken: set[str] = set()
    released: set[str] = set()
    for change in audit:
        if change["new_status"] == "succeeded":
            succeeded_writes[change["task_id"]] += 1
        if change["old_status"] == "succeeded":
            after_success.add(change["task_id"])
        if change["old_status"] == "running" and change["new_status"] == "running":
            retaken.add(change["task_id"])  # claimed again after its lease expired
        if (
            change["old_status"] == "running"
            and change["new_status"] == "queued"
            and change["locked_by"] is None
        ):
            released.add(change["task_id"])
    logged: Counter[str] = Counter()
    for proc in procs:
        for event in proc.events():
            if event.get("action") == "task.succeeded":
                logged[event["task_id"]] += 1
    statuses = Counter(r["status"] for r in rows)
    duplicated = {t for t, n in succeeded_writes.items() if n > 1} | after_success
    duplicated |= {t for t, n in logged.items() if n > 1}
    return Verdict(
        scenario=scenario,
        tasks=len(rows),
        succeeded=statuses["succeeded"],
        lost=len(rows) - statuses["succeeded"],
        duplicated=len(duplicated),
        left_running=statuses["running"],
        retaken=len(retaken),
        released=len(released),
        cycles=cycles,
    )


# -- processes -----------------------------------------------------------------------------------


class Procs:
    """Starts `wcu-ai` commands with one environment; every one is killed at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.all: list[Proc] = []

    def start(self, *args: str, **env: str) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = Proc(
            [*wcu_ai_command(), *args], {**self.env, **env}, self.log_dir / f"{len(self.all)}-{args[0]}.log"
        )
        self.all.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.all:
            proc.stop()


def started_tasks(proc: Proc) -> int:
    return proc.actions().count("task.started")


def wait_started(proc: Proc, more_than: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while started_tasks(proc) <= more_than:
        if time.monotonic() > deadline or proc.popen.poll() is not None:
            raise AssertionError(f"no new task.started from {proc.argv}:\n{proc.output()[-3000:]}")
        time.sleep(0.02)


# -- scenarios -----------------------------------------------------------------------------------


def sigterm_cycles(
    db_url: str, tmp: Path, *, cycles: int, tasks_per_cycle: int = 4, seed: int = 1
) -> Verdict:
    """SIGTERM the runner while it works; each stop must leave nothing running.

    Every cycle enqueues fresh tasks, so there is always work in flight when the signal lands.
    """
    rng = random.Random(seed)
    migrate(db_url)
    install_audit(db_url)
    procs = Procs(service_environ(db_url, tmp, WCU_RUNNER_GRACE_SECONDS="0.4"), tmp / "logs")

    def batch() -> list[tuple[str, dict[str, Any]]]:
        # Sleeps around the grace period: some finish during it, the others are handed back.
        return [("sleep", {"seconds": round(rng.uniform(0.05, 1.2), 2)}) for _ in range(tasks_per_cycle)]

    try:
        for cycle in range(cycles):
            enqueue_many(db_url, batch())
            runner = procs.start("runner")
            runner.wait_for("runner.leader", timeout=60)
            wait_started(runner, 0)
            time.sleep(rng.uniform(0.0, 0.6))
            runner.signal(signal.SIGTERM)
            code = runner.wait(60)
            if code != 0:
                raise AssertionError(f"cycle {cycle}: the runner exited {code}:\n{runner.output()[-3000:]}")
            running = status_counts(db_url)["running"]
            if running:
                raise AssertionError(f"cycle {cycle}: {running} task(s) left running after a clean stop")
        final = procs.start("runner")
        final.wait_for("runner.leader", timeout=60)
        wait_all_terminal(db_url, timeout=60 + 2 * cycles * tasks_per_cycle, procs=[final])
        final.signal(signal.SIGTERM)
        assert final.wait(60) == 0
        return judge("sigterm", db_url, procs.all, cycles=cycles)
    finally:
        procs.close()


def sigkill_cycles(db_url: str, tmp: Path, *, cycles: int, tasks_per_cycle: int = 3) -> Verdict:
    """SIGKILL the leader mid-task with a standby waiting; its tasks are retaken after the lease.

    Every cycle enqueues fresh tasks and kills the leader right after it started one of them.
    """
    migrate(db_url)
    install_audit(db_url)
    # Each kill spends one attempt of the tasks in flight: leave room for all of them.
    max_attempts = cycles + 3
    batch = [("sleep", {"seconds": 1.0}) for _ in range(tasks_per_cycle)]
    procs = Procs(service_environ(db_url, tmp, WCU_TASK_LEASE_SECONDS="2"), tmp / "logs")
    try:
        leader = procs.start("runner")
        leader.wait_for("runner.leader", timeout=60)
        standby = procs.start("runner")
        standby.wait_for("runner.standby", timeout=60)
        for _ in range(cycles):
            seen = started_tasks(leader)
            enqueue_many(db_url, batch, max_attempts=max_attempts)
            wait_started(leader, seen)
            leader.signal(signal.SIGKILL)
            leader.wait(30)
            standby.wait_for("runner.leader", timeout=60)
            leader, standby = standby, procs.start("runner")
            standby.wait_for("runner.standby", timeout=60)
        enqueue_many(db_url, batch, max_attempts=max_attempts)
        wait_all_terminal(db_url, timeout=60 + 2 * (cycles + 1) * tasks_per_cycle, procs=[leader])
        for proc in (leader, standby):
            proc.signal(signal.SIGTERM)
            assert proc.wait(60) == 0, proc.output()[-3000:]
        return judge("sigkill", db_url, procs.all, cycles=cycles)
    finally:
        procs.close()


def noop_flood(db_url: str, tmp: Path, *, tasks: int, batch: int = 100) -> Verdict:
    """Enqueue `tasks` no-op tasks in batches while the runner works them."""
    migrate(db_url)
    install_audit(db_url)
    procs = Procs(service_environ(db_url, tmp), tmp / "logs")
    try:
        runner = procs.start("runner")
        runner.wait_for("runner.leader", timeout=60)
        started = time.monotonic()
        with psycopg.connect(db_url, autocommit=True) as conn:
            for first in range(0, tasks, batch):
                n = min(batch, tasks - first)
                conn.execute(
                    "INSERT INTO ai_server_tasks (task_type, payload) "
                    "SELECT 'noop', jsonb_build_object('n', i) FROM generate_series(%s::int, %s::int) AS i",
                    (first, first + n - 1),
                )
        wait_all_terminal(db_url, timeout=120 + tasks / 20, procs=[runner])
        elapsed = time.monotonic() - started
        runner.signal(signal.SIGTERM)
        assert runner.wait(60) == 0
        verdict = judge("noop", db_url, procs.all)
        with psycopg.connect(db_url) as conn:
            waits = [
                r[0]
                for r in conn.execute(
                    "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM ai_server_tasks"
                )
            ]
            payload_ns = conn.execute("SELECT count(DISTINCT payload->>'n') FROM ai_server_tasks").fetchone()
        assert payload_ns is not None and payload_ns[0] == tasks
        verdict.extra.update(
            tasks_per_s=round(tasks / elapsed, 1),
            queue_to_done_p50_ms=round(percentile(waits, 50) * 1000, 1),
            queue_to_done_p99_ms=round(percentile(waits, 99) * 1000, 1),
        )
        return verdict
    finally:
        procs.close()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


@dataclass
class LoadResult:
    requests: int
    errors: int
    status_5xx: int
    p50_ms: float
    p99_ms: float
    rps: float
    sample_errors: list[str]
    outcomes: Counter[str]

    def line(self, path: str, connections: int, seconds: float) -> str:
        return (
            f"http {path}: connections={connections} seconds={seconds:g} requests={self.requests} "
            f"rps={self.rps:.0f} errors={self.errors} 5xx={self.status_5xx} "
            f"p50_ms={self.p50_ms:.1f} p99_ms={self.p99_ms:.1f}"
        )


def http_load(
    url: str,
    *,
    connections: int,
    seconds: float | None = None,
    requests_per_connection: int | None = None,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`connections` clients each send requests back to back, for `seconds` or a fixed count.

    An error is anything but 200: a transport error, a timeout or another status.
    """
    if (seconds is None) == (requests_per_connection is None):
        raise ValueError("give seconds or requests_per_connection")

    async def run() -> LoadResult:
        latencies: list[float] = []
        errors: list[str] = []
        outcomes: Counter[str] = Counter()
        status_5xx = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=30.0, headers=headers) as client:
            began = time.monotonic()
            stop_at = began + seconds if seconds is not None else None

            async def one_client() -> None:
                nonlocal status_5xx
                sent = 0
                while True:
                    if stop_at is not None and time.monotonic() >= stop_at:
                        return
                    if requests_per_connection is not None and sent >= requests_per_connection:
                        return
                    sent += 1
                    t0 = time.monotonic()
                    try:
                        response = await client.get(url)
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        outcomes[type(exc).__name__] += 1
                        continue
                    latencies.append(time.monotonic() - t0)
                    outcomes[str(response.status_code)] += 1
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                        status_5xx += response.status_code >= 500

            await asyncio.gather(*(one_client() for _ in range(connections)))
            elapsed = time.monotonic() - began
        total = len(latencies) + sum(1 for e in errors if not e[:3].isdigit())
        return LoadResult(
            requests=total,
            errors=len(errors),
            status_5xx=status_5xx,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            rps=total / elapsed if elapsed else 0.0,
            sample_errors=errors[:5],
            outcomes=outcomes,
        )

    return asyncio.run(run())


# -- a PostgreSQL of our own: restartable, on TCP, with a password -------------------------------


class LocalPostgres:
    """A PostgreSQL server from the pgserver wheel's binaries (PostgreSQL 16 + pgvector), owned by
    the test: listens on 127.0.0.1 with scram-sha-256 password authentication, can be stopped and
    started again on the same port. As root it runs as pgserver's `pgserver` system user.
    """

    def __init__(self, root: Path) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.role = "wcu_app"
        self.password = "pw-" + secrets.token_urlsafe(18)
        self.system_user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            self.system_user = "pgserver"
            ensure_user_exists(self.system_user)
            self.root.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(self.root)
            entry = pwd.getpwnam(self.system_user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        else:
            self.root.mkdir(parents=True, exist_ok=True)

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [str(self.bin / tool), *args],
            user=self.system_user,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def init(self) -> LocalPostgres:
        pwfile = self.root / "superuser-password"
        pwfile.write_text(self.password + "\n")
        if self.system_user:
            entry = pwd.getpwnam(self.system_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.role,
            f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=utf8",
            "--no-sync",
        )
        pwfile.unlink()
        return self

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "server.log"), "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.role}:{self.password}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_postgres(root: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(root).init()
    try:
        server.start()
        yield server
    finally:
        server.destroy()
