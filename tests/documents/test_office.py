"""OfficeConverter with the real LibreOffice: profiles per slot, verified output, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import make_docx, make_garbage, make_pdf
from tests.hostile_docx import LoggingServer, Targets, build
from wcu_ai.documents import office
from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.pdf import read_pdf
from wcu_ai.errors import DocumentError, DocumentTimeoutError, ToolMissingError

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


# -- what a document can make LibreOffice reach (issue 10, item 1) -------------------------------------------


def _registry_dir() -> Path:
    soffice = shutil.which("soffice")
    assert soffice is not None
    program = Path(soffice).resolve().parent  # .../lib/libreoffice/program
    for candidate in (program.parent / "share" / "registry", program.parent.parent / "share" / "registry"):
        if candidate.is_dir():
            return candidate
    raise AssertionError(f"no share/registry next to {program}")


def _schema_properties() -> set[str]:
    """Every property path the installed LibreOffice's officecfg schema declares (its *.xcd)."""
    oor = "{http://openoffice.org/2001/registry}"
    found: set[str] = set()

    def walk(element: ET.Element, path: str) -> None:
        for child in element:
            tag = child.tag.rpartition("}")[2]
            name = child.get(oor + "name")
            if tag == "component":
                walk(child, path)
            elif tag in ("group", "set") and name:
                walk(child, f"{path}/{name}")
            elif tag == "prop" and name:
                found.add(f"{path}:{name}")

    for xcd in _registry_dir().glob("*.xcd"):
        for schema in ET.parse(xcd).getroot():
            if schema.tag.rpartition("}")[2] == "component-schema":
                walk(schema, f"/{schema.get(oor + 'package')}.{schema.get(oor + 'name')}")
    return found


def test_every_profile_setting_is_declared_by_the_installed_libreoffice() -> None:
    declared = _schema_properties()
    assert len(declared) > 1000  # the schema was read
    unknown = [
        f"{path}:{name}" for path, name, _ in office._PROFILE_SETTINGS if f"{path}:{name}" not in declared
    ]
    assert unknown == []


def _xcu_values(profile: Path) -> dict[str, str]:
    oor = "{http://openoffice.org/2001/registry}"
    values = {}
    for item in ET.parse(profile / "user" / "registrymodifications.xcu").getroot():
        for prop in item:
            value = prop.find("value")
            values[f"{item.get(oor + 'path')}:{prop.get(oor + 'name')}"] = (
                (value.text or "") if value is not None else ""
            )
    return values


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_the_profile_carries_the_settings_and_keeps_them_after_libreoffice_ran(
    tmp_path: Path, office_dir: Path, warm: bool
) -> None:
    src = make_docx(tmp_path / "a.docx", ["settings"])
    with OfficeConverter(0, office_dir, warm=warm) as converter:
        for _ in range(2):  # the second conversion runs on a profile LibreOffice has written back
            asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
        values = _xcu_values(converter.profile_dir)
    for path, name, value in office._PROFILE_SETTINGS:
        assert values.get(f"{path}:{name}") == value, (path, name)


def test_the_profile_alone_keeps_linked_pictures_off_the_network_and_the_disk(
    tmp_path: Path, office_dir: Path
) -> None:
    """No rewrite and no namespace here: only the profile stands between the document and the link."""
    marker = f"PROFILEMARK{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "secret.svg"
    secret.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40"><text y="20">{marker}</text></svg>'
    )
    with LoggingServer(marker) as server:
        targets = Targets(server.base_url, secret, secret, secret, secret, "/proc/1/fd/0")
        documents = [
            build(name, tmp_path / f"{name}.docx", targets)
            for name in ("linked-blip-http", "linked-blip-file-svg")
        ]
        with OfficeConverter(0, office_dir, private_network="off") as converter:
            texts = [
                _pages_of(asyncio.run(converter.convert_to_pdf(d, tmp_path / "out", timeout=60)))
                for d in documents
            ]
        time.sleep(1)
        assert server.connections == []
    assert all(marker not in " ".join(pages) for pages in texts), texts


def _office_processes(converter: OfficeConverter) -> list[int]:
    assert converter._server is not None
    group = converter._server.pid
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (
                    os.getpgid(int(entry.name)) == group
                    and b"soffice.bin" in (entry / "cmdline").read_bytes()
                ):
                    found.append(int(entry.name))
    return found


def _limits_of(pid: int) -> dict[str, str]:
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:47].strip()
        limits[name] = soft
    return limits


def test_the_warm_instance_runs_under_the_kernel_limits(tmp_path: Path, office_dir: Path) -> None:
    limits = office.office_limits(memory_bytes=3 * 1024**3, timeout_seconds=40, max_pdf_bytes=100 * 1024**2)
    with OfficeConverter(0, office_dir, limits=limits) as converter:
        asyncio.run(
            converter.convert_to_pdf(make_docx(tmp_path / "a.docx", ["x"]), tmp_path / "out", timeout=60)
        )
        (pid,) = _office_processes(converter)
        seen = _limits_of(pid)
    assert seen["Max address space"] == str(limits.memory_bytes)
    assert seen["Max cpu time"] == str(limits.cpu_seconds)
    assert seen["Max file size"] == str(limits.file_bytes)
    assert seen["Max open files"] == str(limits.open_files)


def test_soffice_gets_a_network_namespace_of_its_own_where_the_kernel_allows_it(
    tmp_path: Path, office_dir: Path
) -> None:
    probe = office.probe_private_network()
    with OfficeConverter(0, office_dir, private_network="auto") as converter:
        asyncio.run(
            converter.convert_to_pdf(make_docx(tmp_path / "a.docx", ["x"]), tmp_path / "out", timeout=60)
        )
        (pid,) = _office_processes(converter)
        theirs, ours = os.readlink(f"/proc/{pid}/ns/net"), os.readlink("/proc/self/ns/net")
    # Where user namespaces are forbidden the converter must still work, in our namespace (and the
    # runner says so at start: tests/documents/test_handlers.py).
    assert (theirs != ours) is probe.available, probe


def test_a_required_private_network_that_cannot_be_had_fails_with_the_setting_named(
    tmp_path: Path, office_dir: Path, monkeypatch: pytest.MonkeyPatch, path_without_unshare: str
) -> None:
    monkeypatch.setenv("PATH", path_without_unshare)
    office.probe_private_network.cache_clear()
    try:
        src = make_docx(tmp_path / "a.docx", ["x"])
        with (
            OfficeConverter(0, office_dir, private_network="required") as converter,
            pytest.raises(ToolMissingError, match=r"WCU_OFFICE_PRIVATE_NETWORK=required.*unshare"),
        ):
            asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
        with OfficeConverter(1, office_dir, private_network="auto") as converter:
            pdf = asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
        assert _pages_of(pdf) == ("x",)
    finally:
        office.probe_private_network.cache_clear()


def test_a_warm_instance_is_recycled_once_it_has_used_its_cpu_share(tmp_path: Path, office_dir: Path) -> None:
    src = make_docx(tmp_path / "a.docx", ["x"])
    with OfficeConverter(0, office_dir, recycle_cpu_seconds=0.05) as converter:
        asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
        assert not converter.is_warm  # a conversion costs far more than 0.05 s of CPU
        pdf = asyncio.run(converter.convert_to_pdf(src, tmp_path / "out", timeout=60))
    assert _pages_of(pdf) == ("x",)
    default = office.office_limits(memory_bytes=2**31, timeout_seconds=100, max_pdf_bytes=2**20)
    assert OfficeConverter(2, office_dir, limits=default).recycle_cpu_seconds == default.cpu_seconds / 2  # type: ignore[operator]
