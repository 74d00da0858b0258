"""PDF by pypdfium2 (PDFium, the engine of Chrome's viewer): each page's text layer in reading
order, pages joined by a blank line so no word glues across a page break; the location is the page.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import UsageError
from ._model import Document, DocumentBuilder
from ._read import RawDocument, ReadOptions, import_extra

# PDFium is not thread-safe, and batch reads documents in worker threads: one PDF at a time.
_PDFIUM = threading.Lock()


def read_pdf(raw: RawDocument, options: ReadOptions) -> Document:
    pdfium = import_extra("pypdfium2", "pypdfium2", f"{raw.name} (PDF)")
    with _PDFIUM:
        pdf = _open(pdfium, raw, options.password)
        try:
            pages = [_page_text(pdf, index) for index in range(len(pdf))]
        except pdfium.PdfiumError as exc:
            raise _damaged(raw, exc) from None
        finally:
            pdf.close()
    blank = sum(1 for text in pages if not text)
    if pages and blank == len(pages):
        raise UsageError(
            f"{raw.name} has no text layer on any of its {len(pages)} pages (a scan?): "
            f"make one with OCR first, e.g. ocrmypdf {raw.name} with-text.pdf"
        )
    builder = DocumentBuilder()
    for text in pages:
        builder.new_page()
        builder.paragraph(text)
    warnings = (f"{blank} of {len(pages)} pages have no text layer (scanned?); their text is missing",) if blank else ()
    return builder.build(raw.name, "pdf", warnings)


def _open(pdfium: Any, raw: RawDocument, password: str | None) -> Any:
    try:
        return pdfium.PdfDocument(raw.data, password=password)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            if password is None:
                raise UsageError(f"{raw.name} is an encrypted PDF: pass its password with --password") from None
            raise UsageError(
                f"{raw.name} is an encrypted PDF and the password given does not open it: "
                "pass the right one with --password"
            ) from None
        if exc.err_code == pdfium.raw.FPDF_ERR_SECURITY:
            raise UsageError(
                f"{raw.name} uses an encryption PDFium cannot open: save an unencrypted copy and read that"
            ) from None
        raise _damaged(raw, exc) from None


def _page_text(pdf: Any, index: int) -> str:
    page = pdf[index]
    try:
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_range()
        finally:
            textpage.close()
    finally:
        page.close()
    # PDFium ends lines with CRLF; the rest of llmxmr counts lines by LF.
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _damaged(raw: RawDocument, exc: Exception) -> UsageError:
    reason = str(exc).rstrip(".")
    return UsageError(f"{raw.name} is not a readable PDF ({reason}): it may be truncated; save or download it again")
