"""The runner's composition root: `wcu-ai runner` and `python -m wcu_ai.task_runner.main`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator

from wcu_ai.agents.metrics import METRICS_TASK, calculate_agent_metrics
from wcu_ai.database import open_pool
from wcu_ai.documents.handlers import DocumentParser
from wcu_ai.documents.store import PARSE_TASK
from wcu_ai.documents.sweep import SWEEP_TASK, sweep_stuck_documents
from wcu_ai.embeddings import build_embedder
from wcu_ai.errors import DatabaseUnavailableError
from wcu_ai.settings import Settings
from wcu_ai.task_runner.initialize import initialize_database
from wcu_ai.task_runner.leader import Leadership
from wcu_ai.task_runner.metrics import QueueStats, RunnerMetrics
from wcu_ai.task_runner.metrics_listener import serve_metrics
from wcu_ai.task_runner.schedule import Scheduler, builtin_schedules
from wcu_ai.task_runner.shutdown import stop_event_on_signals
from wcu_ai.task_runner.worker import Worker
from wcu_ai.tasks.registry import TaskRegistry, diagnostic_registry
from wcu_ai.tasks.retention import PRUNE_TASK, prune_tasks

logger = logging.getLogger(__name__)


def build_registry(
    settings: Settings, metrics: RunnerMetrics | None = None
) -> tuple[TaskRegistry, contextlib.AsyncExitStack]:
    """Every task type this runner works, and the resources their handlers hold open."""
    registry = diagnostic_registry()
    resources = contextlib.AsyncExitStack()
    parser = DocumentParser(
        settings, embedder=build_embedder(settings.embedder, settings.embedder_dimensions), metrics=metrics
    )
    parser.report_tools()
    resources.callback(parser.close)
    parser.start()
    registry.register(PARSE_TASK, parser.handle)
    registry.register(METRICS_TASK, calculate_agent_metrics)
    registry.register(PRUNE_TASK, prune_tasks)
    registry.register(SWEEP_TASK, sweep_stuck_documents)
    return registry, resources


async def run_runner(settings: Settings) -> int:
    """Runs until SIGTERM/SIGINT; 0 on a clean stop.

    Losing leadership (the lock's connection broke: database restart, failover, network) stops
    the work and puts the runner back on standby: it waits for the lock again like a second runner
    would, and works again once it holds it. The process never needs an outside restart for that.
    """
    stop = stop_event_on_signals(asyncio.get_running_loop())
    runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    logger.info(
        "runner starting",
        extra={"action": "runner.starting", "runner": runner_id, "concurrency": settings.runner_concurrency},
    )
    metrics = RunnerMetrics()
    registry, resources = build_registry(settings, metrics)
    metrics.track_task_types(registry.task_types)
    async with resources, metrics_served(settings, metrics):
        await asyncio.to_thread(initialize_database, settings)
        while not stop.is_set():
            leadership = Leadership(settings, runner_id)
            if not await leadership.acquire(stop):
                break
            metrics.leader.set(1)
            try:
                async with open_pool(settings, min_size=2) as pool:
                    worker = Worker(settings, pool, registry, runner_id, metrics=metrics)
                    # The leader alone enqueues the scheduled tasks; its worker runs them like any other.
                    scheduler = Scheduler(settings, pool, builtin_schedules(settings), runner_id)
                    async with scheduler.running(stop, leadership.lost):
                        await worker.run(stop, leadership.lost)
            except DatabaseUnavailableError as exc:
                # The database went away between taking the lock and opening the pool.
                logger.warning(
                    "database unavailable; back to standby",
                    extra={"action": "runner.db_error", "error": exc.message},
                )
            finally:
                metrics.leader.set(0)
                await leadership.release()
            if not stop.is_set():
                logger.warning(
                    "not the leader any more; standing by to take the lock again",
                    extra={"action": "runner.rejoining", "runner": runner_id},
                )
    logger.info("runner stopped", extra={"action": "runner.stopped", "runner": runner_id})
    return 0


@contextlib.asynccontextmanager
async def metrics_served(settings: Settings, metrics: RunnerMetrics) -> AsyncIterator[None]:
    """The metrics listener for the runner's whole life, from before the database is initialised:
    a standby, and a runner still waiting for its database, answer too. Off without a port."""
    if settings.runner_metrics_port is None:
        yield
        return
    queue = QueueStats(settings)
    metrics.registry.register(queue)
    try:
        with serve_metrics(
            metrics.registry, settings.runner_metrics_host, settings.runner_metrics_port, settings.metrics_key
        ):
            yield
    finally:
        queue.close()


def main() -> None:
    from wcu_ai.cli import main as cli_main

    cli_main(["runner"])


if __name__ == "__main__":
    main()
