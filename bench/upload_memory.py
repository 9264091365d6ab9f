"""Memory of the real `wcu-ai api` under concurrent maximum-size uploads, and of the runner reading them.

    uv run python bench/upload_memory.py                    # 10 concurrent uploads of 50 MiB
    uv run python bench/upload_memory.py --uploads 20 --size-mib 20

On WCU_TEST_DATABASE_URL or an embedded pgserver, loopback only. Each upload is a distinct file of
exactly WCU_UPLOAD_MAX_BYTES (`%PDF-` and random bytes, so none is a duplicate of another); the
uploads are streamed from disk by one thread each. The API's peak RSS (VmHWM, reset through
/proc/<pid>/clear_refs before each phase) is compared with the RSS it had just before:

- reference: one upload alone, in the same run;
- load: N uploads at once.

It prints the growth of each, growth(N) / growth(1) (flat: about 1; whole files in memory: about N)
and growth(N) / upload size (whole files in memory: 1 or more per upload). Then it starts the runner,
which reads every original back (to its scratch file) before parsing it, and prints the runner's
growth the same way. Nothing is asserted; the figures are in bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import API_KEY, Proc, postgres_url, service_environ, wcu_ai_command


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class PeakRss:
    """Peak RSS of a process during a block: VmHWM after resetting it (Linux >= 4.0), and a 10 ms
    sampler of VmRSS as a floor in case the reset is not allowed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start_kib = 0
        self.peak_kib = 0

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakRss]:
        self.start_kib = status_kib(self.pid, "VmRSS")
        reset = True
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            reset = False
        sampled = [self.start_kib]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                with contextlib.suppress(OSError, RuntimeError):
                    sampled.append(status_kib(self.pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            done.set()
            sampler.join()
            hwm = status_kib(self.pid, "VmHWM") if reset else 0
            self.peak_kib = max(max(sampled), hwm)

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.start_kib) / 1024


def make_upload(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.write(b"%PDF-1.4\n")
        left = size - 9
        while left > 0:
            n = min(left, 1024 * 1024)
            f.write(os.urandom(n))
            left -= n
    return path


def upload(base: str, path: Path) -> int:
    with path.open("rb") as f, httpx.Client(timeout=600) as client:
        response = client.post(
            f"{base}/v1/documents",
            headers={"Authorization": f"Bearer {API_KEY}"},
            files={"file": (path.name, f, "application/pdf")},
        )
    return response.status_code


def upload_all(base: str, paths: list[Path]) -> list[int]:
    codes: list[int] = [0] * len(paths)

    def one(i: int) -> None:
        codes[i] = upload(base, paths[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    return codes


def wait_done(stack: ServiceStack, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = stack.get("/v1/documents", limit=200).json()["items"]
        if sum(d["status"] in ("parsed", "failed") for d in page) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the runner did not finish {count} documents within {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument(
        "--size-mib", type=int, default=50, help="WCU_UPLOAD_MAX_BYTES, the size of each upload"
    )
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    with (
        tempfile.TemporaryDirectory(prefix="wcu-bench-upload-") as tmp_name,
        postgres_url("wcu-bench-pg") as server,
    ):
        tmp = Path(tmp_name)
        files = [make_upload(tmp / f"upload-{i}.pdf", size) for i in range(args.uploads + 1)]
        # One attempt: the random "PDFs" fail in the runner at once, after it has read them back.
        (tmp / "stack").mkdir()
        (tmp / "runner").mkdir()
        env = {"WCU_UPLOAD_MAX_BYTES": str(size), "WCU_TASK_MAX_ATTEMPTS": "1"}
        with service_stack(server, tmp / "stack", runner=False, **env) as stack:
            api = PeakRss(stack.api.popen.pid)
            # Warm-up: imports, the pool's connections, the first multipart parse.
            warm = make_upload(tmp / "warm.pdf", 64 * 1024)
            assert upload(stack.base, warm) == 202
            with api.measure():
                codes = upload_all(stack.base, files[:1])
            one = api.growth_mib
            assert codes == [202], codes
            with api.measure():
                codes = upload_all(stack.base, files[1:])
            many = api.growth_mib
            assert codes == [202] * args.uploads, codes
            print(f"upload size {args.size_mib} MiB; API RSS before the load {api.start_kib / 1024:.0f} MiB")
            print(f"API peak RSS growth, 1 upload (reference)          {one:8.1f} MiB")
            print(f"API peak RSS growth, {args.uploads} concurrent uploads          {many:8.1f} MiB")
            print(f"  ratio to the reference                          {many / max(one, 0.1):8.2f}x")
            print(
                f"  ratio to the upload size ({args.size_mib} MiB)               {many / args.size_mib:8.2f}x"
            )
            print(f"  per upload                                      {many / args.uploads:8.1f} MiB")

            environ = service_environ(
                stack.db_url, tmp / "runner", WCU_RUNNER_CONCURRENCY="2", WCU_TASK_MAX_ATTEMPTS="1"
            )
            runner = Proc([*wcu_ai_command(), "runner"], environ, tmp / "runner.log")
            try:
                runner.wait_for("runner.leader", timeout=120)
                reader = PeakRss(runner.popen.pid)
                with reader.measure():
                    wait_done(stack, args.uploads + 2, timeout=900)
                print(
                    f"runner peak RSS growth reading {args.uploads + 1} originals (2 at a time) "
                    f"{reader.growth_mib:8.1f} MiB, {reader.growth_mib / args.size_mib:.2f}x the upload size"
                )
            finally:
                runner.signal()
                runner.wait(120)
                runner.stop()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
