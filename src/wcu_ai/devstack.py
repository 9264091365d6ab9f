"""`wcu-ai dev`: the whole stack on one machine, for development.

With no DATABASE_URL it starts an embedded PostgreSQL + pgvector (the pgserver wheel of the dev
dependency group, imported only here) with its data under --data-dir, then the runner and the
API as child processes, exactly the commands the images run. Ctrl-C stops them gracefully, then
the database.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import psycopg

from wcu_ai.errors import ConfigError
from wcu_ai.settings import Settings, redact_url

DEV_DATABASE = "wcu_ai"


def dev_api_key(data_dir: Path) -> str:
    """A key kept in the data dir so it survives restarts (mode 0600)."""
    path = data_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    key = "dev-" + secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def start_embedded_postgres(data_dir: Path) -> tuple[object, str]:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver does not need it.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pgserver
    except ImportError:
        raise ConfigError(
            "DATABASE_URL is not set and the embedded PostgreSQL (pgserver, dev dependency group) is not "
            "installed: run `uv sync` or set DATABASE_URL"
        ) from None
    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEV_DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DEV_DATABASE}"')
    return server, server.get_uri(DEV_DATABASE)


def run_dev(settings: Settings, *, data_dir: str, port: int | None = None) -> int:
    # Without --port the API listens where WCU_API_PORT (default 8000) says, like `wcu-ai api`.
    port = settings.api_port if port is None else port
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    server = None
    url = settings.database_url
    if not url:
        server, url = start_embedded_postgres(data)
    key = dev_api_key(data)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WCU_API_KEYS": ",".join((key, *settings.api_keys)),
        "WCU_API_HOST": "127.0.0.1",
        "WCU_API_PORT": str(port),
        "WCU_LOG_FORMAT": os.environ.get("WCU_LOG_FORMAT", "text"),
    }
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # Own process groups: Ctrl-C reaches only this process, which stops the children in order.
    children = {
        name: subprocess.Popen([sys.executable, "-m", "wcu_ai", name], env=env, process_group=0)
        for name in ("runner", "api")
    }
    print(  # noqa: T201 - the banner is this command's output
        f"\nwcu-ai dev\n  API       http://127.0.0.1:{port}  (docs: http://127.0.0.1:{port}/docs)\n"
        f"  API key   {key}\n  database  {redact_url(url)}\n"
        f"  try       curl -H 'Authorization: Bearer {key}' http://127.0.0.1:{port}/v1/tasks\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    failed: str | None = None
    try:
        while not stop.wait(0.2):
            failed = next((name for name, p in children.items() if p.poll() is not None), None)
            if failed:
                break
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children.values():
            try:
                proc.wait(timeout=settings.runner_grace_seconds + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]
    if failed:
        print(f"wcu-ai dev: the {failed} exited with {children[failed].returncode}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
