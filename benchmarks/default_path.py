"""The default path: plain ``llmxmr run`` (task family ``qa``) asked for a pass key planted in a novel.

    python benchmarks/default_path.py [--tokens 8000] [--books a.txt,b.txt] [--layouts profile,document-first]
                                      [--base-url URL] [--out FILE]

Every other benchmark of pass keys measures the retrieval preset; a user who types ``llmxmr run
--input book.txt --question "What is the pass key?"`` gets the ``qa`` family and the model's
profile. This plants InfiniteBench's pass-key line (``The pass key is N. Remember it. N is the
pass key.``) at the middle of about ``--tokens`` tokens of each novel under
``../shared/corpus/books/`` and asks exactly that, on the embedded default (or ``--base-url``), with:

* ``profile``: the settings as they stand (the bundled model's profile asks its maps question first);
* ``document-first``: the same with ``llm.map_question_first`` off, the layout capable models use.

Reports, per layout: keys found (status ``answered`` with the key in the answer), found with a
citation that holds the key, the statuses, calls, and wall time. Prints a table and writes
``--out`` (``benchmarks/results/default_path.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results" / "default_path.json"
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "books"
KEYS = ("40718", "58213", "91264", "27350")
LAYOUTS = {"profile": {}, "document-first": {"llm.map_question_first": False}}


def document(book: Path, key: str, tokens: int) -> str:
    """About ``tokens`` tokens from a fifth of the way into ``book``, cut at paragraph breaks, with
    the pass-key line as a paragraph at the middle."""
    counter = TiktokenCounter()
    paragraphs = [p.strip() for p in book.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    taken: list[str] = []
    total = 0
    for paragraph in paragraphs[len(paragraphs) // 5 :]:
        if total >= tokens:
            break
        taken.append(paragraph)
        total += counter.count_batch([paragraph])[0]
    middle = len(taken) // 2
    return "\n\n".join(
        [*taken[:middle], f"The pass key is {key}. Remember it. {key} is the pass key.", *taken[middle:]]
    )


def run(config: PipelineConfig, text: str, key: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = MapReducePipeline(config).run(text, "What is the pass key?")
    status = getattr(result, "status", "answered" if result.found else "not_found")
    answered = status == "answered" and key in result.answer
    return {
        "status": status,
        "answer": result.answer,
        "found_key": answered,
        "cited_key": answered and any(key in citation.quote for citation in result.citations),
        "chunks": len(result.chunks),
        "calls": len(result.trace.calls),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--books", help="the novels to read, by file name (default: all four)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--base-url")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not BOOKS.is_dir():
        parser.exit(0, f"skipped: {BOOKS} is absent\n")
    books = [BOOKS / name for name in args.books.split(",")] if args.books else sorted(BOOKS.glob("*.txt"))
    rows = []
    for layout in args.layouts.split(","):
        settings: dict[str, Any] = {**LAYOUTS[layout], **({"llm.base_url": args.base_url} if args.base_url else {})}
        config = PipelineConfig.load(**settings)
        for book, key in zip(books, KEYS, strict=False):
            row = {
                "layout": layout,
                "book": book.name,
                "key": key,
                **run(config, document(book, key, args.tokens), key),
            }
            rows.append(row)
            print(
                f"{layout:15} {book.name:26} {row['status']:11} {row['answer'][:50]!r} {row['seconds']} s", flush=True
            )
    print("| layout | keys found | found and cited | statuses | calls | wall s |")
    print("|---|---:|---:|---|---:|---:|")
    for layout in dict.fromkeys(row["layout"] for row in rows):
        mine = [row for row in rows if row["layout"] == layout]
        statuses = ", ".join(
            f"{s} {sum(r['status'] == s for r in mine)}" for s in dict.fromkeys(r["status"] for r in mine)
        )
        print(
            f"| {layout} | {sum(r['found_key'] for r in mine)}/{len(mine)} "
            f"| {sum(r['cited_key'] for r in mine)}/{len(mine)} | {statuses} "
            f"| {sum(r['calls'] for r in mine)} | {sum(r['seconds'] for r in mine):.0f} |"
        )
    report = {
        "tokens": args.tokens,
        "server": args.base_url or "embedded",
        "machine": platform.platform(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
