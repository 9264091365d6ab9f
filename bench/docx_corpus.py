"""Real DOCX files through the production path: conversion times, and the package rewrite's cost and effect.

    uv run python bench/docx_corpus.py DIR [DIR ...] [--keep DIR]

For every .docx/.docm/.dotx under the directories (bench/README.md says where the corpus comes
from: the test files shipped in the sdists of python-docx, PyDocX, docx2python, mammoth and
docxcompose, and mammoth's npm package), one warm OfficeConverter with the production limits:

- the conversion of the file as uploaded (what WCU_DOC_TIMEOUT_SECONDS must cover, with the PDF
  side), and of the rewritten copy;
- check_docx_safe + rewrite_package, against the conversion as the reference (ratio);
- whether LibreOffice reads the same text from both.

Times are wall-clock on a shared machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wcu_ai.documents.detect import check_docx_safe
from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.ooxml import PackageLimits, rewrite_package
from wcu_ai.documents.parse import DocumentLimits
from wcu_ai.documents.pdf import read_pdf
from wcu_ai.errors import WcuError


async def pages(converter: OfficeConverter, path: Path, out: Path) -> tuple[tuple[str, ...] | str, float]:
    started = time.perf_counter()
    try:
        pdf = await converter.convert_to_pdf(path, out, timeout=300)
    except WcuError as exc:
        return f"error: {exc.message[:80]}", time.perf_counter() - started
    seconds = time.perf_counter() - started
    return (await read_pdf(pdf, max_pages=2000, timeout=120, scratch_dir=out)).pages, seconds


async def measure(files: list[Path], work: Path) -> None:
    limits = DocumentLimits()
    package = PackageLimits(
        limits.docx_max_uncompressed_bytes, limits.docx_max_part_bytes, limits.docx_max_xml_depth
    )
    rows = []
    with OfficeConverter(0, work / "office") as converter:
        await pages(converter, files[0], work / "warmup")
        for index, path in enumerate(files):
            before, convert_s = await pages(converter, path, work / f"a{index}")
            started = time.perf_counter()
            rewritten = work / f"rewritten-{index}.docx"
            try:
                check_docx_safe(
                    path, limits.docx_max_uncompressed_bytes, max_part_bytes=limits.docx_max_part_bytes
                )
                report = rewrite_package(
                    path,
                    rewritten,
                    limits=package,
                    deadline=time.monotonic() + 300,
                    timeout_seconds=300,
                    scratch_dir=work,
                )
            except WcuError as exc:
                rows.append(
                    (path, convert_s, time.perf_counter() - started, None, f"refused: {exc.message[:70]}")
                )
                continue
            rewrite_s = time.perf_counter() - started
            after, _ = await pages(converter, rewritten, work / f"b{index}")
            changed = ",".join(k for k, v in report.as_dict().items() if v)
            same = "same text" if before == after else "TEXT DIFFERS"
            rows.append(
                (path, convert_s, rewrite_s, before == after, f"{same}; rewrite: {changed or 'nothing'}")
            )
    width = max(len(p.name) for p, *_ in rows)
    for path, convert_s, rewrite_s, _, note in sorted(rows, key=lambda r: -r[1]):
        print(f"{path.name:<{width}}  convert {convert_s:6.2f} s  rewrite {rewrite_s * 1000:7.1f} ms  {note}")
    converts = [r[1] for r in rows]
    rewrites = [r[2] for r in rows]
    print(
        f"\n{len(rows)} files; conversion: slowest {max(converts):.2f} s, median {statistics.median(converts):.2f} s; "
        f"rewrite: slowest {max(rewrites) * 1000:.0f} ms, total {sum(rewrites):.2f} s = "
        f"{sum(rewrites) / sum(converts):.3f}x the conversions' total; "
        f"text differs for {sum(1 for r in rows if r[3] is False)}, refused {sum(1 for r in rows if r[3] is None)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the converted files here")
    args = parser.parse_args()
    files = sorted({p for d in args.dirs for ext in ("docx", "docm", "dotx") for p in d.rglob(f"*.{ext}")})
    if not files:
        sys.exit("no DOCX files under " + ", ".join(map(str, args.dirs)))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        asyncio.run(measure(files, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="wcu-docx-corpus-") as tmp:
            asyncio.run(measure(files, Path(tmp)))


if __name__ == "__main__":
    main()
