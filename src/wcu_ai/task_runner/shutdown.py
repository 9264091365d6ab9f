"""SIGTERM/SIGINT set an asyncio.Event; nothing else happens in a signal handler."""

from __future__ import annotations

import asyncio
import logging
import signal

logger = logging.getLogger(__name__)


def stop_event_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    stop = asyncio.Event()

    def _on_signal(signum: int) -> None:
        if not stop.is_set():
            logger.info(
                "stop requested",
                extra={"action": "runner.stop_requested", "signal": signal.Signals(signum).name},
            )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum)
    return stop
