"""Complete an image's CycloneDX SBOM: the venv's distributions with uv.lock's hashes, every store path.

usage: python3 sbom.py --environment ENV.cdx.json --artifacts ARTIFACTS.json --lock uv.lock
                       --image IMAGE.tar.gz --name NAME --version VERSION --output OUT.cdx.json

ENV.cdx.json is what `cyclonedx-py environment` reports for the production venv (name, version,
purl, licences of every installed distribution). ARTIFACTS.json is written by nix/sbom.nix: for
each Python package of the venv the file uv2nix installed from (`{"name", "version", "file"}`,
`file` null for the project itself, which is built from the source tree). This adds, to every
distribution, the SHA-256 uv.lock pins for that file, and one component per store path found in the
image's layers, then fails if anything is missing on either side: an SBOM that silently lacks a
package is worse than none.
"""

import argparse
import json
import re
import sys
import tarfile
import tomllib
import urllib.parse
from pathlib import Path, PurePosixPath

STORE_PREFIX = "nix/store/"
# A store path's hash: 32 characters of Nix's base-32 alphabet (no e, o, t, u).
_HASH = "[0-9a-df-np-sv-z]{32}"
STORE_HASH = re.compile(f"^{_HASH}-")
STORE_PATH_HASH = re.compile(f"/nix/store/{_HASH}-")
SPEC_VERSION = "1.6"


class SbomError(Exception):
    """The inputs disagree; the message names what is missing."""


def normalise(name: str) -> str:
    """PEP 503 name, as uv.lock and cyclonedx-py's purls use."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_files(lock: dict) -> dict[tuple[str, str], dict[str, str]]:
    """(name, version) -> {file name: 'sha256:…'} for every sdist and wheel uv.lock pins."""
    files: dict[tuple[str, str], dict[str, str]] = {}
    for package in lock.get("package", []):
        entries = [package["sdist"]] if "sdist" in package else []
        entries += package.get("wheels", [])
        by_file = {}
        for entry in entries:
            if "url" in entry and "hash" in entry:
                name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(entry["url"]).path).name)
                by_file[name] = entry["hash"]
        files[(normalise(package["name"]), package["version"])] = by_file
    return files


def split_store_name(base: str) -> tuple[str, str]:
    """'abc…-poppler-utils-25.10.0' -> ('poppler-utils', '25.10.0'), as builtins.parseDrvName splits."""
    rest = base.split("-", 1)[1] if "-" in base else base
    match = re.search(r"-(?=[0-9])", rest)
    if match is None:
        return rest, ""
    return rest[: match.start()], rest[match.end() :]


def image_store_paths(image: Path) -> list[str]:
    """Base names of the store paths in the image's layers (docker-archive, gzip or plain tar)."""
    found: set[str] = set()
    with tarfile.open(image, "r|*") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".tar")):
                continue
            layer = archive.extractfile(member)
            if layer is None:
                continue
            with tarfile.open(fileobj=layer, mode="r|") as entries:
                for entry in entries:
                    path = entry.name.removeprefix("./").removeprefix("/")
                    if path.startswith(STORE_PREFIX):
                        base = path[len(STORE_PREFIX) :].split("/", 1)[0]
                        if base:
                            found.add(base)
    if not found:
        raise SbomError(f"{image}: no /nix/store paths in any layer; is it a docker-archive?")
    return sorted(found)


def python_components(environment: dict, artifacts: list[dict], lock: dict) -> list[dict]:
    """The environment's components, each with the hash uv.lock pins for the file installed."""
    pinned = lock_files(lock)
    wanted = {(normalise(a["name"]), a["version"]): a for a in artifacts}
    seen = set()
    components = []
    problems = []
    found = list(environment.get("components", []))
    # With --pyproject, cyclonedx-py reports the project as the root component, not in
    # `components`: it is a distribution of the venv all the same.
    root = environment.get("metadata", {}).get("component")
    if root and "version" in root and all(c["name"] != root["name"] for c in found):
        found.append(root | {"bom-ref": f"{root['name']}=={root['version']}"})
    for component in found:
        key = (normalise(component["name"]), component.get("version", ""))
        artifact = wanted.get(key)
        if artifact is None:
            problems.append(f"{key[0]}=={key[1]} is in the venv but not among the locked packages")
            continue
        seen.add(key)
        out = dict(component)
        properties = list(out.get("properties", []))
        if artifact["file"] is None:
            properties.append({"name": "wcu:source", "value": "built from the project's source tree"})
        else:
            sha = pinned.get(key, {}).get(urllib.parse.unquote(artifact["file"]))
            if sha is None or not sha.startswith("sha256:"):
                problems.append(f"{key[0]}=={key[1]}: uv.lock pins no sha256 for {artifact['file']}")
                continue
            out["hashes"] = [{"alg": "SHA-256", "content": sha.removeprefix("sha256:")}]
            properties.append({"name": "wcu:uv-lock-file", "value": artifact["file"]})
        out["properties"] = properties
        components.append(out)
    problems += [f"{n}=={v} is locked for the venv but not installed in it" for n, v in wanted.keys() - seen]
    if problems:
        raise SbomError("; ".join(sorted(problems)))
    return components


def store_components(paths: list[str]) -> list[dict]:
    """One component per store path, named without its hash: a hash in the output would make
    Nix record the path as a reference of the SBOM, and the push app's closure (what CI copies
    between jobs) would carry every image's whole closure with it."""
    components = []
    counts: dict[str, int] = {}
    for base in paths:
        name, version = split_store_name(base)
        unhashed = base.split("-", 1)[1] if STORE_HASH.match(base) else base
        counts[unhashed] = counts.get(unhashed, 0) + 1
        ref = f"nix-store:{unhashed}" + (f"#{counts[unhashed]}" if counts[unhashed] > 1 else "")
        component = {
            "type": "library",
            "bom-ref": ref,
            "name": name,
            "properties": [{"name": "nix:store-name", "value": unhashed}],
        }
        if version:
            component["version"] = version
        components.append(component)
    return components


def without_store_hashes(text: str) -> str:
    """`text` with every /nix/store/<hash>- shortened to /nix/store/ (the venv's own path in
    cyclonedx-py's report, for one): see store_components for why."""
    return STORE_PATH_HASH.sub("/nix/store/", text)


def compose(environment: dict, artifacts: list[dict], lock: dict, paths: list[str], name: str, version: str):
    python = python_components(environment, artifacts, lock)
    store = store_components(paths)
    components = sorted(python, key=lambda c: c["bom-ref"]) + store
    refs = [c["bom-ref"] for c in components]
    if len(set(refs)) != len(refs):
        raise SbomError("duplicate bom-ref in the composed SBOM")
    return {
        "$schema": f"http://cyclonedx.org/schema/bom-{SPEC_VERSION}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "component": {"type": "container", "bom-ref": name, "name": name, "version": version},
            "tools": environment.get("metadata", {}).get("tools", {}),
            "properties": [{"name": "cdx:reproducible", "value": "true"}],
        },
        "components": components,
    }


def validate(bom: dict) -> None:
    """Against the CycloneDX JSON schema, with cyclonedx-python-lib (cyclonedx-bom depends on it)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.from_version(SPEC_VERSION)).validate_str(json.dumps(bom))
    if error is not None:
        raise SbomError(f"composed SBOM is not valid CycloneDX {SPEC_VERSION}: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--environment", "--artifacts", "--lock", "--image", "--output"):
        parser.add_argument(flag, type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    try:
        bom = compose(
            json.loads(args.environment.read_text()),
            json.loads(args.artifacts.read_text()),
            tomllib.loads(args.lock.read_text()),
            image_store_paths(args.image),
            args.name,
            args.version,
        )
        validate(bom)
    except SbomError as error:
        sys.stderr.write(f"sbom: {error}\n")
        return 1
    args.output.write_text(without_store_hashes(json.dumps(bom, indent=1, sort_keys=True)) + "\n")
    store = sum(1 for c in bom["components"] if c["bom-ref"].startswith("nix-store:"))
    python = len(bom["components"]) - store
    sys.stdout.write(f"sbom: {args.output}: {python} Python distributions, {store} store paths\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
