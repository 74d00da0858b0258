"""Documents of every format, built in memory for the tests: PDFs written with reportlab, DOCX with
python-docx, EPUB and damaged archives assembled with zipfile. Nothing is downloaded."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

XHTML = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>
<body>{body}</body></html>"""
CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="{opf}" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""
OPF = """<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">test</dc:identifier>
    <dc:title>Test</dc:title><dc:language>en</dc:language></metadata>
  <manifest>{items}<item id="css" href="style.css" media-type="text/css"/></manifest>
  <spine>{itemrefs}</spine>
</package>"""


def pdf_bytes(pages: list[str], password: str | None = None) -> bytes:
    """A PDF with one page per string (one text line per line of it), optionally encrypted."""
    canvas = pytest.importorskip("reportlab.pdfgen.canvas")
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, encrypt=password)
    for text in pages:
        for number, line in enumerate(text.splitlines()):
            pdf.drawString(72, 720 - 16 * number, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def image_only_pdf(pages: int) -> bytes:
    """A PDF whose pages hold shapes and no text, as a scan without OCR does."""
    canvas = pytest.importorskip("reportlab.pdfgen.canvas")
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for _ in range(pages):
        pdf.rect(72, 72, 300, 400, fill=1)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            # EPUB: the mimetype member comes first and is stored, so the file starts with it.
            archive.writestr(name, data, zipfile.ZIP_STORED if name == "mimetype" else compression)
    return buffer.getvalue()


def epub_members(chapters: list[tuple[str, str]], spine: list[int] | None = None) -> dict[str, bytes]:
    """The members of an EPUB 3 whose chapters are (title, body XHTML); ``spine`` orders them
    (default: as given) while the manifest lists them as given."""
    order = spine if spine is not None else list(range(len(chapters)))
    items = "".join(
        f'<item id="c{index}" href="text/chapter%20{index}.xhtml" media-type="application/xhtml+xml"/>'
        for index in range(len(chapters))
    )
    itemrefs = "".join(f'<itemref idref="c{index}"/>' for index in order)
    members = {
        "mimetype": b"application/epub+zip",
        "META-INF/container.xml": CONTAINER.format(opf="OEBPS/content.opf").encode(),
        "OEBPS/content.opf": OPF.format(items=items, itemrefs=itemrefs).encode(),
        "OEBPS/style.css": b"p { margin: 0 }",
    }
    for index, (title, body) in enumerate(chapters):
        members[f"OEBPS/text/chapter {index}.xhtml"] = XHTML.format(title=title, body=body).encode()
    return members


def epub_bytes(chapters: list[tuple[str, str]], spine: list[int] | None = None) -> bytes:
    return zip_bytes(epub_members(chapters, spine))


def docx_bytes(write: Callable[[Any], None]) -> bytes:
    """A DOCX written by python-docx: ``write`` fills a new document."""
    docx = pytest.importorskip("docx")
    document = docx.Document()
    write(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def understate_size(data: bytes, member: str, by: int) -> bytes:
    """The archive with ``member``'s declared uncompressed size made ``by`` bytes smaller, in its
    local header and in the central directory: its stream then inflates past what it declares."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(member)
    patched = bytearray(data)
    smaller = struct.pack("<I", info.file_size - by)
    patched[info.header_offset + 22 : info.header_offset + 26] = smaller  # local file header
    name = member.encode()
    at = patched.find(b"PK\x01\x02")
    while at >= 0:  # the member's central directory entry: its name is at +46, its size at +24
        length = struct.unpack_from("<H", patched, at + 28)[0]
        if bytes(patched[at + 46 : at + 46 + length]) == name:
            patched[at + 24 : at + 28] = smaller
            return bytes(patched)
        at = patched.find(b"PK\x01\x02", at + 4)
    raise ValueError(f"{member} not in the central directory")
