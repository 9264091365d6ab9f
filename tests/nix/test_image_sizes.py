"""nix/image_sizes.py on a docker-archive whose layers hold real store paths of this machine."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "nix" / "image_sizes.py"
MIB = 1024 * 1024


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def docker_archive(path: Path, files: dict[str, int]) -> None:
    """One layer per file: nix/store/<base>/data of the given size."""
    with tarfile.open(path, "w:gz") as archive:
        for number, (base, size) in enumerate(files.items()):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as layer:
                add_bytes(layer, f"nix/store/{base}/data", b"\0" * size)
            add_bytes(archive, f"{number}/layer.tar", buffer.getvalue())
        add_bytes(archive, "manifest.json", b"[]")


@pytest.fixture
def store_paths(tmp_path):
    """Two valid paths in the local Nix store (nix-store --add), as an image's would be."""
    if shutil.which("nix-store") is None:
        pytest.skip("nix-store not found (nix-bin)")
    paths = {}
    for name, size in (("big-1.0", 3 * MIB), ("small-2.0", MIB // 2)):
        source = tmp_path / name
        source.write_bytes(b"\1" * size)
        added = subprocess.run(
            ["nix-store", "--add", str(source)], check=True, capture_output=True, text=True
        )
        paths[Path(added.stdout.strip()).name] = size
    return paths


def run(tmp_path, budget, *extra):
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"images": {"wcu-ai-api": budget}}))
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--budgets",
            str(budgets),
            *extra,
            f"wcu-ai-api={tmp_path / 'image.tar.gz'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_sizes_are_printed_and_a_budget_above_them_passes(tmp_path, store_paths):
    docker_archive(tmp_path / "image.tar.gz", store_paths)
    result = run(tmp_path, {"compressed_mib": 10, "unpacked_mib": 10, "closure_mib": 10}, "--nix")
    assert result.returncode == 0, result.stderr
    assert "unpacked (layers)   3.5 MiB" in result.stdout
    assert "store paths         2" in result.stdout
    # nix path-info's NAR size of a file is a little more than the file.
    closure = next(line for line in result.stdout.splitlines() if "closure (nix, NAR)" in line)
    assert closure.split()[-2].startswith("3.5")
    largest = [line for line in result.stdout.splitlines() if "/nix/store/" in line]
    assert largest[0].endswith("-big-1.0") and largest[1].endswith("-small-2.0")
    assert "every image within its budget" in result.stdout


def test_an_image_above_its_budget_fails_naming_the_figure(tmp_path, store_paths):
    docker_archive(tmp_path / "image.tar.gz", store_paths)
    result = run(tmp_path, {"compressed_mib": 10, "unpacked_mib": 3})
    assert result.returncode == 1
    assert "wcu-ai-api: unpacked 3.5 MiB is above the budget of 3 MiB" in result.stderr


def test_an_image_without_a_budget_is_refused(tmp_path, store_paths):
    docker_archive(tmp_path / "image.tar.gz", store_paths)
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"images": {}}))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--budgets", str(budgets), f"other={tmp_path / 'image.tar.gz'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "NAME in" in result.stderr


def test_the_repository_budgets_cover_both_images():
    budgets = json.loads((ROOT / "nix" / "image-budgets.json").read_text())["images"]
    assert set(budgets) == {"wcu-ai-api", "wcu-ai-task-runner"}
    for budget in budgets.values():
        assert set(budget) == {"compressed_mib", "unpacked_mib", "closure_mib"}
