"""Faults with real processes, real PostgreSQL and real signals: nothing lost, nothing done twice.

The cycle counts here are the fast ones; bench/reliability.py runs the same scenarios long.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import (
    API_KEY,
    fresh_database,
    insert_task,
    missing_tools_or_fail,
    run_cli,
    service_environ,
    wait_http,
    wait_task,
    wcu_ai_command,
)
from tests.factories import make_docx, make_pdf
from tests.reliability.harness import (
    LoadResult,
    LocalPostgres,
    Procs,
    http_load,
    install_audit,
    judge,
    noop_flood,
    sigkill_cycles,
    sigterm_cycles,
    wait_all_terminal,
)
from wcu_ai.migrations import packaged_migrations


def test_repeated_sigterm_mid_task_ends_every_task_exactly_once(db_url: str, tmp_path: Path) -> None:
    verdict = sigterm_cycles(db_url, tmp_path, cycles=3, tasks_per_cycle=4)
    assert verdict.ok, verdict.line()
    assert verdict.succeeded == verdict.tasks == 12
    # The stops really interrupted work: some tasks were handed back unfinished.
    assert verdict.released >= 1, verdict.line()


def test_sigkill_mid_task_the_standby_retakes_it_after_the_lease(db_url: str, tmp_path: Path) -> None:
    verdict = sigkill_cycles(db_url, tmp_path, cycles=2, tasks_per_cycle=3)
    assert verdict.ok, verdict.line()
    assert verdict.succeeded == verdict.tasks == 9
    # Each kill left at least the task it had just started running; the next leader retook it.
    assert verdict.retaken >= 2, verdict.line()


def test_noop_tasks_enqueued_while_the_runner_works_complete_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    verdict = noop_flood(db_url, tmp_path, tasks=500, batch=50)
    assert verdict.ok, verdict.line()
    assert verdict.succeeded == verdict.tasks == 500


def test_five_concurrent_migrate_up_apply_each_migration_once(
    db_url: str, service_env: dict[str, str]
) -> None:
    procs = [
        subprocess.Popen(
            [*wcu_ai_command(), "migrate", "up"],
            env=service_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(5)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, outputs
    names = [m.name for m in packaged_migrations()]
    applied_lines = [line for out in outputs for line in out.splitlines() if line.startswith("applied: ")]
    assert len(applied_lines) == 5, outputs
    applied = [
        name
        for line in applied_lines
        if "nothing" not in line
        for name in line.removeprefix("applied: ").split(", ")
    ]
    assert sorted(applied) == sorted(names), outputs
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT name, count(*) FROM ai_migrations GROUP BY name ORDER BY name").fetchall()
    assert rows == [(name, 1) for name in names]
    assert run_cli("migrate", "up", env=service_env).stdout.strip() == "applied: nothing, already up to date"


def stack_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


class _Loader(threading.Thread):
    """Enqueues no-op tasks and reads the queue through the API until stopped, riding out outages."""

    def __init__(self, db_url: str, base: str) -> None:
        super().__init__(name="loader", daemon=True)
        self.db_url, self.base = db_url, base
        self.enqueued: list[str] = []
        self.db_errors = 0
        self.api_statuses: list[int] = []
        self.api_errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while not self.halt.is_set():
            try:
                self.enqueued.append(insert_task(self.db_url, "noop"))
            except psycopg.OperationalError:
                self.db_errors += 1
            try:
                self.api_statuses.append(
                    httpx.get(
                        f"{self.base}/v1/tasks", params={"limit": 5}, headers=headers, timeout=10
                    ).status_code
                )
            except httpx.HTTPError:
                self.api_statuses.append(0)
            self.halt.wait(0.05)


# The pgserver wheel's PostgreSQL on TCP: not in the Nix sandbox (no pgserver there, no TCP); .ci/run runs it.
@pytest.mark.embedded_postgres
def test_postgres_restart_under_load_api_and_runner_recover_by_themselves(
    own_postgres: LocalPostgres, tmp_path: Path
) -> None:
    with fresh_database(own_postgres.url()) as db_url:
        # Polling every hour: after the outage only a re-subscribed LISTEN can wake the runner.
        env = service_environ(
            db_url,
            tmp_path,
            WCU_RUNNER_POLL_SECONDS="3600",
            WCU_TASK_LEASE_SECONDS="5",
            WCU_DB_CONNECT_TIMEOUT_SECONDS="2",
        )
        procs = Procs(env, tmp_path / "logs")
        try:
            runner = procs.start("runner")
            runner.wait_for("runner.leader", timeout=60)
            install_audit(db_url)
            api = procs.start("api")
            base = f"http://127.0.0.1:{env['WCU_API_PORT']}"
            wait_http(f"{base}/health/ready")
            loader = _Loader(db_url, base)
            loader.start()
            burst: dict[str, LoadResult] = {}
            reads = threading.Thread(
                target=lambda: burst.setdefault(
                    "result",
                    http_load(f"{base}/v1/tasks?limit=50", connections=20, seconds=4, headers=stack_auth()),
                )
            )
            try:
                while len(loader.enqueued) < 10:
                    time.sleep(0.05)
                reads.start()
                time.sleep(0.5)  # the burst of reads is under way when the server dies
                own_postgres.stop("immediate")
                down = wait_http(f"{base}/health/ready", status=503, timeout=30)
                assert down.json()["status"] == "unavailable"
                assert httpx.get(f"{base}/health", timeout=5).status_code == 200
                # Down until the loader has met the outage too: readiness can tell first.
                deadline = time.monotonic() + 30
                while loader.db_errors == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                before_outage = len(loader.enqueued)
                own_postgres.start()
                wait_http(f"{base}/health/ready", timeout=60)
                while len(loader.enqueued) < before_outage + 10:
                    time.sleep(0.05)
            finally:
                loader.halt.set()
                loader.join(30)
                reads.join(60)
            # Reads that met the outage mid-query get 503 too, never a 500 nor a dropped connection.
            assert set(burst["result"].outcomes) <= {"200", "503"}, burst["result"].sample_errors
            assert loader.db_errors > 0, "the outage was not seen by the loader"
            # Enqueued after the recovery: only LISTEN (or a runner that claims on its own) finds it.
            after = insert_task(db_url, "noop")
            wait_task(db_url, after, "succeeded", timeout=60)
            wait_all_terminal(db_url, timeout=120, procs=[runner, api])
            assert runner.popen.poll() is None and api.popen.poll() is None, "a process died in the outage"
            # The runner lost its lock with the server, stood by, and leads again.
            runner.wait_for("runner.rejoining")
            assert runner.actions().count("runner.leader") >= 2
            response = httpx.get(
                f"{base}/v1/tasks",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=10,
            )
            assert response.status_code == 200
            # During the outage the API answers 503, never a 500 nor a dropped connection.
            assert set(loader.api_statuses) <= {200, 503}, loader.api_errors
            verdict = judge("pg-restart", db_url, procs.all)
            assert verdict.ok, verdict.line()
            assert verdict.tasks == len(loader.enqueued) + 1
            for proc in (runner, api):
                proc.signal(signal.SIGTERM)
                assert proc.wait(60) == 0, proc.output()[-3000:]
            # The outage was logged with the connection string redacted, never with the password.
            logs = "".join(proc.output() for proc in procs.all)
            assert "wcu_app:***@127.0.0.1" in logs
            assert own_postgres.password not in logs
        finally:
            procs.close()


_FAKE_SOFFICE = """#!/bin/sh
# A LibreOffice stand-in: hangs, crashes or hands over to the real soffice, as `mode` says.
here=$(dirname "$0")
echo $$ >> "$here/pids"
case "$(cat "$here/mode")" in
  hang) exec sleep 600 ;;
  crash) kill -SEGV $$ ;;
  *) exec "{real}" "$@" ;;
esac
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


DOC_TIMEOUT = 45


def outcome(stack: ServiceStack, upload: dict[str, Any]) -> str:
    """What a failed assertion needs to say: the document's failure_reason, its task's last_error
    and the runner's last lines."""
    document = stack.get(f"/v1/documents/{upload['document_id']}").json()
    task = stack.get(f"/v1/tasks/{upload['task_id']}").json()
    logs = stack.runner.output()[-3000:] if stack.runner else ""
    return (
        f"document {document.get('status')}: {document.get('failure_reason')!r}; task {task.get('status')}"
        f" (attempt {task.get('attempts')}): {task.get('last_error')!r}\n{logs}"
    )


def test_a_hanging_or_crashing_libreoffice_fails_the_document_and_the_slot_recovers(
    pg_server_url: str, tmp_path: Path
) -> None:
    missing_tools_or_fail()
    real = shutil.which("soffice")
    assert real is not None
    fake_dir = tmp_path / "fake-bin"
    fake_dir.mkdir()
    fake = fake_dir / "soffice"
    fake.write_text(_FAKE_SOFFICE.replace("{real}", real))
    fake.chmod(0o755)
    mode = fake_dir / "mode"
    mode.write_text("hang")
    env = {
        "PATH": f"{fake_dir}:{os.environ['PATH']}",
        # It also bounds the real conversion at the end, LibreOffice started cold on a loaded
        # machine (6.8 s seen for one): far above any real conversion here, not a race with it.
        "WCU_DOC_TIMEOUT_SECONDS": str(DOC_TIMEOUT),
        "WCU_RUNNER_CONCURRENCY": "1",  # one slot: the document after the fault uses the same one
        "WCU_TASK_RETRY_BASE_SECONDS": "0",
    }
    with service_stack(pg_server_url, tmp_path, **env) as stack:
        hung = stack.upload(make_docx(tmp_path / "hangs.docx", ["LibreOffice will hang on this"])).json()
        document = stack.wait_document(hung["document_id"], timeout=DOC_TIMEOUT * 4)
        assert document["status"] == "failed", outcome(stack, hung)
        assert "WCU_DOC_TIMEOUT_SECONDS" in document["failure_reason"], outcome(stack, hung)
        task = stack.get(f"/v1/tasks/{hung['task_id']}").json()
        assert task["status"] == "failed" and "WCU_DOC_TIMEOUT_SECONDS" in task["last_error"], outcome(
            stack, hung
        )
        pids = [int(p) for p in (fake_dir / "pids").read_text().split()]
        assert pids and not [p for p in pids if _alive(p)], "a hung soffice was left running"

        mode.write_text("crash")
        crashed = stack.upload(
            make_docx(tmp_path / "crashes.docx", ["LibreOffice will crash on this"])
        ).json()
        document = stack.wait_document(crashed["document_id"], timeout=DOC_TIMEOUT * 4)
        assert document["status"] == "failed" and document["failure_reason"], outcome(stack, crashed)
        task = stack.get(f"/v1/tasks/{crashed['task_id']}").json()
        assert task["status"] == "failed" and "soffice" in task["last_error"], outcome(stack, crashed)

        mode.write_text("real")
        good = stack.upload(
            make_docx(tmp_path / "fine.docx", ["After the storm the slot converts again"])
        ).json()
        document = stack.wait_document(good["document_id"], timeout=DOC_TIMEOUT * 4)
        assert document["status"] == "parsed", outcome(stack, good)
        text = stack.get(f"/v1/documents/{good['document_id']}/text").json()["text"]
        assert "slot converts again" in text
        pdf = stack.upload(make_pdf(tmp_path / "fine.pdf", ["a PDF needs no LibreOffice"])).json()
        assert stack.wait_document(pdf["document_id"])["status"] == "parsed"
        assert stack.runner is not None and stack.runner.popen.poll() is None
