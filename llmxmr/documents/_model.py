"""A document as llmxmr reads it: the text chunking reads, and where in the original each offset is.

Locations are kept as sorted boundary arrays, not per character: the offset where each page begins
and where each heading's section begins (with its chain of headings). ``Document.locate`` finds an
offset's page, section and line by bisection, so a 500-page book costs 500 numbers, not one entry
per character.
"""

from __future__ import annotations

import bisect
import re
from array import array
from functools import cached_property
from itertools import chain, pairwise
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

DocumentFormat = Literal["text", "markdown", "pdf", "html", "epub", "docx"]
# Between blocks (paragraphs, headings, pages): a blank line, so no word glues to the next block's.
BLOCK_SEPARATOR = "\n\n"
SECTION_SEPARATOR = " › "
CELL_SEPARATOR = " | "  # between the cells of a table row, which is one line


class Location(BaseModel):
    """Where an offset of the text is in the original: its page (PDF), the chain of headings above
    it (EPUB, HTML, DOCX, Markdown), and its line in the text (every format)."""

    model_config = ConfigDict(frozen=True)

    line: int  # 1-based line of the offset in Document.text
    page: int | None = None  # 1-based page, PDF only
    section: tuple[str, ...] = ()  # outermost heading first: ("Chapter 12", "Netherfield")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        """What a citation shows: "p. 143", "Chapter 12 › Netherfield", or "line 12" when the
        format has neither pages nor a heading above the offset."""
        if self.page is not None:
            return f"p. {self.page}"
        if self.section:
            return SECTION_SEPARATOR.join(self.section)
        return f"line {self.line}"


class Document(BaseModel):
    """The text of a document and the boundaries that locate its offsets."""

    model_config = ConfigDict(frozen=True)

    text: str
    name: str  # the path as given, "standard input" or "bytes input": what messages call it
    format: DocumentFormat
    page_starts: tuple[int, ...] = ()  # page_starts[i]: offset where page i + 1 begins (PDF)
    section_starts: tuple[int, ...] = ()  # offset where each heading's section begins
    section_paths: tuple[tuple[str, ...], ...] = ()  # the heading chain of each of those sections
    warnings: tuple[str, ...] = ()  # what was read with a loss, e.g. pages without a text layer

    @model_validator(mode="after")
    def _boundaries_sorted(self) -> Document:
        if len(self.section_starts) != len(self.section_paths):
            raise ValueError("section_starts and section_paths differ in length")
        for name, starts in (("page_starts", self.page_starts), ("section_starts", self.section_starts)):
            if any(later < earlier for earlier, later in pairwise(starts)):
                raise ValueError(f"{name} is not sorted")
        return self

    @property
    def pages(self) -> int | None:
        """How many pages the original has, for paged formats."""
        return len(self.page_starts) or None

    def locate(self, start: int) -> Location:
        """The location of the character at ``start`` (clamped to the text)."""
        start = min(max(start, 0), len(self.text))
        page = bisect.bisect_right(self.page_starts, start) if self.page_starts else None
        section = bisect.bisect_right(self.section_starts, start) - 1
        return Location(
            line=bisect.bisect_right(self._line_starts, start),
            page=page,
            section=self.section_paths[section] if section >= 0 else (),
        )

    @cached_property
    def _line_starts(self) -> array[int]:
        # Built on the first locate(); an array of 8-byte offsets, a fifth of a list of ints.
        return array("q", chain((0,), (match.end() for match in re.finditer("\n", self.text))))


class Block(NamedTuple):
    """One paragraph of extracted text, or a heading (``level`` 1-6; 0 for a paragraph)."""

    text: str
    level: int = 0


class HeadingChain:
    """The headings open at the current point: a heading closes every open one of its level or deeper."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> tuple[str, ...]:
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        self._open.append((level, title))
        return tuple(title for _, title in self._open)


class DocumentBuilder:
    """Text assembled block by block, a blank line between blocks, recording where pages and
    sections begin. A heading stays in the text (the model reads it too) and opens its section."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._page_starts: list[int] = []
        self._headings = HeadingChain()
        self._section_starts: list[int] = []
        self._section_paths: list[tuple[str, ...]] = []

    def new_page(self) -> None:
        """The blocks added from now on are on the next page."""
        self._page_starts.append(self._next_start())

    def add(self, blocks: list[Block]) -> None:
        for block in blocks:
            if block.level:
                self.heading(block.level, block.text)
            else:
                self.paragraph(block.text)

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if title:
            self._section_starts.append(self._next_start())
            self._section_paths.append(self._headings.enter(level, title))
            self._append(title)

    def paragraph(self, text: str) -> None:
        text = text.strip()
        if text:
            self._append(text)

    def build(self, name: str, format: DocumentFormat, warnings: tuple[str, ...] = ()) -> Document:
        return Document(
            text="".join(self._parts),
            name=name,
            format=format,
            page_starts=tuple(self._page_starts),
            section_starts=tuple(self._section_starts),
            section_paths=tuple(self._section_paths),
            warnings=warnings,
        )

    def _next_start(self) -> int:
        return self._length + len(BLOCK_SEPARATOR) if self._length else 0

    def _append(self, text: str) -> None:
        if self._length:
            self._parts.append(BLOCK_SEPARATOR)
            self._length += len(BLOCK_SEPARATOR)
        self._parts.append(text)
        self._length += len(text)
