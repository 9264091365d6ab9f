"""Serves the API under uvicorn: `wcu-ai api` and `python -m wcu_ai.api.main`."""

from __future__ import annotations

from types import FrameType

import uvicorn

from wcu_ai.api.app import create_app
from wcu_ai.api.protocol import timed_protocol
from wcu_ai.errors import ConfigError
from wcu_ai.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn that exits 0 after a graceful shutdown on SIGTERM/SIGINT.

    uvicorn re-raises the signal once it has shut down, so the process would die of SIGTERM
    (exit 143), which orchestrators report as a crash on every rolling deploy.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


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
        # h11 (the only HTTP implementation in the images) with a header timeout and a bounded drain
        # of bodies answered early (api/protocol.py); h11 itself refuses request heads over 16 KiB.
        http=timed_protocol(
            header_timeout=settings.api_header_timeout_seconds,
            linger_timeout=settings.api_body_timeout_seconds,
        ),
        timeout_keep_alive=settings.api_keepalive_seconds,
    )
    _Server(config).run()
    return 0


def main() -> None:
    from wcu_ai.cli import main as cli_main

    cli_main(["api"])


if __name__ == "__main__":
    main()
