"""OfficeConverter with the real LibreOffice: profiles per slot, verified output, timeouts."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import make_docx, make_garbage, make_pdf
from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.pdf import read_pdf
from wcu_ai.errors import DocumentError, DocumentTimeoutError

pytestmark = pytest.mark.documents


def _pages_of(pdf: Path) -> tuple[str, ...]:
    return asyncio.run(read_pdf(pdf, max_pages=1000, timeout=30)).pages


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_docx_round_trip(tmp_path: Path, office_dir: Path, warm: bool) -> None:
    src = make_docx(tmp_path / "in.docx", ["Alpha page", "Beta page", "Gamma page"], title="T")
    with OfficeConverter(0, office_dir, warm=warm) as converter:
        pdf = asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
    assert pdf == (tmp_path / "out" / "in.pdf").resolve()
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert _pages_of(pdf) == ("Alpha page", "Beta page", "Gamma page")


def test_profile_is_private_and_writable(converter: OfficeConverter) -> None:
    assert stat.S_IMODE(converter.slot_dir.stat().st_mode) == 0o700
    assert converter.profile_url.startswith("file:///")
    assert converter.profile_url.endswith("/office-slot-0/profile")


def test_garbage_named_docx_is_refused_not_converted_as_text(
    tmp_path: Path, converter: OfficeConverter
) -> None:
    src = make_garbage(tmp_path / "garbage.docx", 8192)
    with pytest.raises(DocumentError, match="could not read the document as DOCX"):
        asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
    assert list((tmp_path / "out").iterdir()) == []


def test_pdf_renamed_docx_is_refused(tmp_path: Path, converter: OfficeConverter) -> None:
    src = make_pdf(tmp_path / "really-a-pdf.docx", ["x"])
    with pytest.raises(DocumentError, match="source file could not be loaded"):
        asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))


def test_two_slots_convert_concurrently(tmp_path: Path, office_dir: Path) -> None:
    docs = [make_docx(tmp_path / f"doc{n}.docx", [f"Document {n} page {p}" for p in (1, 2)]) for n in (0, 1)]

    async def scenario() -> list[Path]:
        with OfficeConverter(0, office_dir) as first, OfficeConverter(1, office_dir) as second:
            return await asyncio.gather(
                first.convert_to_pdf(docs[0], tmp_path / "out0", timeout=60),
                second.convert_to_pdf(docs[1], tmp_path / "out1", timeout=60),
            )

    pdfs = asyncio.run(scenario())
    for n, pdf in enumerate(pdfs):
        assert _pages_of(pdf) == (f"Document {n} page 1", f"Document {n} page 2")
    assert not office_dir.joinpath("office-slot-0").exists()
    assert not office_dir.joinpath("office-slot-1").exists()


def test_one_slot_serialises_its_conversions(tmp_path: Path, converter: OfficeConverter) -> None:
    docs = [make_docx(tmp_path / f"same{n}.docx", [f"Same slot {n}"]) for n in (0, 1)]

    async def scenario() -> list[Path]:
        return await asyncio.gather(
            *(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60) for doc in docs)
        )

    pdfs = asyncio.run(scenario())
    assert [_pages_of(pdf) for pdf in pdfs] == [("Same slot 0",), ("Same slot 1",)]


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_timeout_kills_soffice_and_leaves_no_files(
    tmp_path: Path,
    office_dir: Path,
    processes_mentioning: Callable[[str], list[int]],
    warm: bool,
) -> None:
    converter = OfficeConverter(0, office_dir, warm=warm)
    try:
        out = tmp_path / "out"
        small = make_docx(tmp_path / "small.docx", ["still works"])
        asyncio.run(converter.convert_to_pdf(small, out, timeout=60))
        assert converter.is_warm is warm

        # About 0.7 s for a warm LibreOffice on the CI machine, 1.5 s cold.
        long_text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40
        src = make_docx(tmp_path / "long.docx", [long_text] * 400)
        with pytest.raises(DocumentTimeoutError, match="WCU_DOC_TIMEOUT_SECONDS"):
            asyncio.run(converter.convert_to_pdf(src, out, timeout=0.25))
        assert processes_mentioning(str(converter.slot_dir)) == []
        assert sorted(p.name for p in out.iterdir()) == ["small.pdf"]
        # No scratch left in the slot; the profile a killed soffice may have damaged is gone.
        assert sorted(p.name for p in converter.slot_dir.iterdir()) == ["home"]
        assert not Path("/tmp", converter.pipe_name).exists()

        pdf = asyncio.run(converter.convert_to_pdf(small, out, timeout=60))
        assert _pages_of(pdf) == ("still works",)
    finally:
        converter.close()
    assert processes_mentioning(str(converter.slot_dir)) == []
    assert not converter.slot_dir.exists()
    assert not Path("/tmp", converter.pipe_name).exists()


def test_warm_instance_serves_successive_conversions(
    tmp_path: Path, converter: OfficeConverter, processes_mentioning: Callable[[str], list[int]]
) -> None:
    docs = [make_docx(tmp_path / f"w{n}.docx", [f"Warm {n}"]) for n in range(3)]
    asyncio.run(converter.convert_to_pdf(docs[0], tmp_path / "out", timeout=60))
    assert converter.is_warm
    warm_pids = processes_mentioning(str(converter.slot_dir))
    for doc in docs[1:]:
        pdf = asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
        assert _pages_of(pdf) == (f"Warm {doc.stem[1:]}",)
    assert processes_mentioning(str(converter.slot_dir)) == warm_pids


def test_dead_warm_instance_is_replaced(
    tmp_path: Path, converter: OfficeConverter, processes_mentioning: Callable[[str], list[int]]
) -> None:
    doc = make_docx(tmp_path / "a.docx", ["Phoenix"])
    asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
    for pid in processes_mentioning(str(converter.slot_dir)):
        os.kill(pid, signal.SIGKILL)  # as if LibreOffice crashed between two documents
    for _ in range(500):
        if not processes_mentioning(str(converter.slot_dir)):
            break
        time.sleep(0.01)
    pdf = asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
    assert _pages_of(pdf) == ("Phoenix",)
    assert converter.is_warm


def test_warm_instance_dying_mid_conversion_is_retried(
    tmp_path: Path, converter: OfficeConverter, processes_mentioning: Callable[[str], list[int]]
) -> None:
    doc = make_docx(tmp_path / "a.docx", ["Retried"])
    asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
    # Killed just as the next conversion starts: whatever LibreOffice then does with the
    # request, the document is converted, by a retry on a new instance if need be.
    for pid in processes_mentioning(str(converter.slot_dir)):
        os.kill(pid, signal.SIGKILL)
    pdf = asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
    assert _pages_of(pdf) == ("Retried",)


def test_warm_start_failure_falls_back_to_cold(tmp_path: Path, office_dir: Path) -> None:
    with OfficeConverter(0, office_dir, start_timeout=0) as converter:
        for n in range(3):
            doc = make_docx(tmp_path / f"c{n}.docx", [f"Cold {n}"])
            pdf = asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
            assert _pages_of(pdf) == (f"Cold {n}",)
            assert not converter.is_warm


def test_recycles_the_warm_instance(
    tmp_path: Path, office_dir: Path, processes_mentioning: Callable[[str], list[int]]
) -> None:
    with OfficeConverter(0, office_dir, recycle_after=2) as converter:
        doc = make_docx(tmp_path / "r.docx", ["Recycled"])
        asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
        assert converter.is_warm
        asyncio.run(converter.convert_to_pdf(doc, tmp_path / "out", timeout=60))
        assert not converter.is_warm
        assert processes_mentioning(str(converter.slot_dir)) == []


def test_cancellation_kills_soffice(
    tmp_path: Path,
    converter: OfficeConverter,
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    src = make_docx(tmp_path / "in.docx", ["text"] * 20)

    async def scenario() -> None:
        task = asyncio.create_task(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
        for _ in range(200):  # until soffice is running
            if processes_mentioning(str(converter.slot_dir)):
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert processes_mentioning(str(converter.slot_dir)) == []


def test_stale_slot_is_wiped_and_close_removes_it(tmp_path: Path) -> None:
    stale = tmp_path / "office" / "office-slot-3" / "profile"
    stale.mkdir(parents=True)
    (stale / ".lock").write_text("left by a killed runner")
    converter = OfficeConverter(3, tmp_path / "office")
    assert not (stale / ".lock").exists()
    converter.close()
    assert not converter.slot_dir.exists()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(converter.convert_to_pdf(tmp_path / "x.docx", tmp_path, timeout=5))


def test_restarts_of_the_warm_instance_are_reported_with_their_reason(
    tmp_path: Path, office_dir: Path, processes_mentioning: Callable[[str], list[int]]
) -> None:
    reasons: list[str] = []
    out = tmp_path / "out"
    doc = make_docx(tmp_path / "r.docx", ["Counted"])
    with OfficeConverter(0, office_dir, recycle_after=2, on_restart=reasons.append) as converter:
        asyncio.run(converter.convert_to_pdf(doc, out, timeout=60))
        assert reasons == []
        asyncio.run(converter.convert_to_pdf(doc, out, timeout=60))  # its quota of two
        assert reasons == ["recycled"]

        asyncio.run(converter.convert_to_pdf(doc, out, timeout=60))
        assert converter.is_warm
        for pid in processes_mentioning(str(converter.slot_dir)):
            os.kill(pid, signal.SIGKILL)  # as if LibreOffice crashed between two documents
        for _ in range(500):
            if not processes_mentioning(str(converter.slot_dir)):
                break
            time.sleep(0.01)
        asyncio.run(converter.convert_to_pdf(doc, out, timeout=60))
        assert reasons == ["recycled", "exited"]

        long_text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40
        slow = make_docx(tmp_path / "long.docx", [long_text] * 400)
        assert converter.is_warm  # one conversion of its quota left
        with pytest.raises(DocumentTimeoutError):
            asyncio.run(converter.convert_to_pdf(slow, out, timeout=0.25))
        assert reasons == ["recycled", "exited", "timeout"]
