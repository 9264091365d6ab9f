"""Serves the API under uvicorn: `wcu-ai api` and `python -m wcu_ai.api.main`."""

from __future__ import annotations

import uvicorn

from wcu_ai.api.app import create_app
from wcu_ai.errors import ConfigError
from wcu_ai.settings import Settings


def serve(settings: Settings) -> int:
    settings.require_database_url()
    if not settings.api_keys:
        raise ConfigError("WCU_API_KEYS: set at least one API key (comma-separated, 16+ characters each)")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # our JSON logging, configured by the CLI
        access_log=False,  # the app logs each request with its request id
        # Client addresses from X-Forwarded-For are trusted only from FORWARDED_ALLOW_IPS (uvicorn's own
        # variable; default 127.0.0.1): set it to the load balancer's range.
        proxy_headers=True,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    uvicorn.Server(config).run()
    return 0


def main() -> None:
    from wcu_ai.cli import main as cli_main

    cli_main(["api"])


if __name__ == "__main__":
    main()
