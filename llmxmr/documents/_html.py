"""HTML to blocks: the main text by trafilatura (boilerplate dropped, headings kept), and a plain
walk of the whole body for what trafilatura drops (a page it finds no main text in, a short EPUB
chapter it folds into one paragraph).

Both are one walk over a tree, told apart by their markup: HTML's own tags, or the XML trafilatura
writes (``head rend="h2"``, ``p``, ``list``/``item``, ``table``/``row``/``cell``, ``lb``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._model import CELL_SEPARATOR, Block, Document, DocumentBuilder
from ._read import RawDocument, ReadOptions, import_extra

# A line break inside a paragraph, marked before whitespace is collapsed (then a newline).
_BREAK = "\u2028"
_HEADING_TAG = re.compile(r"h([1-6])")


@dataclass(frozen=True)
class Markup:
    """The tags of one markup language that matter to the walk."""

    heading_level: Callable[[Any], int]  # 1-6 for a heading element, else 0
    structural: frozenset[str]  # block-level: an element with none of these inside is one paragraph
    rows: frozenset[str]  # a table row: one line, its cells joined by CELL_SEPARATOR
    cells: frozenset[str]
    breaks: frozenset[str]
    preformatted: frozenset[str]  # whitespace kept as written
    skipped: frozenset[str]  # never text: scripts, styles, navigation


def _html_heading(element: Any) -> int:
    match = _HEADING_TAG.fullmatch(element.tag)
    return int(match.group(1)) if match else 0


def _trafilatura_heading(element: Any) -> int:
    if element.tag != "head":
        return 0
    match = _HEADING_TAG.fullmatch(element.get("rend", ""))
    return int(match.group(1)) if match else 2


HTML = Markup(
    heading_level=_html_heading,
    structural=frozenset(
        "address article aside blockquote body center dd details dialog div dl dt fieldset figcaption "
        "figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main menu ol p pre section summary "
        "table tbody thead tfoot tr ul caption".split()
    ),
    rows=frozenset({"tr"}),
    cells=frozenset({"td", "th"}),
    breaks=frozenset({"br"}),
    preformatted=frozenset({"pre"}),
    skipped=frozenset({"script", "style", "head", "noscript", "template", "nav"}),
)
TRAFILATURA = Markup(
    heading_level=_trafilatura_heading,
    structural=frozenset({"body", "main", "doc", "div", "head", "p", "list", "item", "table", "row", "quote", "code"}),
    rows=frozenset({"row"}),
    cells=frozenset({"cell"}),
    breaks=frozenset({"lb"}),
    preformatted=frozenset({"code"}),
    skipped=frozenset({"comments", "graphic"}),
)


def blocks_of(root: Any, markup: Markup) -> list[Block]:
    """The paragraphs and headings under ``root``, in document order. Modifies the tree (breaks
    become text, skipped elements go): callers pass a tree of their own."""
    from lxml import etree

    etree.strip_elements(root, etree.Comment, etree.ProcessingInstruction, *markup.skipped, with_tail=False)
    for line_break in root.iter(*markup.breaks):
        line_break.tail = _BREAK + (line_break.tail or "")
    blocks: list[Block] = []
    _walk(root, markup, blocks)
    return [block for block in blocks if block.text]


def _walk(element: Any, markup: Markup, blocks: list[Block]) -> None:
    # Recursion is bounded by the parser: libxml2 refuses trees deeper than 256 levels without huge_tree.
    level = markup.heading_level(element)
    if level:
        blocks.append(Block(_flat(element), level))
    elif element.tag in markup.rows:
        cells = (_flat(cell) for cell in element.iter(*markup.cells))
        blocks.append(Block(CELL_SEPARATOR.join(cell for cell in cells if cell)))
    elif not _has_structure(element, markup):
        blocks.append(Block(_paragraph(element, element.tag in markup.preformatted)))
    else:
        _walk_container(element, markup, blocks)


def _walk_container(element: Any, markup: Markup, blocks: list[Block]) -> None:
    """A block with blocks inside: text between them (loose text, inline elements) is a paragraph
    of its own."""
    run = [element.text or ""]
    for child in element:
        if child.tag in markup.structural or _has_structure(child, markup):
            blocks.append(Block(_normalise("".join(run))))
            run = []
            _walk(child, markup, blocks)
        else:
            run.append("".join(child.itertext()))
        run.append(child.tail or "")
    blocks.append(Block(_normalise("".join(run))))


def _has_structure(element: Any, markup: Markup) -> bool:
    return next(element.iterdescendants(*markup.structural), None) is not None


def _flat(element: Any) -> str:
    """An element's text on one line: headings and table cells."""
    return " ".join("".join(element.itertext()).replace(_BREAK, " ").split())


def _paragraph(element: Any, preformatted: bool) -> str:
    text = "".join(element.itertext())
    return text.replace(_BREAK, "\n").strip("\n") if preformatted else _normalise(text)


def _normalise(text: str) -> str:
    """Whitespace as a browser shows it: runs collapse to one space, and only marked breaks end a line."""
    lines = (" ".join(line.split()) for line in text.split(_BREAK))
    return "\n".join(line for line in lines if line)


def main_text(data: bytes) -> list[Block]:
    """The main text of a web page by trafilatura, favouring recall (a question may be about any
    paragraph); empty when trafilatura finds none."""
    import trafilatura
    from trafilatura.settings import Document as Extraction

    result = trafilatura.bare_extraction(
        data,
        output_format="python",
        favor_recall=True,
        include_comments=False,
        include_tables=True,
        include_formatting=False,
        include_links=False,
        include_images=False,
        with_metadata=False,
    )
    if not isinstance(result, Extraction) or result.body is None:  # a dict only if as_dict were asked
        return []
    return blocks_of(result.body, TRAFILATURA)


def page_blocks(data: bytes) -> list[Block]:
    """Every paragraph of a web page's body (trafilatura decodes it: declared charset, or detected)."""
    from trafilatura.utils import load_html

    tree = load_html(data)
    return [] if tree is None else blocks_of(tree, HTML)


def read_html_blocks(data: bytes) -> list[Block]:
    """A web page: its main text, or all of its body when trafilatura finds no main text."""
    return main_text(data) or page_blocks(data)


def read_html(raw: RawDocument, options: ReadOptions) -> Document:
    import_extra("trafilatura", "trafilatura", f"{raw.name} (HTML)")
    builder = DocumentBuilder()
    builder.add(read_html_blocks(raw.data))
    return builder.build(raw.name, "html")
