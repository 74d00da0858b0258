"""Text and Markdown: decoded as they are (BOMs, UTF-16), located by line; Markdown's ATX headings
(``# Title``, outside fenced code) open sections."""

from __future__ import annotations

import re

from ._model import Document, HeadingChain
from ._read import RawDocument, ReadOptions, decode_text

_LINE = re.compile(r"[^\n]*\n?")
_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_CLOSING_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")


def read_plain_text(raw: RawDocument, options: ReadOptions) -> Document:
    return Document(text=decode_text(raw.data, raw.name), name=raw.name, format="text")


def read_markdown(raw: RawDocument, options: ReadOptions) -> Document:
    text = decode_text(raw.data, raw.name)
    starts, paths = markdown_sections(text)
    return Document(text=text, name=raw.name, format="markdown", section_starts=starts, section_paths=paths)


def markdown_sections(text: str) -> tuple[tuple[int, ...], tuple[tuple[str, ...], ...]]:
    """Where each ATX heading's section begins (the heading line's offset), and its chain."""
    starts: list[int] = []
    paths: list[tuple[str, ...]] = []
    headings = HeadingChain()
    fence = ""  # the open fence's run of ` or ~, while inside fenced code
    for match in _LINE.finditer(text):
        line = match.group().rstrip("\r\n")
        if fence:
            closing = _CLOSING_FENCE.fullmatch(line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                fence = ""
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            continue
        heading = _ATX_HEADING.fullmatch(line)
        title = " ".join((heading.group(2) or "").split()) if heading else ""
        if heading and title:
            starts.append(match.start())
            paths.append(headings.enter(len(heading.group(1)), title))
    return tuple(starts), tuple(paths)
