"""Fixtures for the document tests: converters and process inspection.

Tests marked `documents` need LibreOffice and poppler on PATH; tests/conftest.py skips them on a
developer machine without the tools and fails them when CI=true. The document factories live in
tests/factories.py (shared with the API tests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wcu_ai.documents.office import OfficeConverter


@pytest.fixture
def office_dir(tmp_path: Path) -> Path:
    return tmp_path / "office"


@pytest.fixture
def converter(office_dir: Path) -> Iterator[OfficeConverter]:
    conv = OfficeConverter(0, office_dir)
    yield conv
    conv.close()


@pytest.fixture
def processes_mentioning() -> Callable[[str], list[int]]:
    """A function: pids of live processes whose command line contains a text (zombies excluded)."""
    return _processes_mentioning


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def path_without_unshare(tmp_path: Path) -> str:
    """This PATH, less unshare: as in a container whose util-linux has no unshare."""
    bin_dir = tmp_path / "bin-no-unshare"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        with contextlib.suppress(OSError):
            for tool in Path(folder).iterdir():
                link = bin_dir / tool.name
                if tool.name != "unshare" and not link.exists() and os.access(tool, os.X_OK):
                    link.symlink_to(tool.resolve())
    assert shutil.which("soffice", path=str(bin_dir)) and not shutil.which("unshare", path=str(bin_dir))
    return str(bin_dir)
