"""PID 1 duties for the runner when it is a container's first process.

The runner kills LibreOffice's process groups on timeouts and recycling; their orphans are
re-parented to PID 1, and a PID 1 that never waits for them leaves zombies behind for the
container's lifetime. So when `wcu-ai runner` finds itself PID 1, it becomes a minimal init
(what tini does): it starts the real runner as its only child, forwards stop signals to it,
reaps every orphan, and exits with the runner's exit code. This process spawns nothing else,
so waiting on any child can never steal another waiter's exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run_as_init(argv: Sequence[str]) -> int:
    child = subprocess.Popen(list(argv))

    def forward(signum: int, _frame: object) -> None:
        # The child may have exited between the signal and this call: nothing left to stop.
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            return

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        # PEP 475: a signal interrupts the wait, runs `forward`, and the wait is retried.
        pid, status = os.waitpid(-1, 0)
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            code = child.returncode
            return 128 - code if code < 0 else code
