"""Serves the API under uvicorn: `wcu-ai api` and `python -m wcu_ai.api.main`."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from wcu_ai.api.app import create_app
from wcu_ai.api.drain import Drain
from wcu_ai.api.protocol import timed_protocol
from wcu_ai.errors import ConfigError
from wcu_ai.settings import Settings

if TYPE_CHECKING:
    from wcu_ai.agents.model import ModelCheck

logger = logging.getLogger(__name__)

# After the drain, how long requests in flight may take before uvicorn cancels them; an
# orchestrator's grace period must cover the drain plus this (deploy/kubernetes, deployment.md).
GRACEFUL_SHUTDOWN_SECONDS = 30


class _Server(uvicorn.Server):
    """uvicorn that drains on SIGTERM, then exits 0 after a graceful shutdown.

    With a drain period, the first SIGTERM only starts the drain (readiness answers 503, every
    request is still served); the shutdown begins when the period is over, or at a second SIGTERM
    or a SIGINT (a person at a terminal does not wait for the drain). The shutdown itself still
    waits up to GRACEFUL_SHUTDOWN_SECONDS for the requests in flight, which a repeated signal does
    not cut off (uvicorn's force exit on a further SIGINT still waits for the open connections to
    close, asyncio's Server.wait_closed on Python 3.12). uvicorn re-raises the signal once it has
    shut down, so the process would die of SIGTERM (exit 143), which orchestrators report as a
    crash on every rolling deploy: the captured signals are dropped.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # In a signal handler: set state only; on_tick logs and acts on it.
        if sig == signal.SIGTERM and self.drain_seconds > 0 and self.started and not self.drain.draining:
            self.drain.begin(self.drain_seconds)
            return
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining and not self._drain_logged:
            self._drain_logged = True
            logger.info(
                "draining: /health/ready answers 503, requests are still served",
                extra={"action": "api.draining", "drain_s": self.drain_seconds},
            )
        if self.drain.over() and not self.should_exit:
            logger.info("drain over; shutting down", extra={"action": "api.drained"})
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings, *, model_check: ModelCheck | None = None) -> int:
    """Runs the API until it is stopped; `model_check`: WCU_AGENT_MODEL being checked (agents/model.py)."""
    settings.require_database_url()
    if not settings.api_keys:
        raise ConfigError("WCU_API_KEYS: set at least one API key (comma-separated, 16+ characters each)")
    if settings.api_max_scratch_bytes < settings.upload_max_bytes:
        raise ConfigError(
            f"WCU_API_MAX_SCRATCH_BYTES ({settings.api_max_scratch_bytes}) is below WCU_UPLOAD_MAX_BYTES "
            f"({settings.upload_max_bytes}): an upload at the limit could never be received; raise it"
        )
    app = create_app(settings, model_check=model_check)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # our JSON logging, configured by the CLI
        access_log=False,  # the app logs each request with its request id
        # Client addresses from X-Forwarded-For are trusted only from FORWARDED_ALLOW_IPS (uvicorn's own
        # variable; default 127.0.0.1): set it to the load balancer's range.
        proxy_headers=True,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
        # h11 (the only HTTP implementation in the images) with a header timeout and a bounded drain
        # of bodies answered early (api/protocol.py); h11 itself refuses request heads over 16 KiB.
        http=timed_protocol(
            header_timeout=settings.api_header_timeout_seconds,
            linger_timeout=settings.api_body_timeout_seconds,
        ),
        timeout_keep_alive=settings.api_keepalive_seconds,
        # asyncio's own loop, as in the images: uvicorn's "auto" takes uvloop wherever it happens to
        # be installed (the bench group brings it), and the API would not be the one measured and tested.
        loop="asyncio",
    )
    _Server(config, app.state.drain, settings.api_drain_seconds).run()
    return 0


def main() -> None:
    from wcu_ai.cli import main as cli_main

    cli_main(["api"])


if __name__ == "__main__":
    main()
