"""`wcu-ai api` refusing a configuration it could not serve, before it listens."""

from __future__ import annotations

from tests.conftest import run_cli


def test_a_scratch_budget_below_the_upload_limit_stops_the_start_with_one_line(
    service_env: dict[str, str],
) -> None:
    env = {**service_env, "WCU_UPLOAD_MAX_BYTES": "1048576", "WCU_API_MAX_SCRATCH_BYTES": "1048575"}
    result = run_cli("api", env=env, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert (result.returncode, lines) == (
        2,
        [
            "wcu-ai: configuration error: WCU_API_MAX_SCRATCH_BYTES (1048575) is below WCU_UPLOAD_MAX_BYTES "
            "(1048576): an upload at the limit could never be received; raise it"
        ],
    ), result
