"""Which format a document is in, from its content: magic bytes, zip members, an HTML start.
The extension decides only what content cannot: Markdown (it is text), and what a damaged
archive was meant to be."""

from __future__ import annotations

import codecs

from ..errors import UsageError
from ._model import DocumentFormat
from ._read import RawDocument, ReadOptions
from ._zip import Archive, kind_by_suffix

SUPPORTED = "llmxmr reads text, Markdown, HTML, PDF, EPUB and DOCX"
EPUB_MIMETYPE = b"application/epub+zip"
EPUB_CONTAINER = "META-INF/container.xml"
DOCX_BODY = "word/document.xml"
MARKDOWN_SUFFIXES = (".md", ".markdown")
_PDF_MAGIC = b"%PDF-"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a first member, or an empty archive
_HTML_STARTS = ("<!doctype html", "<html")
_PREAMBLES = ("<?xml", "<!--")  # may come before an XHTML page's <html>
_SNIFF_BYTES = 1024


def detect(raw: RawDocument, options: ReadOptions) -> DocumentFormat:
    data = raw.data
    if data[:_SNIFF_BYTES].lstrip().startswith(_PDF_MAGIC):
        return "pdf"
    if data.startswith(_ZIP_MAGICS):
        with Archive(raw, kind_by_suffix(raw), options.max_bytes) as archive:
            return _zip_format(archive, raw)
    if _looks_like_html(data):
        return "html"
    if raw.suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    return "text"


def _zip_format(archive: Archive, raw: RawDocument) -> DocumentFormat:
    names = set(archive.names())
    if EPUB_CONTAINER in names or ("mimetype" in names and archive.read("mimetype", limit=64).strip() == EPUB_MIMETYPE):
        return "epub"
    if any(name.startswith("word/") for name in names) or raw.suffix == ".docx":
        return "docx"  # the DOCX reader says what is missing
    if raw.suffix == ".epub":
        return "epub"
    raise UsageError(f"{raw.name} is a zip archive, not an EPUB or DOCX: {SUPPORTED}")


def _looks_like_html(data: bytes) -> bool:
    head = data[:_SNIFF_BYTES]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        start = head.decode("utf-16", errors="ignore")
    else:  # the tags are ASCII in UTF-8 and in every legacy charset a page may declare
        start = head.removeprefix(codecs.BOM_UTF8).decode("latin-1")
    start = start.lstrip().lower()
    return start.startswith(_HTML_STARTS) or (start.startswith(_PREAMBLES) and "<html" in start)
