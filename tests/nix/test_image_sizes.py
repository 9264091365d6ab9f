"""nix/image_sizes.py on docker-archives whose layers hold real store paths of this machine (and,
for the JSON shapes of Nix 2.33+, which is not installed here, a stand-in `nix`)."""

import importlib.util
import io
import json
import os
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


def load_script():
    spec = importlib.util.spec_from_file_location("image_sizes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nar_sizes_reads_each_shape_of_nix_path_info():
    # As src/nix/path-info.cc and src/libstore/path-info.cc of Nix 2.35.1 print them; null is a
    # path not in the store.
    nar_sizes = load_script().nar_sizes
    format_2 = {
        "version": 2,
        "storeDir": "/nix/store",
        "info": {"aaa-big-1.0": {"narSize": 3000, "narHash": {"algorithm": "sha256"}}, "bbb-gone": None},
    }
    assert nar_sizes(format_2) == {"aaa-big-1.0": 3000, "bbb-gone": None}
    format_1 = {
        "/nix/store/aaa-big-1.0": {"narSize": 3000, "narHash": "sha256-x"},
        "/nix/store/bbb-gone": None,
    }
    assert nar_sizes(format_1) == {"aaa-big-1.0": 3000, "bbb-gone": None}
    before_2_19 = [
        {"path": "/nix/store/aaa-big-1.0", "narSize": 3000},
        {"path": "/nix/store/bbb-gone", "valid": False},
    ]
    assert nar_sizes(before_2_19) == {"aaa-big-1.0": 3000, "bbb-gone": None}


FAKE_NIX = """#!{python}
# Nix 2.33+ as far as `path-info --json` goes: --json-format 2 is understood, --json alone warns;
# a path it does not have is null.
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
sizes = {sizes!r}
info = {{p[11:]: ({{"narSize": sizes[p[11:]]}} if p[11:] in sizes else None) for p in args if p.startswith("/nix/store/")}}
if "--json-format" in args:
    print(json.dumps({{"version": 2, "storeDir": "/nix/store", "info": info}}))
else:
    print("warning: '--json' without '--json-format' is deprecated", file=sys.stderr)
    print(json.dumps({{"/nix/store/" + base: entry for base, entry in info.items()}}))
"""


def fake_nix(tmp_path, monkeypatch, sizes):
    """A `nix` first on PATH that answers path-info like Nix 2.33+; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "nix.log"
    nix = bin_dir / "nix"
    nix.write_text(FAKE_NIX.format(python=sys.executable, log=str(log), sizes=sizes))
    nix.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def test_a_nix_that_has_json_format_is_asked_for_format_2(tmp_path, monkeypatch):
    files = {"aaa-big-1.0": 3 * MIB, "bbb-small-2.0": MIB}
    docker_archive(tmp_path / "image.tar.gz", files)
    log = fake_nix(tmp_path, monkeypatch, files)
    result = run(tmp_path, {"compressed_mib": 10, "unpacked_mib": 10, "closure_mib": 10}, "--nix")
    assert result.returncode == 0, result.stderr
    assert "closure (nix, NAR)  4.0 MiB" in result.stdout
    [call] = log.read_text().splitlines()
    assert "path-info --json --json-format 2 /nix/store/" in call
    assert "deprecated" not in result.stderr


def test_a_store_path_nix_does_not_have_is_a_clear_error(tmp_path, monkeypatch):
    docker_archive(tmp_path / "image.tar.gz", {"aaa-big-1.0": MIB, "ccc-not-built-1.0": 10})
    fake_nix(tmp_path, monkeypatch, {"aaa-big-1.0": MIB})
    result = run(tmp_path, {"compressed_mib": 10}, "--nix")
    assert result.returncode == 2
    assert "not in the local Nix store (build the image first): ccc-not-built-1.0" in result.stderr
