"""DOCX by python-docx: the body's paragraphs and tables in order, "Heading N" styles as the
section chain, each table row as one line with its cells joined by " | "."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from ._detect import DOCX_BODY
from ._model import CELL_SEPARATOR, Block, Document, DocumentBuilder
from ._read import RawDocument, ReadOptions, import_extra
from ._zip import Archive

# Built-in heading styles; python-docx gives them their English names whatever Word's language.
_HEADING_STYLE = re.compile(r"Heading ([1-9])")


def read_docx(raw: RawDocument, options: ReadOptions) -> Document:
    docx = import_extra("docx", "python-docx", f"{raw.name} (DOCX)")
    from docx.opc.exceptions import PackageNotFoundError
    from lxml import etree

    with Archive(raw, "DOCX", options.max_bytes) as archive:  # python-docx unpacks it only if bounded
        if DOCX_BODY not in archive.names():
            raise archive.damaged(f"{DOCX_BODY} is missing")
        builder = DocumentBuilder()
        try:
            builder.add(list(_blocks(docx.Document(io.BytesIO(raw.data)))))
        except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile, etree.LxmlError) as exc:
            raise archive.damaged(str(exc).strip("'\"")) from None
    return builder.build(raw.name, "docx")


def _blocks(document: Any) -> Iterator[Block]:
    from docx.text.paragraph import Paragraph

    levels = _HeadingLevels()
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            yield Block(item.text, levels.of(item))
        else:
            yield from (Block(_row_text(row)) for row in item.rows)


class _HeadingLevels:
    """The heading level of a paragraph's style, looked up once per style: python-docx resolves
    ``paragraph.style`` by scanning every style of the document (nine tenths of a long DOCX's
    reading time, measured), and a document has a few dozen styles for thousands of paragraphs."""

    def __init__(self) -> None:
        self._levels: dict[str | None, int] = {}

    def of(self, paragraph: Any) -> int:
        style_id = paragraph._p.style  # the w:pStyle of the paragraph, None for the default style
        if style_id not in self._levels:
            style = paragraph.style
            match = _HEADING_STYLE.fullmatch(style.name or "") if style is not None else None
            self._levels[style_id] = int(match.group(1)) if match else 0
        return self._levels[style_id]


def _row_text(row: Any) -> str:
    cells: list[str] = []
    previous = None
    for cell in row.cells:
        # A merged cell comes once per grid column it spans, as the same underlying element.
        if cell._tc is not previous:
            cells.append(" ".join(cell.text.split()))
        previous = cell._tc
    return CELL_SEPARATOR.join(cell for cell in cells if cell)
