"""Real documents made by the tests: PDFs written by hand, DOCX files through python-docx.

Reusable by any suite (documents unit tests, API integration tests): every factory writes the
file at `path`, returns `path`, and needs no external tool.

- make_pdf: a valid PDF (correct xref offsets), one page per string, Helvetica text that
  pdftotext extracts as written; optional Info title/author and an RC4 40-bit user password
  (the PDF standard security handler, revision 2) for password-protected cases.
- make_docx: one page per string (page breaks between them), paragraphs split on blank lines.
- make_zip_bomb: a Word package that inflates to `uncompressed_bytes`.
"""

from __future__ import annotations

import hashlib
import struct
import textwrap
import zipfile
from pathlib import Path

# PDF 32000-1 7.6.3.3: the padding for passwords in the standard security handler.
_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_LINE_CHARS = 90
_LINES_PER_PAGE = 60


def make_pdf(
    path: Path,
    pages: list[str],
    *,
    title: str | None = None,
    author: str | None = None,
    user_password: str | None = None,
) -> Path:
    """Write a PDF with one page per string in `pages` (text must be encodable as cp1252)."""
    if not pages:
        raise ValueError("a PDF needs at least one page")
    file_id = hashlib.md5(repr((pages, title, author)).encode(), usedforsecurity=False).digest()
    n_pages = len(pages)
    # Object numbers: 1 catalog, 2 pages, 3 font, then page/content pairs, then info, then encrypt.
    page_nums = [4 + 2 * i for i in range(n_pages)]
    info_num = 4 + 2 * n_pages
    encrypt_num = info_num + 1

    crypt_key: bytes | None = None
    encrypt_dict = b""
    if user_password is not None:
        owner_entry, user_entry, crypt_key = _standard_security(user_password, file_id)
        encrypt_dict = (
            b"<< /Filter /Standard /V 1 /R 2 /Length 40 /P -4 /O <"
            + owner_entry.hex().encode()
            + b"> /U <"
            + user_entry.hex().encode()
            + b"> >>"
        )

    def string(num: int, text: str) -> bytes:
        raw = text.encode("cp1252")
        if crypt_key is not None:
            raw = _rc4(_object_key(crypt_key, num), raw)
        return b"<" + raw.hex().encode() + b">"

    def stream(num: int, data: bytes) -> bytes:
        if crypt_key is not None:
            data = _rc4(_object_key(crypt_key, num), data)
        return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % n for n in page_nums)
        + b"] /Count %d >>" % n_pages,
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for page_num, text in zip(page_nums, pages, strict=True):
        content_num = page_num + 1
        objects[page_num] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content_num
        )
        objects[content_num] = stream(content_num, _page_content(text))
    info = []
    if title is not None:
        info.append(b"/Title " + string(info_num, title))
    if author is not None:
        info.append(b"/Author " + string(info_num, author))
    info.append(b"/Producer " + string(info_num, "wcu_ai tests"))
    objects[info_num] = b"<< " + b" ".join(info) + b" >>"
    if encrypt_dict:
        objects[encrypt_num] = encrypt_dict

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    trailer = b"<< /Size %d /Root 1 0 R /Info %d 0 R" % (size, info_num)
    trailer += b" /ID [<" + file_id.hex().encode() + b"> <" + file_id.hex().encode() + b">]"
    if encrypt_dict:
        trailer += b" /Encrypt %d 0 R" % encrypt_num
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
    path.write_bytes(bytes(out))
    return path


def _page_content(text: str) -> bytes:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, _LINE_CHARS) or [""])
    if len(lines) > _LINES_PER_PAGE:
        raise ValueError(f"page text needs {len(lines)} lines; a test page holds {_LINES_PER_PAGE}")
    ops = [b"BT", b"/F1 10 Tf", b"12 TL", b"50 760 Td"]
    for line in lines:
        ops.append(b"<" + line.encode("cp1252").hex().encode() + b"> Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _pad(password: str) -> bytes:
    return (password.encode("latin-1") + _PASSWORD_PAD)[:32]


def _standard_security(user_password: str, file_id: bytes) -> tuple[bytes, bytes, bytes]:
    """O, U and the file key for revision 2 (PDF 32000-1 algorithms 2, 3 and 4)."""
    owner_key = hashlib.md5(_pad(user_password + "-owner"), usedforsecurity=False).digest()[:5]
    owner_entry = _rc4(owner_key, _pad(user_password))
    permissions = struct.pack("<i", -4)
    file_key = hashlib.md5(
        _pad(user_password) + owner_entry + permissions + file_id, usedforsecurity=False
    ).digest()[:5]
    user_entry = _rc4(file_key, _PASSWORD_PAD)
    return owner_entry, user_entry, file_key


def _object_key(file_key: bytes, num: int, gen: int = 0) -> bytes:
    seed = file_key + struct.pack("<i", num)[:3] + struct.pack("<i", gen)[:2]
    return hashlib.md5(seed, usedforsecurity=False).digest()[: min(len(file_key) + 5, 16)]


def make_docx(
    path: Path,
    pages: list[str],
    *,
    title: str | None = None,
    author: str | None = None,
) -> Path:
    """Write a DOCX with a page break between the strings of `pages`."""
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    for index, text in enumerate(pages):
        for paragraph in text.split("\n\n"):
            document.add_paragraph(paragraph)
        if index < len(pages) - 1:
            document.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
    if title is not None:
        document.core_properties.title = title
    if author is not None:
        document.core_properties.author = author
    document.save(str(path))
    return path


PACKAGE_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"'
    ' Target="word/document.xml"/></Relationships>'
)
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml"'
    ' ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)


def make_zip_bomb(path: Path, uncompressed_bytes: int) -> Path:
    """A Word package whose word/document.xml inflates to `uncompressed_bytes` of zeros."""
    block = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", PACKAGE_RELS)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            remaining = uncompressed_bytes
            while remaining > 0:
                chunk = block[: min(remaining, len(block))]
                member.write(chunk)
                remaining -= len(chunk)
    return path


def make_garbage(path: Path, size: int = 4096, *, seed: int = 7) -> Path:
    """Bytes that are neither PDF nor zip, e.g. to name garbage.docx."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    path.write_bytes(bytes(out[:size]))
    return path
