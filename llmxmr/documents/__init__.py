"""Reading the user's document: text, Markdown, HTML, PDF, EPUB or DOCX, told apart by content.

``read_document`` gives a ``Document``: the text chunking reads, and the boundaries that locate
any offset of it (``Document.locate``): the page of a PDF, the chain of headings of an EPUB, HTML
page, DOCX or Markdown file, the line of any text. Every bad input (encrypted or scanned PDF,
damaged file, zip bomb, no text, missing extra) is one ``UsageError`` line raised while reading,
before anything else runs.

Text is read as it always was (UTF-8, or UTF-16/UTF-8 by byte-order mark); the other formats need
the ``docs`` extra, imported only when a document needs it.
"""

from __future__ import annotations

from collections.abc import Callable

from ._detect import detect
from ._docx import read_docx
from ._epub import read_epub
from ._html import read_html
from ._markdown import read_markdown, read_plain_text
from ._model import Document, DocumentFormat, Location
from ._pdf import read_pdf
from ._read import RawDocument, ReadOptions, Source, check_extracted, decode_text, read_source

__all__ = ["Document", "DocumentFormat", "Location", "Source", "decode_text", "read_document", "read_text"]

_READERS: dict[DocumentFormat, Callable[[RawDocument, ReadOptions], Document]] = {
    "text": read_plain_text,
    "markdown": read_markdown,
    "pdf": read_pdf,
    "html": read_html,
    "epub": read_epub,
    "docx": read_docx,
}
# Formats whose text is extracted, not decoded: it must not be empty, and is held to the limit too.
_EXTRACTED: dict[DocumentFormat, str] = {"pdf": "a PDF", "html": "an HTML page", "epub": "an EPUB", "docx": "a DOCX"}


def read_document(source: Source, *, max_bytes: int | None = None, password: str | None = None) -> Document:
    """The document at a path, on standard input (``"-"``), or in ``bytes``. ``max_bytes`` caps the
    file and the text extracted from it; ``password`` opens an encrypted PDF."""
    options = ReadOptions(max_bytes=max_bytes, password=password)
    raw = read_source(source, max_bytes)
    format = detect(raw, options)
    document = _READERS[format](raw, options)
    if format in _EXTRACTED:
        check_extracted(document.text, raw.name, _EXTRACTED[format], max_bytes)
    return document


def read_text(source: Source, max_bytes: int | None = None) -> str:
    """The text of a document, for callers that need no locations."""
    return read_document(source, max_bytes=max_bytes).text
