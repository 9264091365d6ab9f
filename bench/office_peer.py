"""Our warm DOCX converter against unoserver, the warm-LibreOffice peer (issue 13).

    uv run python bench/office_peer.py [--rounds 3] [--keep DIR]
    bench/run --only office                       (the same figures as rows of the table)

Both sides convert the same DOCX files (tests/factories.py: 1, 10 and 50 pages) to PDF with
LibreOffice already running, one conversion at a time and two at a time (the runner's default
WCU_RUNNER_CONCURRENCY=2: two slots, each with its own LibreOffice; the peer likewise gets one
unoserver, with its own profile, per slot), and every output passes the same check (a PDF whose
text has the document's first and last page). Ours: wcu_ai.documents.office.OfficeConverter, as
the runner uses it. The peer: unoserver from PyPI on the system Python with Debian's
python3-uno, in a throwaway venv under this run's temp dir (never in the project's lock), driven
by its own Python client (unoserver.client.UnoClient) from one long-running process, so that
neither side pays a process start per conversion that the other does not. Loopback only;
every loop is bounded; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM_PYTHON = "/usr/bin/python3"
PAGES = (1, 10, 50)
DOCX_FILTER = "MS Word 2007 XML"  # the import filter OfficeConverter pins

# Runs inside the unoserver venv: converts each (src, out, server index) job, `parallel` at a
# time (one thread per server), and prints the elapsed seconds as JSON.
_DRIVER = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from unoserver.client import UnoClient
spec = json.loads(sys.argv[1])
clients = [UnoClient(server="127.0.0.1", port=str(port)) for port in spec["ports"]]
each = []
def run(lane):
    client = clients[lane]
    for src, out in spec["lanes"][lane]:
        begun = time.perf_counter()
        client.convert(inpath=src, outpath=out, convert_to="pdf", infiltername=spec["filter"])
        each.append((src, time.perf_counter() - begun))
begun = time.perf_counter()
with ThreadPoolExecutor(len(spec["lanes"])) as pool:
    list(pool.map(run, range(len(spec["lanes"]))))
print(json.dumps({"seconds": time.perf_counter() - begun, "each": each}))
"""


@dataclass
class Rates:
    one: float  # conversions per second, one at a time
    two: float  # conversions per second, two at a time
    conversions: int
    # median seconds of one conversion, one at a time, by the document's page count
    each: dict[int, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_documents(folder: Path) -> list[tuple[Path, list[str]]]:
    from parse_documents import page_text

    from tests.factories import make_docx

    folder.mkdir(parents=True, exist_ok=True)
    documents = []
    for n in PAGES:
        pages = [page_text(i) for i in range(n)]
        documents.append((make_docx(folder / f"doc-{n}p.docx", pages), pages))
    return documents


def check_pdf(path: Path, pages: list[str]) -> None:
    """The same check for both sides: a PDF holding the first and the last page's text."""
    if not path.is_file() or not path.read_bytes().startswith(b"%PDF-"):
        raise RuntimeError(f"{path} is not a PDF")
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True, capture_output=True, timeout=120
    ).stdout.decode()
    for page in (pages[0], pages[-1]):
        if page.split(".")[0] + "." not in text:
            raise RuntimeError(f"{path} lacks {page[:20]!r}")


def by_pages(documents: list[tuple[Path, list[str]]], each: list[tuple[str, float]]) -> dict[int, float]:
    """Median seconds per conversion of each document, by its page count."""
    pages = {str(src): len(p) for src, p in documents}
    times: dict[int, list[float]] = {}
    for src, seconds in each:
        times.setdefault(pages[src], []).append(seconds)
    return {n: statistics.median(t) for n, t in sorted(times.items())}


def lanes(jobs: list[tuple[Path, list[str]]], parallel: int) -> list[list[tuple[Path, list[str]]]]:
    return [jobs[i::parallel] for i in range(parallel)]


# -- ours ------------------------------------------------------------------------------------------


def ours(documents: list[tuple[Path, list[str]]], work: Path, rounds: int) -> Rates:
    from wcu_ai.documents.office import OfficeConverter

    jobs = documents * rounds

    each: list[tuple[str, float]] = []

    async def convert(converter: OfficeConverter, lane: list[tuple[Path, list[str]]], out: Path) -> None:
        for src, pages in lane:
            begun = time.perf_counter()
            pdf = await converter.convert_to_pdf(src, out, timeout=300)
            each.append((str(src), time.perf_counter() - begun))
            check_pdf(pdf, pages)

    async def main() -> Rates:
        converters = [OfficeConverter(slot, work / "office") for slot in (0, 1)]
        try:
            for slot, converter in enumerate(converters):  # warm: profile made, instance running
                await convert(converter, documents[:1], work / f"warm-{slot}")
            rates = []
            for parallel in (1, 2):
                each.clear()
                begun = time.perf_counter()
                await asyncio.gather(
                    *(
                        convert(converters[i], lane, work / f"out-{parallel}-{i}")
                        for i, lane in enumerate(lanes(jobs, parallel))
                    )
                )
                rates.append(len(jobs) / (time.perf_counter() - begun))
                if parallel == 1:
                    one_each = by_pages(documents, each)
            return Rates(rates[0], rates[1], len(jobs), one_each)
        finally:
            for converter in converters:
                converter.close()

    return asyncio.run(main())


# -- unoserver -------------------------------------------------------------------------------------


def unoserver_venv(folder: Path) -> Path:
    """A venv on the system Python (its python3-uno visible) with unoserver from PyPI."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(folder)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "unoserver"],
            check=True,
            timeout=600,
        )
    return python


def unoserver_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('unoserver'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class Unoservers:
    """`count` unoserver processes, each with its LibreOffice and profile, on loopback ports."""

    def __init__(self, python: Path, folder: Path, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.folder = folder
        for i, port in enumerate(self.ports):
            profile = folder / f"profile-{i}"
            log = (folder / f"unoserver-{i}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [
                        str(python.parent / "unoserver"),
                        "--interface",
                        "127.0.0.1",
                        "--uno-interface",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--uno-port",
                        str(free_port()),
                        "--user-installation",
                        str(profile),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its LibreOffice goes with its process group
                )
            )

    def stop(self) -> None:
        import os
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _suppress() -> object:
    import contextlib

    return contextlib.suppress(ProcessLookupError)


def peer(
    documents: list[tuple[Path, list[str]]], work: Path, rounds: int, venv: Path | None = None
) -> tuple[Rates, str]:
    work.mkdir(parents=True, exist_ok=True)
    python = unoserver_venv(venv or work / "unoserver-venv")
    jobs = documents * rounds
    servers = Unoservers(python, work, 2)
    each: dict[int, float] = {}  # one at a time, filled by drive()
    try:

        def drive(job_lanes: list[list[tuple[Path, list[str]]]], out: Path, timeout: float) -> float:
            out.mkdir(parents=True, exist_ok=True)
            spec = {
                "ports": servers.ports[: len(job_lanes)],
                "filter": DOCX_FILTER,
                "lanes": [
                    [(str(src), str(out / f"{lane}-{k}-{src.stem}.pdf")) for k, (src, _) in enumerate(jobs_)]
                    for lane, jobs_ in enumerate(job_lanes)
                ],
            }
            done = subprocess.run(
                [str(python), "-c", _DRIVER, json.dumps(spec)],
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            for lane, jobs_ in enumerate(job_lanes):
                for k, (src, pages) in enumerate(jobs_):
                    check_pdf(out / f"{lane}-{k}-{src.stem}.pdf", pages)
            figures = json.loads(done.stdout)
            if len(job_lanes) == 1:
                each.update(by_pages(documents, figures["each"]))
            return float(figures["seconds"])

        # Ready when a conversion goes through (its LibreOffice started, its profile made).
        deadline = time.monotonic() + 120
        while True:
            try:
                drive([[documents[0]], [documents[0]]], work / "peer-warm", timeout=60)
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in servers.procs):
                    raise
                time.sleep(0.5)
        rates = [len(jobs) / drive(lanes(jobs, n), work / f"peer-out-{n}", 600) for n in (1, 2)]
        return Rates(rates[0], rates[1], len(jobs), each), unoserver_version(python)
    finally:
        servers.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="times the DOCX set is converted per figure")
    parser.add_argument("--keep", type=Path, help="keep the documents, outputs and logs here")
    args = parser.parse_args()
    if not (shutil.which("soffice") and shutil.which("pdftotext")):
        print("needs soffice and pdftotext on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="wcu-bench-office-") as tmp_name:
        work = args.keep or Path(tmp_name)
        documents = make_documents(work / "docx")
        mine = ours(documents, work / "ours", args.rounds)
        theirs, version = peer(documents, work / "peer", args.rounds)
    print(
        f"DOCX -> PDF, {mine.conversions} conversions of {', '.join(f'{n}p' for n in PAGES)}, unoserver {version}"
    )
    print(f"{'at a time':<12}{'ours/s':>9}{'unoserver/s':>13}{'ratio':>8}")
    for label, a, b in (("1", mine.one, theirs.one), ("2", mine.two, theirs.two)):
        print(f"{label:<12}{a:>9.2f}{b:>13.2f}{a / b:>7.2f}x")
    print(f"\n{'one DOCX':<12}{'ours s':>9}{'unoserver s':>13}{'ratio':>8}")
    for n in PAGES:
        a, b = mine.each[n], theirs.each[n]
        print(f"{f'{n} pages':<12}{a:>9.3f}{b:>13.3f}{a / b:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
