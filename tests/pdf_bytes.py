"""Raw PDF bytes for the tests: a small writer, and the hostile and scanned shapes built on it.

`build_pdf` takes numbered object bodies and writes a valid file (header, objects, an xref table
with the right offsets, trailer); the other functions build particular PDFs on it:

- shared_content_pdf: many pages whose /Contents is one and the same stream, so a small file
  expands to pages x stream text (the issue's 317 KB file of 2,000 pages).
- repeated_text_pdf: one page whose content stream repeats text operators over the same few
  lines: poppler keeps every glyph of the page in memory (~300 bytes each) while its output stays
  small, so a file of ten kilobytes costs hundreds of megabytes.
- dense_page_pdf: one page of tiny type, lines of distinct words: many characters on one page.
- scanned_pdf: pages that are only an image of text (no text layer, unless one is asked for), the
  image stored as an image XObject (Flate), as CCITT Group 4 fax data, or inline in the content
  stream (BI/ID/EI).

Images of text are drawn with Pillow's built-in scalable font, so no system font is needed.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, TiffImagePlugin

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter in points


def build_pdf(objects: dict[int, bytes], *, root: int = 1) -> bytes:
    """A PDF holding `objects` (number -> body), `root` being the catalog."""
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num] if num in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, root, xref_at)
    return bytes(out)


def stream(data: bytes, dictionary: bytes = b"", *, compress: bool = True) -> bytes:
    """A stream object's body; Flate-compressed unless the data is already encoded."""
    if compress:
        data = zlib.compress(data, 9)
        dictionary += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), dictionary) + data + b"\nendstream"


def _catalog_and_pages(page_nums: list[int]) -> dict[int, bytes]:
    kids = b" ".join(b"%d 0 R" % n for n in page_nums)
    return {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(page_nums),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }


def _page(contents: int, resources: bytes = b"/Font << /F1 3 0 R >>") -> bytes:
    return b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << %s >> /Contents %d 0 R >>" % (
        PAGE_WIDTH,
        PAGE_HEIGHT,
        resources,
        contents,
    )


def shared_content_pdf(path: Path, *, pages: int, line: str, lines: int) -> Path:
    """`pages` pages that all show the same content stream: `lines` lines of `line`."""
    ops = [b"BT /F1 6 Tf 8 TL 20 780 Td"]
    ops += [b"(" + line.encode("latin-1") + b") Tj T*"] * lines
    ops.append(b"ET")
    page_nums = list(range(5, 5 + pages))
    objects = _catalog_and_pages(page_nums)
    objects[4] = stream(b"\n".join(ops))
    for num in page_nums:
        objects[num] = _page(4)
    path.write_bytes(build_pdf(objects))
    return path


def repeated_text_pdf(path: Path, *, repeats: int, lines: int = 60) -> Path:
    """One page with `repeats` text operators, each placed on one of `lines` lines, cycling."""
    ops = [b"BT /F1 10 Tf"]
    ops += [b"1 0 0 1 40 %d Tm (overflow text here) Tj" % (760 - 12 * (i % lines)) for i in range(repeats)]
    ops.append(b"ET")
    objects = _catalog_and_pages([5])
    objects[4] = stream(b"\n".join(ops))
    objects[5] = _page(4)
    path.write_bytes(build_pdf(objects))
    return path


def dense_page_pdf(path: Path, *, lines: int = 190, words: int = 25) -> Path:
    """One page of 4-point type: `lines` lines of `words` distinct words each."""
    ops = [b"BT /F1 4 Tf 4 TL 5 785 Td"]
    ops += [b"(" + b" ".join(b"w%dx%d" % (n, i) for i in range(words)) + b") Tj T*" for n in range(lines)]
    ops.append(b"ET")
    objects = _catalog_and_pages([5])
    objects[4] = stream(b"\n".join(ops))
    objects[5] = _page(4)
    path.write_bytes(build_pdf(objects))
    return path


def text_image(text: str, *, dpi: int = 200, size_pt: float = 14) -> Image.Image:
    """A grayscale, letter-sized image of `text` (black on white), one line per line of text."""
    width, height = PAGE_WIDTH * dpi // 72, PAGE_HEIGHT * dpi // 72
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size_pt * dpi / 72)
    y = dpi  # a one-inch margin
    for line in text.splitlines():
        draw.text((dpi, y), line, fill=0, font=font)
        y += int(size_pt * 1.6 * dpi / 72)
    return image


ImageEncoding = Literal["flate", "ccitt", "inline"]


def scanned_pdf(
    path: Path,
    images: list[Image.Image],
    *,
    encoding: ImageEncoding = "flate",
    text_layers: list[str | None] | None = None,
) -> Path:
    """One page per image, each page nothing but its image scaled to the whole page.

    text_layers[i], when given, is drawn as real text (Helvetica) over page i's image.
    """
    page_nums = [5 + 3 * i for i in range(len(images))]
    objects = _catalog_and_pages(page_nums)
    place = b"q %d 0 0 %d 0 0 cm " % (PAGE_WIDTH, PAGE_HEIGHT)
    layers = text_layers or [None] * len(images)
    for num, image, layer in zip(page_nums, images, layers, strict=True):
        content_num, image_num = num + 1, num + 2
        width, height = image.size
        text = b"" if layer is None else b"\nBT /F1 12 Tf 72 40 Td (" + layer.encode("latin-1") + b") Tj ET"
        if encoding == "inline":
            gray = image.convert("L").tobytes()
            inline = b"BI /W %d /H %d /CS /G /BPC 8 /F /Fl ID\n" % (width, height) + zlib.compress(gray, 9)
            objects[content_num] = stream(place + inline + b"\nEI Q" + text, compress=False)
            objects[num] = _page(content_num, b"/Font << /F1 3 0 R >>")
            continue
        if encoding == "ccitt":
            data = _ccitt_group4(image)
            dictionary = (
                b" /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
                b" /BitsPerComponent 1 /Filter /CCITTFaxDecode"
                b" /DecodeParms << /K -1 /Columns %d /Rows %d /BlackIs1 false >>"
                % (width, height, width, height)
            )
            objects[image_num] = stream(data, dictionary, compress=False)
        else:
            dictionary = (
                b" /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
                b" /BitsPerComponent 8" % (width, height)
            )
            objects[image_num] = stream(image.convert("L").tobytes(), dictionary)
        objects[content_num] = stream(place + b"/Im1 Do Q" + text)
        objects[num] = _page(content_num, b"/Font << /F1 3 0 R >> /XObject << /Im1 %d 0 R >>" % image_num)
    path.write_bytes(build_pdf(objects))
    return path


def _ccitt_group4(image: Image.Image) -> bytes:
    """The image as one strip of CCITT Group 4 data (what fax machines and scanners write)."""
    buffer = io.BytesIO()
    bilevel = image.convert("1")
    bilevel.save(buffer, format="TIFF", compression="group4", tiffinfo={278: bilevel.height})
    tiff = Image.open(io.BytesIO(buffer.getvalue()))
    assert isinstance(tiff, TiffImagePlugin.TiffImageFile)
    [offset] = tiff.tag_v2[273]  # StripOffsets: one strip, rows per strip = the height
    [count] = tiff.tag_v2[279]  # StripByteCounts
    return buffer.getvalue()[offset : offset + count]
