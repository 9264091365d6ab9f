"""The runner's scratch directory: one per live runner process, and what dead runners left removed.

Everything a runner writes while it parses (LibreOffice profiles, the package copies and PDFs of
conversions, downloaded originals) lives in `<WCU_WORK_DIR>/runner-<random>/`, and the runner
holds an exclusive lock (flock) on that directory itself for as long as it lives. The kernel
drops the lock when the process dies, however it dies, so at its start a runner can tell
leftovers from a live neighbour: every `runner-*` directory whose lock it can take belongs to a
runner that is gone (SIGKILL, a crash, the OOM killer). Their soffice processes, which would
otherwise go on running (and burning CPU) until something reused their profile, are killed,
and the directories removed, before the runner takes its first task.

A hot standby sharing WCU_WORK_DIR on the same host holds its own lock, so its directory is
left alone; the API's files (`uploads/` in `wcu-ai dev`, where both share the directory) and
anything else not named like a runner's are never touched. A directory is created under a
`.starting-` name, locked, and only then renamed to `runner-…`, so a runner that is starting
is never taken for a dead one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from wcu_ai.documents.office import kill_stale_office, remove_stale_pipes

logger = logging.getLogger(__name__)

_OWN_PREFIX = "runner-"
_STARTING_PREFIX = ".starting-"
# A `.starting-` directory older than this was left by a runner that died while starting.
_STARTING_GRACE_SECONDS = 60.0


class RunnerWorkDir:
    """This runner's own directory under `work_dir`; open() cleans the dead runners' first."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.path: Path | None = None
        self._lock_fd: int | None = None

    def open(self) -> Path:
        """Remove what dead runners left, then create and lock this runner's directory."""
        if self.path is not None:
            return self.path
        self.work_dir.mkdir(parents=True, exist_ok=True)
        removed, killed = self._remove_dead()
        starting = Path(tempfile.mkdtemp(prefix=_STARTING_PREFIX, dir=self.work_dir))
        fd = _lock(starting)
        if fd is None:  # pragma: no cover - a directory just made, which nobody else knows
            raise OSError(f"cannot lock {starting}")
        path = self.work_dir / (_OWN_PREFIX + starting.name.removeprefix(_STARTING_PREFIX))
        starting.rename(path)
        self.path, self._lock_fd = path, fd
        logger.info(
            "runner work directory ready",
            extra={
                "action": "runner.work_dir",
                "path": str(path),
                "dead_runner_dirs_removed": removed,
                "stale_soffice_killed": killed,
            },
        )
        return path

    def close(self) -> None:
        """Remove this runner's directory and release its lock."""
        path, fd = self.path, self._lock_fd
        self.path, self._lock_fd = None, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)

    def _remove_dead(self) -> tuple[int, int]:
        removed = killed = 0
        for entry in sorted(self.work_dir.iterdir()):
            if entry.name.startswith(_STARTING_PREFIX):
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime < _STARTING_GRACE_SECONDS:
                        continue
            elif not entry.name.startswith(_OWN_PREFIX):
                continue
            if not entry.is_dir() or entry.is_symlink():
                continue
            outcome = _remove_if_dead(entry)
            if outcome is not None:
                removed += 1
                killed += outcome
        return removed, killed


def _lock(directory: Path) -> int | None:
    """An exclusive flock on the directory itself (its descriptor), or None if someone holds it."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_if_dead(directory: Path) -> int | None:
    """Remove a runner directory whose owner is gone; how many soffice groups were killed.

    None when its owner is alive (the lock is held) or it cannot be locked at all.
    """
    fd = _lock(directory)
    if fd is None:
        return None
    try:
        killed = kill_stale_office(directory)
        remove_stale_pipes(directory)
        for _ in range(50):  # killed processes may still be writing for a moment
            shutil.rmtree(directory, ignore_errors=True)
            if not directory.exists():
                break
            time.sleep(0.02)
        logger.warning(
            "removed what a dead runner left",
            extra={"action": "runner.dead_runner_cleaned", "path": str(directory), "soffice_killed": killed},
        )
        return killed
    finally:
        os.close(fd)
