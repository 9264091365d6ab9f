"""Each API process's own directory for upload scratch files, and the removal of dead ones'.

An API process writes its uploads under <work_dir>/uploads/<pid>-<start ms>/ and holds an
exclusive flock(2) on the `lock` file in it for its whole life. The kernel drops the lock when the
process ends, kill -9 included, so at start a process removes every directory whose lock it can
take, with whatever a killed predecessor left in it, and never one of another live process
sharing the work directory (several API workers, `wcu-ai dev` next to a test run, containers on a
shared volume, whose pids could not be told apart). A directory is created under a `.new-` name,
locked, then renamed into place: a concurrent start that removed it first only makes the
creator try again.

Files directly in uploads/ come from versions before these directories; they are removed once a
day old (an upload never takes that long: each body chunk has WCU_API_BODY_TIMEOUT_SECONDS).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

_LOCK = "lock"
_STAGING = ".new-"
_LEGACY_MAX_AGE_SECONDS = 24 * 3600
_ATTEMPTS = 5


@contextlib.contextmanager
def upload_scratch(uploads: Path) -> Iterator[Path]:
    """This process's scratch directory under `uploads`, stale ones removed first; removed at exit."""
    uploads.mkdir(parents=True, exist_ok=True)
    removed = remove_stale(uploads)
    if removed:
        logger.info(
            "removed upload scratch files of processes that are gone",
            extra={"action": "api.scratch_cleaned", "directories": removed},
        )
    path, lock_fd = _create_own(uploads)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock_fd)


def remove_stale(uploads: Path) -> list[str]:
    """Removes the directories no live process holds, and legacy loose files a day old."""
    removed = []
    for entry in uploads.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if _remove_if_unlocked(entry):
                removed.append(entry.name)
        elif entry.name.startswith("upload-"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - entry.stat().st_mtime > _LEGACY_MAX_AGE_SECONDS:
                    entry.unlink()
                    removed.append(entry.name)
    return removed


def _remove_if_unlocked(directory: Path) -> bool:
    try:
        fd = os.open(directory / _LOCK, os.O_RDONLY)
    except FileNotFoundError:
        # Never locked: its creator died before it locked, or removed it meanwhile.
        shutil.rmtree(directory, ignore_errors=True)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is alive
        # Removed while this process holds the lock: its owner is gone.
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _create_own(uploads: Path) -> tuple[Path, int]:
    for _ in range(_ATTEMPTS):
        name = f"{os.getpid()}-{time.time_ns() // 1_000_000}"
        staging, final = uploads / f"{_STAGING}{name}", uploads / name
        fd = -1
        try:
            staging.mkdir(mode=0o700)
            fd = os.open(staging / _LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            staging.rename(final)
        except (FileNotFoundError, FileExistsError, BlockingIOError):
            # Another process's start removed the staging directory first (or a name collided).
            if fd >= 0:
                os.close(fd)
            continue
        return final, fd
    raise RuntimeError(f"could not create a scratch directory in {uploads} after {_ATTEMPTS} attempts")
