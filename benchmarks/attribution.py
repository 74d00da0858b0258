"""Answers and their citations, measured in the manner of ALCE (Gao et al., 2023).

    python benchmarks/attribution.py [--base-url URL | --scripted] [--tokens 4000] [--label after]
                                     [--facts 8] [--cache FILE] [--out FILE]

Ordinary facts of four kinds (numbers, personal names, place names, dates), two of each, are
planted as a sentence in stretches of about ``--tokens`` tokens of the four novels under
``../shared/corpus/books/``. Each is asked in plain words with the default task family (``qa``),
beside a twin: the same stretch without its fact, asked the same question.

Per kind, it reports:

* accuracy: answers on the fact's stretch that hold its value;
* citation precision: of the citations shown with answers on the facts' stretches, the share whose
  quote holds the planted value;
* citation recall: of the right answers, the share with a citation whose quote holds the value;
* claims on twins: answers given where the text holds none;
* the status counts (``answered``, ``not_found``, ``unsupported``, ``incomplete``; a release
  without statuses counts ``found`` as answered and the rest as not found).

Three readers: the embedded default (no flag), a server (``--base-url``, e.g. ``llmxmr serve
--local``), and ``--scripted``, a capable model played by the scripted client: it answers every
question right from the chunk that holds the fact, but on every other chunk it also claims the
value, citing a real sentence of that chunk that does not hold it. A check of citations must catch
each of those claims.

It uses only the public API (``PipelineConfig``, ``MapReducePipeline``), so it runs against an
older checkout too (``PYTHONPATH=../old``). Prints a table and writes ``--out``
(``benchmarks/results/attribution-<reader>-<label>.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results"
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "books"
STATUSES = ("answered", "not_found", "unsupported", "incomplete")


@dataclass(frozen=True)
class Fact:
    kind: str
    book: str
    sentence: str  # planted as it stands, between two paragraphs of the book
    question: str
    value: str  # what a right answer holds: every word of it, as whole words, case ignored


FACTS = (
    Fact(
        "number",
        "pride_and_prejudice.txt",
        "The lock of the old cellar door at Longbourn opened only to the number 4817.",
        "What number opened the lock of the old cellar door at Longbourn?",
        "4817",
    ),
    Fact(
        "number",
        "moby-dick.txt",
        "The cooper counted exactly 63 casks of whale oil in the forward hold that morning.",
        "How many casks of whale oil did the cooper count in the forward hold?",
        "63",
    ),
    Fact(
        "name",
        "pride_and_prejudice.txt",
        "The new gardener at Longbourn was a quiet young man named Tobias Wrenfield.",
        "What was the name of the new gardener at Longbourn?",
        "Tobias Wrenfield",
    ),
    Fact(
        "name",
        "war_and_peace.txt",
        "The regiment's new bugler was a tall Moravian boy called Anton Kessling.",
        "What was the name of the regiment's new bugler?",
        "Anton Kessling",
    ),
    Fact(
        "place",
        "moby-dick.txt",
        "The ship's spare harpoons had been forged in a smithy at Quillhaven.",
        "Where had the ship's spare harpoons been forged?",
        "Quillhaven",
    ),
    Fact(
        "place",
        "ulysses.txt",
        "The lost umbrella was finally found in a tearoom at Ballymorrow.",
        "Where was the lost umbrella finally found?",
        "Ballymorrow",
    ),
    Fact(
        "date",
        "war_and_peace.txt",
        "The count's great hunt was held on the 9th of October that year.",
        "On what date was the count's great hunt held?",
        "9th October",
    ),
    Fact(
        "date",
        "ulysses.txt",
        "The old bridge over the Tolka was rebuilt in the year 1783.",
        "In what year was the old bridge over the Tolka rebuilt?",
        "1783",
    ),
)
_WORD = re.compile(r"\w+")


def holds(text: str, value: str) -> bool:
    """Whether ``text`` holds every word of ``value`` as a whole word ("9th October" is held by
    "on the 9th of October"), case ignored."""
    words = {w.casefold() for w in _WORD.findall(text)}
    return all(w.casefold() in words for w in _WORD.findall(value))


def stretch(fact: Fact, index: int, tokens: int) -> str:
    """About ``tokens`` tokens of the fact's book, from a place that differs per fact, cut at
    paragraph breaks, with the book's own text never holding the value."""
    counter = TiktokenCounter()
    paragraphs = [p for p in (BOOKS / fact.book).read_text(encoding="utf-8").split("\n\n") if p.strip()]
    start = len(paragraphs) // 5 + index * 97
    taken: list[str] = []
    total = 0
    for paragraph in paragraphs[start:]:
        if total >= tokens:
            break
        taken.append(paragraph.strip())
        total += counter.count_batch([paragraph])[0]
    text = "\n\n".join(taken)
    assert not holds(text, fact.value), f"{fact.book} holds {fact.value!r} already: choose another value"
    return text


def planted(text: str, fact: Fact, index: int) -> str:
    """``text`` with the fact as a paragraph of its own, at a depth that differs per fact."""
    paragraphs = text.split("\n\n")
    at = max(1, int(len(paragraphs) * (0.2 + 0.08 * index)))
    return "\n\n".join([*paragraphs[:at], fact.sentence, *paragraphs[at:]])


# ---- the capable model, scripted ---------------------------------------------------------------


def capable_reader(facts: tuple[Fact, ...]) -> ScriptedClient:
    """A model that reads right, and over-claims: it answers from the chunk that holds the fact,
    and on every other chunk (by the chunk's digest) claims the value too, citing the chunk's first
    long sentence, which is in the text but does not hold the value."""
    by_question = {fact.question: fact for fact in facts}

    def respond(request: ChatRequest) -> ChatReply:
        prompt = request.messages[-1].content
        fact = next(f for q, f in by_question.items() if q in prompt)
        if request.schema_name == "MapOutput":
            return ChatReply(text=json.dumps(_map_reply(prompt, fact)))
        reply = {"rationale": "The partial answers agree.", "answer": fact.value, "confidence": 4.5}
        if request.schema_name == "FinalAnswer":
            return ChatReply(text=json.dumps({**reply, "supporting_chunks": []}))
        return ChatReply(text=json.dumps({**reply, "extracted_information": fact.value, "evidence": []}))

    return ScriptedClient(responder=respond, counter=TiktokenCounter(), window=8192, model="scripted-capable")


def _map_reply(prompt: str, fact: Fact) -> dict[str, Any]:
    chunk = prompt.rsplit("<document_part>", 1)[1].split("</document_part>", 1)[0]
    if fact.sentence in chunk:
        return _claim(fact, fact.sentence, 5.0)
    if hashlib.sha256(chunk.encode()).digest()[0] % 2:
        unrelated = next(
            s for s in re.split(r"(?<=[.!?])\s+", chunk) if len(s.split()) >= 8 and not holds(s, fact.value)
        )
        return _claim(fact, unrelated.strip(), 4.0)
    return {
        "extracted_information": "",
        "evidence": [],
        "rationale": "Nothing here.",
        "answer": None,
        "confidence": 0.0,
    }


def _claim(fact: Fact, quote: str, confidence: float) -> dict[str, Any]:
    return {
        "extracted_information": quote,
        "evidence": [quote],
        "rationale": f"The text says so: {quote}",
        "answer": fact.value,
        "confidence": confidence,
    }


# ---- running and scoring ----------------------------------------------------------------------


def status_of(result: Any) -> str:
    """The result's status, or for a release without statuses, what ``found`` says."""
    status = getattr(result, "status", None)
    if status is not None:
        return str(status)
    return "answered" if result.found else "not_found"


def run_one(config: PipelineConfig, client: ScriptedClient | None, document: str, question: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = MapReducePipeline(config, client=client).run(document, question)
    return {
        "status": status_of(result),
        "answer": result.answer,
        "confidence": result.confidence,
        "citations": [citation.quote for citation in result.citations],
        "calls": len(result.trace.calls),
        "seconds": round(time.perf_counter() - started, 2),
    }


def scored(fact: Fact, on_fact: dict[str, Any], on_twin: dict[str, Any]) -> dict[str, Any]:
    answered = on_fact["status"] == "answered"
    right = answered and holds(on_fact["answer"], fact.value)
    shown = on_fact["citations"] if answered else []
    holding = [quote for quote in shown if holds(quote, fact.value)]
    return {
        "right": right,
        "shown_citations": len(shown),
        "citations_holding_value": len(holding),
        "right_and_cited": right and bool(holding),
        "claim_on_twin": on_twin["status"] == "answered",
        "twin_citations_shown": len(on_twin["citations"]) if on_twin["status"] == "answered" else 0,
    }


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = []
    for kind in (*dict.fromkeys(row["kind"] for row in rows), "all"):
        mine = [row for row in rows if kind in (row["kind"], "all")]
        shown = sum(row["score"]["shown_citations"] for row in mine)
        right = sum(row["score"]["right"] for row in mine)
        statuses = {s: sum(row[side]["status"] == s for row in mine for side in ("fact", "twin")) for s in STATUSES}
        lines.append(
            {
                "kind": kind,
                "facts": len(mine),
                "accuracy": right / len(mine),
                "citation_precision": sum(row["score"]["citations_holding_value"] for row in mine) / shown
                if shown
                else None,
                "citation_recall": sum(row["score"]["right_and_cited"] for row in mine) / right if right else None,
                "right_and_cited": sum(row["score"]["right_and_cited"] for row in mine),
                "claims_on_twins": sum(row["score"]["claim_on_twin"] for row in mine),
                "statuses": statuses,
            }
        )
    return lines


def printed(lines: list[dict[str, Any]]) -> str:
    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    out = [
        "| kind | facts | accuracy | citation precision | citation recall | right and cited | claims on twins "
        "| statuses (fact + twin) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for line in lines:
        statuses = ", ".join(f"{name} {count}" for name, count in line["statuses"].items() if count)
        out.append(
            f"| {line['kind']} | {line['facts']} | {share(line['accuracy'])} | {share(line['citation_precision'])} | "
            f"{share(line['citation_recall'])} | {line['right_and_cited']} | {line['claims_on_twins']} | {statuses} |"
        )
    return "\n".join(out)


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path.cwd()
        ).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    reader = parser.add_mutually_exclusive_group()
    reader.add_argument("--base-url", help="an OpenAI-compatible server (default: the embedded model)")
    reader.add_argument("--scripted", action="store_true", help="the scripted capable model that over-claims")
    parser.add_argument("--tokens", type=int, default=4000, help="tokens per stretch (default 4000)")
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        help="document tokens per chunk "
        "(default: the model's own; 1,000 scripted, so that a stretch is read in several chunks)",
    )
    parser.add_argument("--facts", type=int, default=len(FACTS), help="the first N facts only")
    parser.add_argument("--cache", help="a reply cache (SQLite) to share replies between runs, as llmxmr run --cache")
    parser.add_argument("--label", default="after", help="names the run in the output file (before, after, ...)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not BOOKS.is_dir():
        parser.exit(0, f"skipped: {BOOKS} is absent\n")
    facts = FACTS[: args.facts]
    name = "scripted" if args.scripted else "server" if args.base_url else "embedded"
    settings: dict[str, Any] = {"llm.base_url": args.base_url} if args.base_url else {}
    chunk_tokens = args.chunk_tokens or (1000 if args.scripted else None)
    if chunk_tokens:
        settings["chunking.chunk_tokens"] = chunk_tokens
    if args.cache:
        settings["llm.cache"] = args.cache
    config = PipelineConfig.load(**settings)
    rows = []
    for index, fact in enumerate(facts):
        twin = stretch(fact, index, args.tokens)
        client = capable_reader(facts) if args.scripted else None
        on_fact = run_one(config, client, planted(twin, fact, index), fact.question)
        on_twin = run_one(config, client, twin, fact.question)
        rows.append(
            {
                "kind": fact.kind,
                "value": fact.value,
                "fact": on_fact,
                "twin": on_twin,
                "score": scored(fact, on_fact, on_twin),
            }
        )
        print(
            f"{fact.kind:6} {fact.value!r:20} fact: {on_fact['status']:11} {on_fact['answer'][:60]!r}  "
            f"twin: {on_twin['status']}",
            flush=True,
        )
    lines = table(rows)
    print(printed(lines))
    out = args.out or RESULTS / f"attribution-{name}-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "reader": name, "label": args.label, "commit": commit(), "tokens": args.tokens, "chunk_tokens": chunk_tokens,
        "machine": platform.platform(), "table": lines, "rows": rows,
    }  # fmt: skip
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
