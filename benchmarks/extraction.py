"""Extraction speed: pages/s, MB/s and peak memory of ``read_document`` for each input format.

    python benchmarks/extraction.py [--words 300000] [--pdf-pages 500] [--repeat 3]
                                    [--books ../shared/corpus/books] [--keep DIR]

Documents of realistic size are generated from the same prose, the paragraphs of the ``*.txt``
books in ``--books`` (default ``../shared/corpus/books/`` next to the checkout, read in place, in
name order; without it, one generated sentence pair repeated):

* **pdf**: ``--pdf-pages`` (500) letter pages written by reportlab, 11 pt Helvetica, 42 lines a page.
* **epub**: ``--words`` (300k) words in chapters of about 5,000 words (an h1 each, an h2 every
  1,000 words), assembled with zipfile as an EPUB 3.
* **docx**: the same words written by python-docx, with Heading 1/2 styles and a table per chapter.
* **html**: the same words as one page (a whole book, as Project Gutenberg serves them), with a
  navigation bar, a header and a footer of boilerplate around it.
* **markdown** and **text**: the same words with ``#`` headings, and without.

Each format is read in a fresh process (``--measure``): the imports first, then ``--repeat`` timed
``read_document`` calls (best of). ``peak MB`` is the growth of the process's resident high-water
mark (``ru_maxrss``) across the first read, above where it stood after the imports: it counts the
file's bytes, the parsers' C memory (PDFium, libxml2) and the text; tracemalloc would see only
Python's share. ``words`` are those of the extracted text; ``pages`` are real pages for the PDF
and words / 300 (a printed book page) for the other formats. ``vs map call`` is the extraction time
over the time of one LLM call of the embedded model, from ``benchmarks/results/e2e.json`` (its wall
time over its calls) when present.

Prints a table and writes benchmarks/results/extraction.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

RESULTS = Path(__file__).parent / "results" / "extraction.json"
E2E = Path(__file__).parent / "results" / "e2e.json"
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "books"
FALLBACK = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families."
)
WORDS_PER_PAGE = 300
CHAPTER_WORDS = 5_000
SECTION_WORDS = 1_000
PDF_LINES_PER_PAGE = 42
PDF_CHARS_PER_LINE = 95
FORMATS = ("pdf", "epub", "docx", "html", "markdown", "text")
LIBRARIES = {"pdf": "pypdfium2", "epub": "trafilatura", "docx": "python-docx", "html": "trafilatura"}


# --- the prose -----------------------------------------------------------------------------------


def paragraphs(books: Path) -> tuple[list[str], str]:
    """The books' paragraphs (blank-line separated, whitespace collapsed, at least 8 words)."""
    files = sorted(books.glob("*.txt")) if books.is_dir() else []
    found = [
        " ".join(block.split())
        for path in files
        for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n")
        if len(block.split()) >= 8
    ]
    if found:
        return found, f"paragraphs of {', '.join(p.name for p in files)} from {books}"
    return [FALLBACK], f"generated English ({books} not found)"


def take_words(source: list[str], words: int) -> list[str]:
    """Paragraphs from the start of ``source`` (cycled) until they hold ``words`` words."""
    taken: list[str] = []
    count = 0
    while count < words:
        paragraph = source[len(taken) % len(source)]
        taken.append(paragraph)
        count += len(paragraph.split())
    return taken


class Chapter:
    """A chapter of the generated book: its title, and its sections (title, paragraphs)."""

    def __init__(self, number: int) -> None:
        self.title = f"Chapter {number}"
        self.sections: list[tuple[str, list[str]]] = []


def chapters(prose: list[str]) -> list[Chapter]:
    book: list[Chapter] = []
    chapter_words = section_words = CHAPTER_WORDS
    for paragraph in prose:
        if chapter_words >= CHAPTER_WORDS:
            book.append(Chapter(len(book) + 1))
            chapter_words = 0
            section_words = SECTION_WORDS
        if section_words >= SECTION_WORDS:
            book[-1].sections.append((f"Section {len(book)}.{len(book[-1].sections) + 1}", []))
            section_words = 0
        book[-1].sections[-1][1].append(paragraph)
        words = len(paragraph.split())
        chapter_words += words
        section_words += words
    return book


# --- the documents -------------------------------------------------------------------------------


def write_pdf(prose: list[str], pages: int) -> bytes:
    from reportlab.pdfgen import canvas

    lines = line_stream(prose)
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for _ in range(pages):
        text = pdf.beginText(54, 750)
        text.setFont("Helvetica", 11)
        for _ in range(PDF_LINES_PER_PAGE):
            text.textLine(next(lines))
        pdf.drawText(text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def line_stream(prose: list[str]) -> Iterator[str]:
    while True:
        for paragraph in prose:
            yield from textwrap.wrap(paragraph, PDF_CHARS_PER_LINE)
            yield ""


def write_epub(book: list[Chapter]) -> bytes:
    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    items = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(len(book)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(book)))
    opf = (
        '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">bench'
        f"</dc:identifier><dc:title>Bench</dc:title></metadata><manifest>{items}</manifest><spine>{spine}</spine></package>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/epub+zip", zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", container)
        archive.writestr("OEBPS/content.opf", opf)
        for index, chapter in enumerate(book):
            body = f"<h1>{chapter.title}</h1>" + html_sections(chapter)
            archive.writestr(
                f"OEBPS/c{index}.xhtml",
                '<?xml version="1.0" encoding="utf-8"?><!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml">'
                f"<head><title>{chapter.title}</title></head><body><section>{body}</section></body></html>",
            )
    return buffer.getvalue()


def html_sections(chapter: Chapter) -> str:
    return "".join(
        f"<h2>{title}</h2>" + "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
        for title, paragraphs in chapter.sections
    )


def write_html(book: list[Chapter]) -> bytes:
    nav = "".join(f'<a href="/page/{i}">Link {i}</a> ' for i in range(30))
    body = "".join(f'<div class="chapter"><h1>{c.title}</h1>{html_sections(c)}</div>' for c in book)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Bench</title>'
        '<script>var analytics = "tracking";</script></head><body>'
        f"<header><nav>{nav}</nav><p>Sign in to read more books.</p></header>"
        f"<main><article><h1>The Book</h1>{body}</article></main>"
        "<footer><p>This eBook is for the use of anyone anywhere at no cost.</p><p>Privacy · Terms</p></footer>"
        "</body></html>"
    ).encode()


def write_docx(book: list[Chapter]) -> bytes:
    import docx

    document = docx.Document()
    for chapter in book:
        document.add_heading(chapter.title, level=1)
        for title, paragraphs in chapter.sections:
            document.add_heading(title, level=2)
            for paragraph in paragraphs:
                document.add_paragraph(paragraph)
        table = document.add_table(rows=3, cols=3)
        for row in range(3):
            for column in range(3):
                table.cell(row, column).text = f"{chapter.title} r{row} c{column}"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def write_markdown(book: list[Chapter]) -> bytes:
    return "\n\n".join(
        f"# {c.title}\n\n" + "\n\n".join(f"## {t}\n\n" + "\n\n".join(ps) for t, ps in c.sections) for c in book
    ).encode()


def write_text(prose: list[str]) -> bytes:
    return "\n\n".join(prose).encode()


def build(fmt: str, prose: list[str], book: list[Chapter], pdf_pages: int) -> bytes:
    writers: dict[str, Callable[[], bytes]] = {
        "pdf": lambda: write_pdf(prose, pdf_pages),
        "epub": lambda: write_epub(book),
        "docx": lambda: write_docx(book),
        "html": lambda: write_html(book),
        "markdown": lambda: write_markdown(book),
        "text": lambda: write_text(prose),
    }
    return writers[fmt]()


# --- measuring, in a fresh process per format ----------------------------------------------------


def measure(path: Path, repeat: int) -> dict[str, Any]:
    """Run in the child: warm the imports, then time ``repeat`` reads; the high-water mark's growth
    over the first read is its peak memory (ru_maxrss is in KB on Linux)."""
    import docx  # noqa: F401  (the imports are not the extraction's cost)
    import pypdfium2  # noqa: F401
    import trafilatura  # noqa: F401

    from llmxmr.documents import read_document

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for attempt in range(repeat):
        started = time.perf_counter()
        document = read_document(str(path))
        best = min(best, time.perf_counter() - started)
        if attempt == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        counts = {
            "text_bytes": len(document.text.encode()),
            "words": len(document.text.split()),
            "sections": len(document.section_starts),
            "pdf_pages": document.pages,
        }
        del document
    return {"seconds": best, "peak_mb": peak / 1024, **counts}


def measure_in_child(path: Path, repeat: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--measure", str(path), "--repeat", str(repeat)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def map_call_seconds() -> tuple[float | None, str]:
    if not E2E.is_file():
        return None, f"{E2E} not found"
    run = json.loads(E2E.read_text())["run"]
    return run["wall_s"] / run[
        "calls"
    ], f"{E2E.name}: {run['wall_s']} s wall / {run['calls']} calls, {json.loads(E2E.read_text())['model']}"


def row_for(fmt: str, data: bytes, measured: dict[str, Any], map_call: float | None) -> dict[str, Any]:
    seconds, words = measured["seconds"], measured["words"]
    pages = measured["pdf_pages"] if fmt == "pdf" else words / WORDS_PER_PAGE
    return {
        "format": fmt,
        "library": LIBRARIES.get(fmt, "llmxmr (decode)"),
        "file_mb": round(len(data) / 1e6, 2),
        "text_mb": round(measured["text_bytes"] / 1e6, 2),
        "words": words,
        "pages": round(pages),
        "pages_are": "pages" if fmt == "pdf" else f"words / {WORDS_PER_PAGE}",
        "sections": measured["sections"],
        "seconds": round(seconds, 3),
        "pages_per_s": round(pages / seconds, 1),
        "file_mb_per_s": round(len(data) / 1e6 / seconds, 2),
        "text_mb_per_s": round(measured["text_bytes"] / 1e6 / seconds, 2),
        "peak_mb": round(measured["peak_mb"], 1),
        "vs_map_call": round(seconds / map_call, 3) if map_call else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=300_000, help="words of the EPUB, DOCX, HTML, Markdown and text")
    parser.add_argument("--pdf-pages", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="best of N reads")
    parser.add_argument("--books", type=Path, default=BOOKS, help="folder of .txt books (default: %(default)s)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--keep", type=Path, help="write the generated documents here (default: a temporary folder)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.repeat)))
        return

    source, source_note = paragraphs(args.books)
    prose = take_words(source, args.words)
    words = sum(len(p.split()) for p in prose)
    book = chapters(prose)
    map_call, map_call_note = map_call_seconds()
    print(f"prose: {source_note}")
    print(
        f"{words:,} words in {len(book)} chapters; PDF {args.pdf_pages} pages; best of {args.repeat}; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"one map call: {f'{map_call:.1f} s' if map_call else '-'} ({map_call_note})\n")

    header = (
        f"{'format':9} {'file MB':>8} {'text MB':>8} {'words':>8} {'pages':>6} {'sections':>8} {'seconds':>8} "
        f"{'pages/s':>8} {'MB/s':>7} {'text MB/s':>9} {'peak MB':>8} {'vs map call':>11}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in args.formats.split(","):
            data = build(fmt, prose, book, args.pdf_pages)
            path = folder / f"bench.{ {'markdown': 'md', 'text': 'txt'}.get(fmt, fmt) }"
            path.write_bytes(data)
            row = row_for(fmt, data, measure_in_child(path, args.repeat), map_call)
            rows.append(row)
            vs = row["vs_map_call"]
            print(
                f"{fmt:9} {row['file_mb']:>8.2f} {row['text_mb']:>8.2f} {row['words']:>8,} {row['pages']:>6,} "
                f"{row['sections']:>8,} "
                f"{row['seconds']:>8.3f} {row['pages_per_s']:>8,.0f} {row['file_mb_per_s']:>7.2f} "
                f"{row['text_mb_per_s']:>9.2f} {row['peak_mb']:>8.1f} {f'{vs:.2f}x' if vs is not None else '-':>11}"
            )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "prose": source_note,
                "words": words,
                "pdf_pages": args.pdf_pages,
                "repeat": args.repeat,
                "map_call_s": round(map_call, 2) if map_call else None,
                "map_call": map_call_note,
                "peak_memory": "growth of ru_maxrss over the first read_document, in a fresh process after its imports",
                "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
                "versions": {p: version(p) for p in ("pypdfium2", "trafilatura", "python-docx", "lxml", "reportlab")},
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
