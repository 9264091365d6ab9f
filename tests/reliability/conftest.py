"""Fixtures of the reliability suites: a PostgreSQL of the test's own (see harness.LocalPostgres)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import LocalPostgres, local_postgres


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL on 127.0.0.1 with a password role, that the test may stop and start.

    A short root under /tmp: the server's unix socket path must stay under 108 bytes. Tests
    using it carry the embedded_postgres marker: it needs the pgserver wheel, which the Nix
    checks leave out.
    """
    with local_postgres(Path(f"/tmp/wcu-rel-{uuid.uuid4().hex[:8]}")) as server:
        yield server
