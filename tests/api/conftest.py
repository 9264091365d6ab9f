"""A running service for a whole test module: its own database, the real API and runner processes."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY, Proc, fresh_database, service_environ, wait_http, wcu_ai_command


@dataclass
class ServiceStack:
    base: str
    db_url: str
    work_dir: Path
    api: Proc
    runner: Proc | None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def get(self, path: str, *, key: str | None = API_KEY, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.base}{path}", headers=headers, params=params, timeout=30)

    def upload(self, path: Path, *, name: str | None = None, field: str = "file") -> httpx.Response:
        with path.open("rb") as f:
            return httpx.post(
                f"{self.base}/v1/documents",
                headers=self.auth,
                files={field: (name or path.name, f, "application/octet-stream")},
                timeout=30,
            )

    def wait_document(self, document_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.get(f"/v1/documents/{document_id}").json()
            if body["status"] in ("parsed", "failed"):
                return body
            time.sleep(0.1)
        logs = self.runner.output() if self.runner else ""
        raise AssertionError(f"document {document_id} not done within {timeout}s: {body}\n{logs}")


@contextlib.contextmanager
def service_stack(
    pg_server_url: str, tmp: Path, *, runner: bool = True, **env: str
) -> Iterator[ServiceStack]:
    """A fresh database, the runner (which migrates it) unless runner=False, and the API; stopped with SIGTERM."""
    with fresh_database(pg_server_url, "wcu_stack") as db_url:
        environ = service_environ(db_url, tmp, **env)
        base = f"http://127.0.0.1:{environ['WCU_API_PORT']}"
        procs: list[Proc] = []
        try:
            runner_proc = None
            if runner:
                runner_proc = Proc([*wcu_ai_command(), "runner"], environ, tmp / "runner.log")
                procs.append(runner_proc)
                runner_proc.wait_for("runner.leader", timeout=60)
            else:
                from wcu_ai.migrations import MigrationTool
                from wcu_ai.settings import Settings

                MigrationTool(Settings(DATABASE_URL=db_url)).run_up()
            api = Proc([*wcu_ai_command(), "api"], environ, tmp / "api.log")
            procs.append(api)
            wait_http(f"{base}/health/ready")
            yield ServiceStack(base, db_url, tmp / "work", api, runner_proc)
            for proc in reversed(procs):
                proc.signal(signal.SIGTERM)
            codes = [proc.wait() for proc in reversed(procs)]
            assert codes == [0] * len(procs), [p.output()[-2000:] for p in procs]
        finally:
            for proc in procs:
                proc.stop()
