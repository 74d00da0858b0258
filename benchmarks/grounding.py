"""Grounding on and off: recall where the answer is, false answers where it is not.

    python benchmarks/grounding.py [--length 16k] [--n 4] [--tasks passkey,kv_retrieval,fact]
                                   [--modes off,cap] [--chunk-tokens N] [--base-url URL]

Builds documents offline: ``n`` with the needle at depths spread from start to end, and the same
``n`` haystacks with the needle taken out.

* ``passkey`` and ``kv_retrieval``: ``llmxmr bench generate``'s builders, with the InfiniteBench
  task's settings (retrieval prompts).
* ``fact``: an ordinary fact planted as a paragraph of *Pride and Prejudice* (from ``--books``,
  the shared corpus), asked as an open question with the default ``qa`` prompts: the case where a
  model paraphrases its evidence instead of copying it.

Each document is run through ``MapReducePipeline`` once per grounding mode, on the embedded
default model or on the server given by ``--base-url``.

* recall: documents with the needle whose answer scores 1 (InfiniteBench's official scorer; for
  ``fact``, the answer contains the planted value).
* false answers: documents without the needle where the run still answered (``found`` true):
  every such answer is invented. The rate over those documents is the hallucination rate.

The modes read the same model replies: the first mode's calls go to the model, and a reply cache
(a temporary SQLite file, the ``--cache`` of ``llmxmr run``) answers the same requests in the
later modes, so their differences are the grounding policy's alone. Calls and tokens are counted
per mode as made; a later mode's wall time is short where the cache answered, so the table shows
its cache hits. Prints a table and writes ``--out`` (``benchmarks/results/grounding.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.bench.infinitebench.generate import generate, parse_length, without_answer
from llmxmr.bench.infinitebench.scorers import score_example
from llmxmr.bench.infinitebench.tasks import Example, question_for, task_config
from llmxmr.clients import make_client
from llmxmr.pipeline import PipelineResult
from llmxmr.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results" / "grounding.json"
TASKS = ("passkey", "kv_retrieval")
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "books"
FACT_BOOK = "pride_and_prejudice.txt"
# (the planted paragraph, the question, the value a right answer contains): ordinary facts in the
# book's own world, whose values the book never writes.
FACTS = (
    (
        "Mrs. Hill kept the key of the wine cellar in a blue tin marked with the number 4071.",
        "What number was marked on the tin in which Mrs. Hill kept the key of the wine cellar?",
        "4071",
    ),
    (
        "The carriage Mr. Bingley hired for the winter was painted green and bore the number 218 on its door.",
        "What number did the carriage Mr. Bingley hired for the winter bear on its door?",
        "218",
    ),
    (
        "Colonel Forster's regiment kept its spare muskets in a storehouse on Tanner Lane in Meryton.",
        "On which lane did Colonel Forster's regiment keep its spare muskets?",
        "Tanner Lane",
    ),
    (
        "Mr. Philips paid his clerk, a quiet young man named Abel Crouch, twelve shillings a week.",
        "What was the name of Mr. Philips's clerk?",
        "Abel Crouch",
    ),
)


@dataclass(frozen=True)
class Case:
    """One document of a task: its text, the question, and the value a right answer holds (None
    where the needle was taken out)."""

    id: str
    context: str
    question: str
    expected: Any | None


def documents(task: str, length: int, n: int, seed: int, books: Path) -> list[Case]:
    """``n`` documents with their needle, then the same ``n`` without it."""
    if task == "fact":
        return _fact_documents(length, n, books)
    examples = [Example.model_validate(e) for e in generate(task, length, n, seed)]
    return [Case(str(e.id), e.context, question_for(task, e), e.answer) for e in examples] + [
        Case(str(e.id), without_answer(task, e.model_dump())["context"], question_for(task, e), None) for e in examples
    ]


def _fact_documents(length: int, n: int, books: Path) -> list[Case]:
    """Fact ``i`` (cycling through FACTS) planted at depth i/(n-1) of ``length`` tokens of the book,
    each document its own stretch of it."""
    paragraphs = [p.strip() for p in (books / FACT_BOOK).read_text(encoding="utf-8").split("\n\n") if p.strip()]
    counts = TiktokenCounter().count_batch(paragraphs)
    present, absent = [], []
    start = 0
    for i in range(n):
        stretch, total = [], 0
        while total < length and start < len(paragraphs):
            stretch.append(paragraphs[start])
            total += counts[start] + 1
            start += 1
        if total < length:
            raise SystemExit(f"{FACT_BOOK} is too short for {n} documents of {length} tokens")
        fact, question, value = FACTS[i % len(FACTS)]
        depth = round(i / max(n - 1, 1) * len(stretch))
        planted = [*stretch[:depth], fact, *stretch[depth:]]
        present.append(Case(str(i), "\n\n".join(planted), question, value))
        absent.append(Case(str(i), "\n\n".join(stretch), question, None))
    return present + absent


def _score(task: str, answer: str, expected: Any) -> float:
    if task == "fact":
        return float(str(expected).casefold() in answer.casefold())
    return score_example(task, answer, expected)


def _preset(task: str) -> dict[str, Any]:
    return {"task_type": "qa"} if task == "fact" else task_config(task).pipeline


async def run_mode(task: str, mode: str, docs: list[Case], args: argparse.Namespace, cache: str) -> dict[str, Any]:
    overrides = {
        "grounding.mode": mode,
        "llm.cache": cache,
        "llm.base_url": args.base_url,
        "llm.model": args.model,
        "chunking.chunk_tokens": args.chunk_tokens,
    }
    config = PipelineConfig.load(preset=_preset(task), **overrides)
    client = make_client(config)
    runs: list[dict[str, Any]] = []
    try:
        for case in docs:
            result = await MapReducePipeline(config, client=client).arun(case.context, case.question)
            runs.append(_run_row(task, case, result))
            needle = case.expected is not None
            print(
                f"  {task} {mode} #{case.id} needle={needle}: {result.answer[:40]!r} found={result.found}", flush=True
            )
    finally:
        await client.aclose()
    present = [r for r in runs if r["needle"]]
    absent = [r for r in runs if not r["needle"]]
    return {
        "task": task,
        "grounding": mode,
        "present": len(present),
        "recall": round(sum(r["score"] for r in present) / len(present), 3),
        "absent": len(absent),
        "false_answers": sum(r["found"] for r in absent),
        "hallucination_rate": round(sum(r["found"] for r in absent) / len(absent), 3),
        "calls": sum(r["calls"] for r in runs),
        "cache_hits": sum(r["cache_hits"] for r in runs),
        "tokens": sum(r["tokens"] for r in runs),
        "wall_s": round(sum(r["wall_s"] for r in runs), 1),
        "runs": runs,
    }


def _run_row(task: str, case: Case, result: PipelineResult) -> dict[str, Any]:
    totals = result.trace.totals
    return {
        "id": case.id,
        "needle": case.expected is not None,
        "answer": result.answer,
        "found": result.found,
        "score": _score(task, result.answer, case.expected) if case.expected is not None else None,
        "citations": len(result.citations),
        "calls": totals.calls,
        "cache_hits": totals.cache_hits,
        "tokens": totals.prompt_tokens + totals.completion_tokens,
        "wall_s": round(totals.wall_time_s, 2),
    }


COLUMNS = (
    "task",
    "grounding",
    "present",
    "recall",
    "absent",
    "false_answers",
    "hallucination_rate",
    "calls",
    "cache_hits",
    "tokens",
    "wall_s",
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [" | ".join(COLUMNS), " | ".join("---" for _ in COLUMNS)]
    lines += [" | ".join(str(row[c]) for c in COLUMNS) for row in rows]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    length = parse_length(args.length)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(args.cache or Path(scratch) / "replies.sqlite")
        for task in args.tasks.split(","):
            docs = documents(task, length, args.n, args.seed, args.books)
            for mode in modes:
                rows.append(await run_mode(task, mode, docs, args, cache))
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {
        "length": length,
        "n": args.n,
        "seed": args.seed,
        "chunk_tokens": args.chunk_tokens,
        "server": args.base_url or "embedded",
    }
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"machine": machine, "setup": setup, "rows": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", default="16k", help="Document length in cl100k tokens.")
    parser.add_argument("--n", type=int, default=4, help="Documents with the needle per task (as many without).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(TASKS), help="Of passkey, kv_retrieval and fact.")
    parser.add_argument("--books", type=Path, default=BOOKS, help=f"Folder holding {FACT_BOOK}, for the fact task.")
    parser.add_argument("--chunk-tokens", type=int, help="Tokens per chunk (default: the task's and model's).")
    parser.add_argument("--modes", default="off,cap", help="Grounding modes, in order; the first calls the model.")
    parser.add_argument(
        "--cache",
        type=Path,
        help="Reply cache to keep (default: a temporary one): another checkout reads the same replies.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where the JSON goes.")
    parser.add_argument("--base-url", help="An OpenAI-compatible server (default: the embedded model).")
    parser.add_argument("--model", help="Model name on the server.")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
