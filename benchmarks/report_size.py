"""Size and render time of the HTML report of long runs (``llmxmr run --report``, ``llmxmr report``).

    python benchmarks/report_size.py [--chunks 1000] [--chunk-words 400] [--pages 500]
                                     [--book-chunk-words 2048] [--questions 3] [--repeat 3] [--no-browser]

Two scripted runs (``ScriptedClient``: no model, no server, one token a word) over generated
documents with pages, as ``read_document`` gives a PDF (``Document.page_starts``), ``--page-words``
(350) words a page:

* **chunks**: ``--chunks`` (1,000) chunks of at most ``--chunk-words`` (400) words, about a page each;
* **book**: a ``--pages`` (500) page book in chunks of at most ``--book-chunk-words`` (2,048) words,
  the bundled model's profile (``configs/default.yaml``), about a hundred chunks.

Each run asks ``--questions`` (3) questions in one reading. The scripted model answers the map call
of about 5% of the chunks with a quote of the chunk (verified evidence), 3% with evidence the chunk
does not hold (not verified), fails for 0.5% (``on_chunk_error: skip``: unread chunks) and says
nothing relevant for the rest, with a sentence of why; collapse and reduce merge what they get.

The results are written as ``llmxmr run --trace`` writes them and read back with
``llmxmr.report.load_runs``, as ``llmxmr report`` does. Columns:

* **text**: whether the page holds the document's text (``--report``, or ``llmxmr report --input``)
  or not (``llmxmr report TRACE`` alone).
* **HTML bytes / MB**: the page as written (UTF-8); MB = 10^6 bytes. **trace MB**: the trace file.
* **render s**: ``render_report`` (the library's render call: views, templating), best of ``--repeat``.
* **load s**: headless Chromium (``tests/browser.py``) opening the file from disk, from navigation to
  the load event (parse, layout, the page's script, which marks the first question's quotes), best
  of ``--repeat`` in one browser; empty without Chromium or with ``--no-browser``.

Prints a markdown table and writes benchmarks/results/report_size.json (machine, parameters, rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reporting import machine, write_report

from llmxmr import MapReducePipeline, PipelineConfig, PipelineResult
from llmxmr.chunking import chunk_text
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.documents import Document
from llmxmr.errors import LLMCallError
from llmxmr.report import load_runs, render_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "report_size.json"
QUESTIONS = [
    "Who paid the rent for the northern estate, and on which day?",
    "Which ledger did Cora repair near the harbour?",
    "What was stored in the granary?",
]
WORDS = (
    "the harbour ridge ford quarry orchard chapel market bridge granary lighthouse meadow tannery ledger "
    "barrel lantern wagon anchor bell cart loom mill kiln forge net oar plough saddle sail Ada Bram Cora "
    "Dov Elin Fenn Greta Hal Ines Jory Kai Lena Milo Nia repaired counted painted sold mended weighed moved "
    "stored inspected carried polished traded near on day of with and"
).split()


class Words:
    """One token a word: exact for these documents, and fast."""

    name = "words"
    exact = True

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


def build_document(pages: int, page_words: int, seed: int) -> Document:
    """``pages`` pages of at least ``page_words`` words, in paragraphs of 3-7 sentences of 8-20
    words, as a PDF's text reads (a page ends at a paragraph's end)."""
    rng = random.Random(seed)
    parts: list[str] = []
    page_starts = []
    offset = 0
    for _ in range(pages):
        page_starts.append(offset)
        on_page = 0
        while on_page < page_words:
            sentences = []
            for _ in range(rng.randint(3, 7)):
                body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
                sentences.append(f"{body[0].upper()}{body[1:]} {rng.randrange(1, 10_000)}.")
            paragraph = " ".join(sentences)
            parts.append(paragraph)
            offset += len(paragraph) + 2
            on_page += len(paragraph.split())
    return Document(text="\n\n".join(parts), name="generated.pdf", format="pdf", page_starts=tuple(page_starts))


def with_chunks(document: Document, chunks: int, chunk_words: int) -> Document:
    """The document cut where its chunk number ``chunks`` would begin: exactly that many chunks."""
    cut = chunk_text(document.text, chunk_words, Words(), min_fill=0.5)
    if len(cut) <= chunks:
        sys.exit(f"the generated document has {len(cut)} chunks, not more than {chunks}")
    end = cut[chunks].start
    text = document.text[:end].rstrip()
    return document.model_copy(
        update={"text": text, "page_starts": tuple(s for s in document.page_starts if s < len(text))}
    )


def _share(text: str) -> float:
    """A number in [0, 1) fixed by the text: which chunks answer, which fail."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def respond(request: ChatRequest) -> ChatReply:
    user = request.messages[-1].content
    prompt = sum(len(m.content.split()) for m in request.messages)
    if request.schema_name == "MapOutput":
        chunk = user.rsplit("<document_part>", 1)[1].split("</document_part>", 1)[0]
        share = _share(chunk + user[-200:])
        sentences = re.findall(r"[^.]+\.", chunk)
        if share < 0.005:
            raise LLMCallError("the server went away")
        if share < 0.08 and sentences:
            quote = sentences[int(share * 1000) % len(sentences)].strip()
            evidence = [quote] if share < 0.05 else ["Nothing of the kind is written here."]
            reply = {
                "extracted_information": f"The passage says: {quote} " * 3,
                "evidence": evidence,
                "rationale": "The quoted sentence names the place and the day the question asks about.",
                "answer": quote[:80],
                "confidence": 4,
            }
        else:
            reply = {
                "extracted_information": "",
                "evidence": [],
                "rationale": "The passage tells of trades and repairs; nothing in it is about the question.",
                "answer": None,
                "confidence": 0,
            }
    elif request.schema_name == "CollapseOutput":
        answers = re.findall(r"Answer: (.+)", user)
        reply = {
            "extracted_information": " ".join(answers)[:600],
            "evidence": [],
            "rationale": "The partial answers agree on the place.",
            "answer": answers[0] if answers else None,
            "confidence": 3,
        }
    else:
        answers = re.findall(r"Answer: (.+)", user)
        reply = {
            "rationale": "Weighed the partial answers.",
            "answer": answers[0] if answers else "not found",
            "confidence": 4,
            "supporting_chunks": [],
        }
    text = json.dumps(reply)
    return ChatReply(text=text, prompt_tokens=prompt, completion_tokens=len(text.split()))


def scripted_run(document: Document, chunk_words: int, questions: list[str]) -> tuple[list[PipelineResult], Any]:
    config = PipelineConfig.load(
        **{"chunking.chunk_tokens": chunk_words, "llm.concurrency": 64, "on_chunk_error": "skip", "llm.max_retries": 0}
    )
    client = ScriptedClient(responder=respond, counter=Words(), window=32768)
    return MapReducePipeline(config, client=client).run_many(document, questions), config


def best_of(repeat: int, call: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """The fewest seconds of ``repeat`` calls, and what the last one returned."""
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = call(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000, help="chunks of the first run")
    parser.add_argument("--chunk-words", type=int, default=400, help="most words a chunk of the first run holds")
    parser.add_argument("--pages", type=int, default=500, help="pages of the book (0: no book run)")
    parser.add_argument("--book-chunk-words", type=int, default=2048)
    parser.add_argument("--page-words", type=int, default=350)
    parser.add_argument("--questions", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium load times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    questions = QUESTIONS[: args.questions]

    sys.path.insert(0, str(ROOT))
    from tests.browser import Browser, find_chromium

    chromium = None if args.no_browser else find_chromium()
    browser = Browser(chromium) if chromium else None
    # Enough words for more than --chunks chunks, cut to exactly that many; a book of --pages pages.
    documents = [
        (
            "chunks",
            with_chunks(
                build_document(args.chunks * args.chunk_words // args.page_words + 1, args.page_words, args.seed),
                args.chunks,
                args.chunk_words,
            ),
            args.chunk_words,
        )
    ]
    if args.pages:
        book = build_document(args.pages, args.page_words, args.seed)
        documents.append(("book", book, args.book_chunk_words))

    print("| document | pages | chunks | questions | text | HTML bytes | HTML MB | render s | trace MB | load s |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="llmxmr-report-size-") as folder:
            for name, document, chunk_words in documents:
                started = time.perf_counter()
                results, config = scripted_run(document, chunk_words, questions)
                run_s = time.perf_counter() - started
                trace = Path(folder) / f"{name}.trace.json"
                traced = [{"id": n, **r.model_dump(mode="json")} for n, r in enumerate(results, 1)]
                trace.write_text(json.dumps(traced, indent=2), encoding="utf-8")
                runs, kind = load_runs(trace)
                for with_text in (True, False):
                    shown = document if with_text else None
                    render_s, page = best_of(
                        args.repeat, render_report, runs, document=shown, config=config, source=kind
                    )
                    html = Path(folder) / f"{name}-{'text' if with_text else 'no-text'}.html"
                    html.write_text(page, encoding="utf-8")
                    load_s = None
                    if browser is not None:
                        load_s, _ = best_of(args.repeat, browser.open, html.as_uri())
                        assert browser.evaluate("document.querySelectorAll('.q-view .chunk').length") == len(
                            results[0].chunks
                        ) * len(questions)
                        assert browser.errors() == [], browser.errors()
                    size = html.stat().st_size
                    row = {
                        "document": name,
                        "pages": len(document.page_starts),
                        "words": len(document.text.split()),
                        "chars": len(document.text),
                        "chunks": len(results[0].chunks),
                        "questions": len(questions),
                        "calls": sum(len(r.trace.calls) for r in results),
                        "failed_calls": sum(len(r.failed_calls) for r in results),
                        "statuses": [r.status for r in results],
                        "text": with_text,
                        "html_bytes": size,
                        "html_mb": round(size / 1e6, 3),
                        "render_s": round(render_s, 4),
                        "trace_bytes": trace.stat().st_size,
                        "load_s": round(load_s, 4) if load_s is not None else None,
                        "run_s": round(run_s, 3),
                    }
                    rows.append(row)
                    load = f"{load_s:.2f}" if load_s is not None else ""
                    print(
                        f"| {name} | {row['pages']:,} | {row['chunks']:,} | {len(questions)} | "
                        f"{'yes' if with_text else 'no'} | {size:,} | {size / 1e6:.2f} | {render_s:.2f} | "
                        f"{row['trace_bytes'] / 1e6:.2f} | {load} |",
                        flush=True,
                    )
    finally:
        if browser is not None:
            browser.close()
    report = {
        "machine": machine(),
        "parameters": {
            "chunks": args.chunks,
            "chunk_words": args.chunk_words,
            "pages": args.pages,
            "book_chunk_words": args.book_chunk_words,
            "page_words": args.page_words,
            "questions": questions,
            "repeat": args.repeat,
            "seed": args.seed,
            "tokenizer": "words (one token a word)",
            "chromium": chromium,
        },
        "rows": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
