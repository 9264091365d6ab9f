"""Print an image's sizes and fail when one is above its budget in nix/image-budgets.json.

usage: python3 image_sizes.py [--budgets FILE] [--nix] NAME=IMAGE.tar.gz ...

For each docker-archive (the .tar.gz of dockerTools.buildLayeredImage): the compressed size of
the tarball, the unpacked size (every file of every layer: what a container's filesystem holds),
the number of store paths and the ten largest, and with --nix the closure size Nix reports for
those store paths (`nix path-info --json`, format 2 where Nix has `--json-format`; the sum of
their NAR sizes; they must be in the local store, as they are right after the build). NAME is
the key in the budgets file.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

MIB = 1024 * 1024
STORE_PREFIX = "nix/store/"
DEFAULT_BUDGETS = Path(__file__).with_name("image-budgets.json")


def layer_sizes(image: Path) -> tuple[int, dict[str, int]]:
    """(bytes of all files in all layers, bytes per store path base name)."""
    total = 0
    per_path: dict[str, int] = defaultdict(int)
    with tarfile.open(image, "r|*") as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".tar")):
                continue
            layer = archive.extractfile(member)
            if layer is None:
                continue
            with tarfile.open(fileobj=layer, mode="r|") as entries:
                for entry in entries:
                    if not entry.isfile():
                        continue
                    total += entry.size
                    path = entry.name.removeprefix("./").removeprefix("/")
                    if path.startswith(STORE_PREFIX):
                        per_path[path[len(STORE_PREFIX) :].split("/", 1)[0]] += entry.size
    return total, dict(per_path)


class NixPathInfoError(Exception):
    """`nix path-info` failed or does not know a store path of the image."""


NIX_PATH_INFO = ["nix", "--extra-experimental-features", "nix-command", "path-info", "--json"]


def path_info(paths: list[str]) -> object:
    """`nix path-info --json` of these store paths, parsed.

    Nix 2.33 deprecated `--json` without `--json-format` (NixOS/nix#14704; CI installs 2.35), so
    format 2 is asked for; Nix before 2.33 has no such flag ("unrecognised flag") and is asked
    again without it.
    """
    result = subprocess.run(
        [*NIX_PATH_INFO, "--json-format", "2", *paths], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 and "--json-format" in result.stderr:
        result = subprocess.run([*NIX_PATH_INFO, *paths], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NixPathInfoError(f"nix path-info failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def nar_sizes(info: object) -> dict[str, int | None]:
    """The NAR size per store path base name in any of `nix path-info --json`'s shapes.

    Format 2 (Nix 2.33+): {"version": 2, "storeDir": ..., "info": {BASE: {...} | null}};
    Nix 2.19 to 2.32, and format 1: {"/nix/store/BASE": {...} | null};
    before Nix 2.19: [{"path": "/nix/store/BASE", ...}]. null (or "valid": false) is a path
    that is not in the store: None.
    """
    if isinstance(info, dict) and "info" in info and "version" in info:
        entries = info["info"].items()
    elif isinstance(info, dict):
        entries = info.items()
    else:
        entries = ((entry["path"], entry) for entry in info)
    sizes: dict[str, int | None] = {}
    for path, entry in entries:
        valid = isinstance(entry, dict) and entry.get("valid", True) and "narSize" in entry
        sizes[Path(path).name] = entry["narSize"] if valid else None
    return sizes


def closure_nar_size(bases: list[str]) -> int:
    """Sum of the NAR sizes Nix records for these store paths (a closed set: the image's)."""
    sizes = nar_sizes(path_info([f"/nix/store/{base}" for base in bases]))
    missing = sorted(set(bases) - {base for base, size in sizes.items() if size is not None})
    if missing:
        raise NixPathInfoError(f"not in the local Nix store (build the image first): {', '.join(missing)}")
    return sum(sizes[base] or 0 for base in bases)


def mib(size: int) -> str:
    return f"{size / MIB:,.1f} MiB"


def report(name: str, image: Path, budget: dict, use_nix: bool) -> list[str]:
    """Prints the figures; returns the budget overruns."""
    compressed = image.stat().st_size
    unpacked, per_path = layer_sizes(image)
    lines = [
        f"{name}: {image}",
        f"  compressed tarball  {mib(compressed)}",
        f"  unpacked (layers)   {mib(unpacked)}",
        f"  store paths         {len(per_path)}",
    ]
    figures = {"compressed_mib": compressed, "unpacked_mib": unpacked}
    if use_nix:
        closure = closure_nar_size(sorted(per_path))
        figures["closure_mib"] = closure
        lines.append(f"  closure (nix, NAR)  {mib(closure)}")
    lines.append("  ten largest store paths:")
    for base, size in sorted(per_path.items(), key=lambda item: (-item[1], item[0]))[:10]:
        lines.append(f"    {mib(size):>14}  /nix/store/{base}")
    sys.stdout.write("\n".join(lines) + "\n")
    overruns = []
    for key, limit in budget.items():
        if key in figures and figures[key] > limit * MIB:
            overruns.append(
                f"{name}: {key.removesuffix('_mib')} {mib(figures[key])} is above the budget of {limit} MiB"
            )
    return overruns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=Path, default=DEFAULT_BUDGETS)
    parser.add_argument("--nix", action="store_true", help="also ask Nix for the closure size")
    parser.add_argument("images", nargs="+", metavar="NAME=IMAGE")
    args = parser.parse_args(argv)
    budgets = json.loads(args.budgets.read_text())
    overruns = []
    for item in args.images:
        name, sep, path = item.partition("=")
        if not sep or name not in budgets.get("images", {}):
            sys.stderr.write(f"image-sizes: {item}: give NAME=IMAGE with NAME in {args.budgets}\n")
            return 2
        try:
            overruns += report(name, Path(os.path.realpath(path)), budgets["images"][name], args.nix)
        except NixPathInfoError as error:
            sys.stderr.write(f"image-sizes: {name}: {error}\n")
            return 2
    if overruns:
        sys.stderr.write("\n".join(overruns) + f"\n(budgets: {args.budgets}; see deployment.md)\n")
        return 1
    sys.stdout.write("image-sizes: every image within its budget\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
