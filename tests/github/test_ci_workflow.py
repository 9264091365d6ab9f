""".github/workflows/ci.yml, read with PyYAML: who gets an OIDC token, and that the push job pushes
the store paths the build job checked instead of building its own."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MAIN_ONLY = ("github.event_name == 'push'", "github.ref == 'refs/heads/main'")


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_only_jobs_of_a_push_to_main_can_ask_for_an_oidc_token() -> None:
    flow = workflow()
    assert flow["permissions"] == {}
    # PyYAML reads the key `on` as True.
    assert "pull_request" in flow[True]
    with_token = {
        name for name, job in flow["jobs"].items() if job.get("permissions", {}).get("id-token") == "write"
    }
    assert with_token == {"push", "manifest"}
    for name in with_token:
        condition = flow["jobs"][name].get("if", "")
        assert all(part in condition for part in MAIN_ONLY), f"{name}: if: {condition!r}"
        assert " || " not in condition


def test_the_push_job_runs_the_closure_the_build_job_exported() -> None:
    jobs = workflow()["jobs"]
    build, push = jobs["build"], jobs["push"]
    assert push["needs"] == "build"
    assert push["strategy"]["matrix"] == build["strategy"]["matrix"]
    uploads = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    downloads = [s for s in push["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    assert (
        [s["with"]["name"] for s in uploads]
        == [s["with"]["name"] for s in downloads]
        == ["push-${{ matrix.system }}"]
    )
    assert "nix copy --to" in runs(build) and "nix copy --no-check-sigs --from" in runs(push)
    # Nothing evaluated or built in the push job: no checkout, no flake reference.
    assert not any(s.get("uses", "").startswith("actions/checkout@") for s in push["steps"])
    for command in ("nix build", "nix eval", "nix run", ".#"):
        assert command not in runs(push)
