"""Fixtures for the document tests: the tools check, converters, and process inspection.

Tests marked `documents` need LibreOffice and poppler on PATH: without them they are skipped on
a developer machine but FAIL when CI=true, so CI can never go green by skipping them. The
document factories live in tests/factories.py (shared with the API tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.process import missing_tools

TOOLS_HINT = "apt-get install libreoffice-writer-nogui poppler-utils (the runner image has them)"


@pytest.fixture(autouse=True)
def documents_tools(request: pytest.FixtureRequest) -> None:
    """Skip (locally) or fail (CI=true) a `documents` test when a tool is missing."""
    if request.node.get_closest_marker("documents") is None:
        return
    missing = missing_tools()
    if not missing:
        return
    message = f"not on PATH: {', '.join(missing)}; {TOOLS_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI requires the document tools: {message}")
    pytest.skip(message)


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
