"""The reference processes bench/run starts next to ours (never imported by the service).

    python bench/apps.py bare              a bare FastAPI app: one route, /health, under the same
                                           uvicorn settings as `wcu-ai api` (wcu_ai.api.main.serve)
    python bench/apps.py api-noauth        `wcu-ai api` with require_api_key overridden by a no-op
    python bench/apps.py runner-nolisten   `wcu-ai runner` without its LISTEN side task: the
                                           polling fallback alone

Configured by the same environment as the real commands (WCU_API_HOST, WCU_API_PORT, …).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any


def serve_bare() -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # The keyword arguments of wcu_ai.api.main.serve, nothing else.
    config = uvicorn.Config(
        app,
        host=os.environ.get("WCU_API_HOST", "127.0.0.1"),
        port=int(os.environ.get("WCU_API_PORT", "8000")),
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
        server_header=False,
        loop="asyncio",
    )
    uvicorn.Server(config).run()


def serve_api_without_auth() -> None:
    from fastapi import FastAPI

    from wcu_ai.api import main as api_main
    from wcu_ai.api.deps import require_api_key
    from wcu_ai.cli import main as cli_main
    from wcu_ai.settings import Settings

    create_app = api_main.create_app

    async def no_key_check() -> None:  # a coroutine like the check it replaces: no thread hop either
        return None

    def create_app_without_auth(settings: Settings, **kwargs: Any) -> FastAPI:
        app = create_app(settings, **kwargs)  # serve()'s keyword arguments (model_check) pass through
        app.dependency_overrides[require_api_key] = no_key_check
        return app

    api_main.create_app = create_app_without_auth
    cli_main(["api"])


def run_runner_without_listen() -> None:
    from wcu_ai.cli import main as cli_main
    from wcu_ai.task_runner.worker import Worker

    async def no_listen(self: Worker) -> None:
        await asyncio.Event().wait()

    Worker._listen = no_listen  # type: ignore[method-assign]
    cli_main(["runner"])


if __name__ == "__main__":
    {"bare": serve_bare, "api-noauth": serve_api_without_auth, "runner-nolisten": run_runner_without_listen}[
        sys.argv[1]
    ]()
