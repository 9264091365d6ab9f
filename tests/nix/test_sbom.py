"""nix/sbom.py on a real `cyclonedx-py environment` report of a small venv and a docker-archive."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "nix" / "sbom.py"
CYCLONEDX = Path(sys.executable).with_name("cyclonedx-py")
ALPHA_SHA = "a" * 64
BETA_SHA = "b" * 64

LOCK = f"""
version = 1
requires-python = ">=3.12"

[[package]]
name = "alpha-lib"
version = "1.0"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://files.example/alpha_lib-1.0.tar.gz", hash = "sha256:{"c" * 64}", size = 1 }}
wheels = [
    {{ url = "https://files.example/alpha_lib-1.0-py3-none-any.whl", hash = "sha256:{ALPHA_SHA}", size = 1 }},
]

[[package]]
name = "beta"
version = "2.0"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://files.example/beta-2.0.tar.gz", hash = "sha256:{BETA_SHA}", size = 1 }}

[[package]]
name = "wcu-ai-server"
version = "0.1.0"
source = {{ editable = "." }}
"""

STORE = [
    "0c7kqwd5g3vryq0ndz3lhnd7xpi8kv6d-alpha-lib-1.0",
    "1k7cd1k35ivlx2xhmlz4a9x4z2y8r9jb-fonts.conf",
    "2x9cj6x5jl0c6x2bdh5rxv8ks2q3p5ka-python3-3.12.8",
]


def dist_info(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("uv\n")
    (info / "RECORD").write_text("")


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def docker_archive(path: Path) -> None:
    layers = [STORE[:2], STORE[2:]]
    with tarfile.open(path, "w:gz") as archive:
        names = []
        for number, paths in enumerate(layers):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as layer:
                for base in paths:
                    add_bytes(layer, f"nix/store/{base}/share/file", b"x")
            names.append(f"{number}/layer.tar")
            add_bytes(archive, names[-1], buffer.getvalue())
        add_bytes(archive, "manifest.json", json.dumps([{"Layers": names}]).encode())


@pytest.fixture(scope="module")
def environment_report(tmp_path_factory):
    """cyclonedx-py's report of a venv holding three distributions (made once: it is slow)."""
    directory = tmp_path_factory.mktemp("venv")
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    dist_info(site, "alpha-lib", "1.0")
    dist_info(site, "beta", "2.0")
    dist_info(site, "wcu-ai-server", "0.1.0")
    (directory / "pyproject.toml").write_text('[project]\nname = "wcu-ai-server"\nversion = "0.1.0"\n')
    reports = {}
    # As nix/sbom.nix runs it (the project as root component, from pyproject.toml) and without.
    for kind, extra in (("pyproject", ["--pyproject", str(directory / "pyproject.toml")]), ("plain", [])):
        report = directory / f"{kind}.cdx.json"
        command = [str(CYCLONEDX), "environment", "--output-reproducible", *extra, "-o", str(report)]
        subprocess.run([*command, str(venv / "bin" / "python")], check=True)
        reports[kind] = report.read_text()
    return reports


@pytest.fixture(params=["pyproject", "plain"])
def inputs(request, tmp_path, environment_report):
    (tmp_path / "env.cdx.json").write_text(environment_report[request.param])
    (tmp_path / "uv.lock").write_text(LOCK)
    docker_archive(tmp_path / "image.tar.gz")
    artifacts = [
        {"name": "alpha-lib", "version": "1.0", "file": "alpha_lib-1.0-py3-none-any.whl"},
        {"name": "beta", "version": "2.0", "file": "beta-2.0.tar.gz"},
        {"name": "wcu-ai-server", "version": "0.1.0", "file": None},
    ]
    (tmp_path / "artifacts.json").write_text(json.dumps(artifacts))
    return tmp_path


def run_sbom(directory: Path) -> subprocess.CompletedProcess:
    args = ["--environment", "env.cdx.json", "--artifacts", "artifacts.json", "--lock", "uv.lock"]
    args += ["--image", "image.tar.gz", "--name", "wcu-ai-api", "--version", "abc123", "--output", "out.json"]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=directory, capture_output=True, text=True, check=False
    )


def test_every_distribution_carries_the_lock_hash_and_every_store_path_is_listed(inputs):
    result = run_sbom(inputs)
    assert result.returncode == 0, result.stderr
    bom = json.loads((inputs / "out.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["metadata"]["component"] == {
        "type": "container",
        "bom-ref": "wcu-ai-api",
        "name": "wcu-ai-api",
        "version": "abc123",
    }
    by_name = {c["name"]: c for c in bom["components"] if not c["bom-ref"].startswith("nix-store:")}
    assert sorted(by_name) == ["alpha-lib", "beta", "wcu-ai-server"]
    assert by_name["alpha-lib"]["hashes"] == [{"alg": "SHA-256", "content": ALPHA_SHA}]
    assert by_name["beta"]["hashes"] == [{"alg": "SHA-256", "content": BETA_SHA}]
    assert "hashes" not in by_name["wcu-ai-server"]
    store = {c["bom-ref"]: c for c in bom["components"] if c["bom-ref"].startswith("nix-store:")}
    assert sorted(store) == ["nix-store:alpha-lib-1.0", "nix-store:fonts.conf", "nix-store:python3-3.12.8"]
    assert store["nix-store:python3-3.12.8"]["name"] == "python3"
    assert store["nix-store:python3-3.12.8"]["version"] == "3.12.8"
    assert "version" not in store["nix-store:fonts.conf"]
    # Reproducible: a second run writes the same bytes.
    first = (inputs / "out.json").read_bytes()
    assert run_sbom(inputs).returncode == 0
    assert (inputs / "out.json").read_bytes() == first


def test_the_sbom_holds_no_store_hash_so_nix_records_no_reference(inputs):
    # Where the venv is a store path, cyclonedx-py's report names it: that hash goes too.
    report = json.loads((inputs / "env.cdx.json").read_text())
    venv = "/nix/store/3q9f0bfc0wfl4gvbvb8gp4qxx7kc4w2z-wcu-ai-env"
    report["components"][0].setdefault("properties", []).append({"name": "venv", "value": f"{venv}/lib"})
    (inputs / "env.cdx.json").write_text(json.dumps(report))
    assert run_sbom(inputs).returncode == 0
    written = (inputs / "out.json").read_text()
    for base in [*STORE, venv.removeprefix("/nix/store/")]:
        assert base.split("-", 1)[0] not in written
        assert base.split("-", 1)[1] in written  # the names stay


def test_a_locked_package_missing_from_the_venv_fails(inputs):
    artifacts = json.loads((inputs / "artifacts.json").read_text())
    artifacts.append({"name": "gamma", "version": "3.0", "file": "gamma-3.0.tar.gz"})
    (inputs / "artifacts.json").write_text(json.dumps(artifacts))
    result = run_sbom(inputs)
    assert result.returncode == 1
    assert "gamma==3.0 is locked for the venv but not installed in it" in result.stderr
    assert not (inputs / "out.json").exists()


def test_a_file_without_a_pinned_hash_fails(inputs):
    (inputs / "uv.lock").write_text(LOCK.replace(f'hash = "sha256:{BETA_SHA}", ', ""))
    result = run_sbom(inputs)
    assert result.returncode == 1
    assert "beta==2.0: uv.lock pins no sha256 for beta-2.0.tar.gz" in result.stderr


def test_an_archive_without_store_paths_fails(inputs):
    with tarfile.open(inputs / "image.tar.gz", "w:gz") as archive:
        add_bytes(archive, "manifest.json", b"[]")
    result = run_sbom(inputs)
    assert result.returncode == 1
    assert "no /nix/store paths" in result.stderr
