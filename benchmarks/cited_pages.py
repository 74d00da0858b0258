"""Cited by page and by chapter: a pass key on page 2 of a PDF, and in one chapter of an EPUB, read
by plain ``llmxmr run`` (task family ``qa``) on the embedded default.

    python benchmarks/cited_pages.py [--base-url URL] [--out FILE]

The haystack is five sentences of harbour prose, repeated; the key's line (InfiniteBench's: ``The
pass key is N. Remember it. N is the pass key.``) sits in the middle of page 2 of 3, and of the
chapter "The Second Watch" of 3. A citation is right when its quote holds the key and it names
page 2 (PDF) or that chapter (EPUB); a citation of the haystack, whatever page it names, is wrong.
Needs reportlab for the PDF (the ``dev`` extra). Reports, per document: the status, the answer,
each citation's location and whether it holds the key, calls and wall time. Prints a table and
writes ``--out`` (``benchmarks/results/cited_pages.json``).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from reportlab.pdfgen import canvas

from llmxmr import MapReducePipeline, PipelineConfig, read_document

RESULTS = Path(__file__).parent / "results" / "cited_pages.json"
KEY = "58213"
KEY_LINE = f"The pass key is {KEY}. Remember it. {KEY} is the pass key."
HARBOUR = [
    "The harbour was quiet in the early morning, and the fishing boats rocked gently at their moorings.",
    "Gulls circled over the grey water while the harbourmaster walked slowly along the stone quay.",
    "A cart rattled down the cobbled lane towards the market, loaded with baskets of fresh bread.",
    "The lighthouse keeper climbed the spiral stair to trim the great lamp before the evening came.",
    "Children ran along the sea wall, calling to one another above the sound of the waves.",
]
CHAPTERS = ("The First Watch", "The Second Watch", "The Third Watch")


def page(number: int, lines: int = 60) -> list[str]:
    return [HARBOUR[(i + number) % len(HARBOUR)] for i in range(lines)]


def pages() -> list[list[str]]:
    """Three pages of prose; the key's line in the middle of the second."""
    middle = page(1)
    return [page(0), [*middle[:30], KEY_LINE, *middle[30:]], page(2)]


def pdf(path: Path) -> None:
    """One text line per line, one page per page, as a PDF written by a word processor."""
    pdf = canvas.Canvas(str(path))
    for lines in pages():
        for number, line in enumerate(lines):
            pdf.drawString(36, 800 - 12 * number, line)
        pdf.showPage()
    pdf.save()


XHTML = (
    '<?xml version="1.0" encoding="utf-8"?><!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml">'
    "<head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"
)
CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
    "</container>"
)
OPF = (
    '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
    'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">harbour'
    "</dc:identifier><dc:title>Harbour</dc:title><dc:language>en</dc:language></metadata>"
    "<manifest>{items}</manifest><spine>{itemrefs}</spine></package>"
)


def epub(path: Path) -> None:
    """Three chapters, one per page of ``pages``, each a paragraph per line."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/epub+zip", zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", CONTAINER)
        items = "".join(
            f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(len(CHAPTERS))
        )
        itemrefs = "".join(f'<itemref idref="c{i}"/>' for i in range(len(CHAPTERS)))
        archive.writestr("OEBPS/content.opf", OPF.format(items=items, itemrefs=itemrefs))
        for i, (title, lines) in enumerate(zip(CHAPTERS, pages(), strict=True)):
            body = "".join(f"<p>{line}</p>" for line in lines)
            archive.writestr(f"OEBPS/c{i}.xhtml", XHTML.format(title=title, body=body))
    path.write_bytes(buffer.getvalue())


def read(path: Path, config: PipelineConfig, right_place: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = MapReducePipeline(config).run(read_document(str(path)), "What is the pass key?")
    wall = time.perf_counter() - started
    citations = [
        {"location": c.location, "holds_key": KEY in c.quote, "quote": c.quote[:120]} for c in result.citations
    ]
    right = [c for c in citations if c["holds_key"] and right_place in (c["location"] or "")]
    return {
        "document": path.suffix.lstrip("."),
        "status": result.status,
        "answer": result.answer[:80],
        "found": result.status == "answered" and KEY in result.answer,
        "cited_right": bool(right) and len(right) == len(citations),
        "citations": citations,
        "calls": result.trace.totals.calls,
        "wall_s": round(wall, 1),
    }


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    config = PipelineConfig.load(**({"llm.base_url": args.base_url} if args.base_url else {}))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, write, place in (("report.pdf", pdf, "p. 2"), ("harbour.epub", epub, "The Second Watch")):
            path = Path(folder) / name
            write(path)
            rows.append(read(path, config, place))
            print(json.dumps(rows[-1]), flush=True)
    print("| document | status | answer | cited right | citations | calls | wall s |")
    print("|---|---|---|---|---|--:|--:|")
    for row in rows:
        places = "; ".join(f"{c['location']} ({'holds' if c['holds_key'] else 'lacks'} key)" for c in row["citations"])
        print(
            f"| {row['document']} | {row['status']} | {row['answer']} | {'yes' if row['cited_right'] else 'no'} "
            f"| {places or 'none'} | {row['calls']} | {row['wall_s']} |"
        )
    report = {"commit": commit(), "machine": platform.platform(), "server": args.base_url or "embedded", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
