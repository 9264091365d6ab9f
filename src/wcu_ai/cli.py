"""`wcu-ai`: the one entry point. Parses arguments, loads settings, configures logging, runs.

Errors a user can act on (WcuError) end as one line on stderr: exit 2 for configuration, 1 for
everything else. Never a traceback, never a password.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from wcu_ai import __version__
from wcu_ai.errors import ConfigError, WcuError
from wcu_ai.settings import Settings, load_settings

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

_DURATION = re.compile(r"^(\d{1,6})([dhms])$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_MAX_DURATION_DAYS = 36500


def parse_duration(text: str) -> int:
    """Seconds in `30d`, `12h`, `90m` or `45s`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give one like 30d, 12h, 90m or 45s")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    # PostgreSQL's timestamps begin in 4713 BC: a cutoff before that is an error in the database.
    if seconds > _MAX_DURATION_DAYS * _UNIT_SECONDS["d"]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is longer than {_MAX_DURATION_DAYS}d (100 years), longer than any task has existed"
        )
    return seconds


def parse_task_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a task id (a UUID, as GET /v1/tasks shows)"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wcu-ai", description="WeconnectU AI Server")
    parser.add_argument("--version", action="version", version=f"wcu-ai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="serve the HTTP API (uvicorn)")
    sub.add_parser("runner", help="run the singleton task runner (initialises the database first)")
    health = sub.add_parser(
        "healthcheck", help="probe the API in this container (exit 0 when healthy): for ECS/Docker checks"
    )
    health.add_argument("--ready", action="store_true", help="probe /health/ready instead of /health")
    health.add_argument(
        "--runner", action="store_true", help="probe the runner's listener (WCU_RUNNER_METRICS_PORT) instead"
    )

    migrate = sub.add_parser("migrate", help="database migrations")
    msub = migrate.add_subparsers(dest="migrate_command", required=True)
    msub.add_parser("up", help="apply pending migrations")
    down = msub.add_parser("down", help="revert the newest migrations")
    down.add_argument("--steps", type=int, default=1)
    msub.add_parser("status", help="list migrations and whether they are applied")

    enqueue = sub.add_parser("enqueue", help="enqueue a task (operations, diagnostics)")
    enqueue.add_argument("task_type")
    enqueue.add_argument("--payload", default="{}", help="JSON object")
    enqueue.add_argument("--max-attempts", type=int, default=None)

    tasks = sub.add_parser("tasks", help="operate the task queue: prune, retry, cancel")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True)
    prune = tsub.add_parser(
        "prune", help="delete tasks that finished (succeeded, failed, cancelled) long ago"
    )
    prune.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="DURATION", help="30d, 12h, 90m or 45s"
    )
    prune.add_argument("--dry-run", action="store_true", help="count them and delete nothing")
    retry = tsub.add_parser("retry", help="queue a failed or cancelled task again, due now")
    retry.add_argument("task_id", type=parse_task_id)
    cancel = tsub.add_parser("cancel", help="cancel a queued or running task")
    cancel.add_argument("task_id", type=parse_task_id)

    dev = sub.add_parser("dev", help="run the whole stack locally on an embedded PostgreSQL")
    dev.add_argument("--data-dir", default=".wcu-dev", help="where the embedded database and dev key live")
    dev.add_argument("--port", type=int, default=None, help="the API's port (default: WCU_API_PORT, 8000)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # Agno reports usage unless told not to; the operator opts in explicitly.
    os.environ.setdefault("AGNO_TELEMETRY", "false")
    try:
        settings = load_settings()
        from wcu_ai.logconfig import configure_logging

        # `wcu-ai dev` talks to a person at a terminal unless told otherwise.
        text_by_default = args.command == "dev" and "WCU_LOG_FORMAT" not in os.environ
        configure_logging(settings.log_level, "text" if text_by_default else settings.log_format)
        code = _run(args, settings)
    except ConfigError as exc:
        print(f"wcu-ai: configuration error: {exc.message}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    except WcuError as exc:
        print(f"wcu-ai: error: {exc.message}", file=sys.stderr)  # noqa: T201
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "api":
        from wcu_ai.agents.model import ModelCheck

        # Under way in a child while the web stack is imported (agents/model.py).
        model_check = ModelCheck.start(settings.agent_model)
        try:
            from wcu_ai.api.main import serve

            return serve(settings, model_check=model_check)
        finally:
            if model_check is not None:
                model_check.close()
    if args.command == "runner":
        settings.require_database_url()
        if os.getpid() == 1:
            from wcu_ai.task_runner.reaper import run_as_init

            return run_as_init([sys.executable, "-m", "wcu_ai", "runner"])
        from wcu_ai.task_runner.main import run_runner

        return asyncio.run(run_runner(settings))
    if args.command == "healthcheck":
        from wcu_ai.api.healthcheck import check_health

        healthy, seen = check_health(settings, ready=args.ready, runner=args.runner)
        print(seen, file=sys.stdout if healthy else sys.stderr)
        return 0 if healthy else 1
    if args.command == "migrate":
        return _migrate(args, settings)
    if args.command == "enqueue":
        return asyncio.run(_enqueue(args, settings))
    if args.command == "tasks":
        return asyncio.run(_tasks(args, settings))
    if args.command == "dev":
        from wcu_ai.devstack import run_dev

        return run_dev(settings, data_dir=args.data_dir, port=args.port)
    raise AssertionError(args.command)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from wcu_ai.migrations import MigrationTool

    settings.require_database_url()
    tool = MigrationTool(settings)
    if args.migrate_command == "up":
        applied = tool.run_up()
        print("applied: " + (", ".join(applied) if applied else "nothing, already up to date"))  # noqa: T201
    elif args.migrate_command == "down":
        reverted = tool.run_down(args.steps)
        print("reverted: " + (", ".join(reverted) if reverted else "nothing"))  # noqa: T201
    else:
        for row in tool.status():
            when = row.applied_at.isoformat(timespec="seconds") if row.applied_at else "-"
            print(f"{row.state:<8} {row.name:<40} {when}")  # noqa: T201
    return 0


@contextlib.asynccontextmanager
async def _operator_pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    """The pool of a one-shot operator command. Its first connection is made directly, so an
    unreachable database is one error line at once, not the pool's retries for
    WCU_DB_CONNECT_TIMEOUT_SECONDS, each logged, before it. The pool's own warnings stay unprinted
    all along: the command's one error line says what failed."""
    from wcu_ai.database import connect_async, open_pool

    await (await connect_async(settings)).close()
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    async with open_pool(settings) as pool:
        yield pool


async def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from wcu_ai.tasks import queue

    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--payload is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise ConfigError("--payload must be a JSON object")
    settings.require_database_url()
    async with _operator_pool(settings) as pool, pool.connection() as conn:
        task_id = await queue.enqueue(
            conn, args.task_type, payload, max_attempts=args.max_attempts or settings.task_max_attempts
        )
    print(task_id)  # noqa: T201
    return 0


async def _tasks(args: argparse.Namespace, settings: Settings) -> int:
    from wcu_ai.tasks import queue
    from wcu_ai.tasks.control import cancel_task, retry_task
    from wcu_ai.tasks.model import TaskStatus
    from wcu_ai.tasks.retention import prune_finished

    settings.require_database_url()
    async with _operator_pool(settings) as pool:
        if args.tasks_command == "prune":
            if args.dry_run:
                async with pool.connection() as conn:
                    cutoff = await queue.prune_cutoff(conn, args.older_than)
                    count = await queue.count_prunable(conn, cutoff)
                print(f"would delete {count} tasks finished before {cutoff.isoformat()}; deleted nothing")  # noqa: T201
                return 0
            report = await prune_finished(pool, older_than_seconds=args.older_than)
            more = "" if report.complete else "; more remain, run it again"
            print(f"deleted {report.deleted} tasks finished before {report.cutoff.isoformat()}{more}")  # noqa: T201
            return 0
        async with pool.connection() as conn:
            if args.tasks_command == "retry":
                await retry_task(conn, args.task_id, attempts=settings.task_max_attempts)
                print(  # noqa: T201
                    f"task {args.task_id} queued again, due now, with {settings.task_max_attempts} more attempts"
                )
            elif await cancel_task(conn, args.task_id) == TaskStatus.RUNNING:
                print(  # noqa: T201
                    f"task {args.task_id} cancelled; the runner working it abandons it at its next lease "
                    "renewal (a third of WCU_TASK_LEASE_SECONDS) and records no outcome"
                )
            else:
                print(f"task {args.task_id} cancelled; it will not run")  # noqa: T201
    return 0
