"""Speed on a small local server: where a reading's time goes on a one-slot llama.cpp server.

    python benchmarks/local_speed.py --base-url http://127.0.0.1:PORT/v1 [--sets passkey,novels]
                                     [--n 4] [--length 16k] [--novel-tokens 14000]
                                     [--set llm.map_reply=nothing-first ...] [--label L] [--out FILE]
                                     [--traces DIR]

Start the server first (``llmxmr serve --local``: llama-cpp-python's server on the bundled model,
one request at a time). Two sets of four documents, each read through ``MapReducePipeline`` with a
client that notes when every request was sent and answered:

* ``passkey``: InfiniteBench's pass-key construction (``llmxmr bench generate``'s builder: one block
  of lines repeated, the key's line inside), ``--length`` tokens, the ``passkey`` task's preset and
  question, as ``llmxmr bench infinitebench`` runs them (sharing map calls: a chunk equal to one
  read before, in this document or an earlier one, is not read again);
* ``novels``: the pass-key line planted in ``--novel-tokens`` tokens of each novel under
  ``../shared/corpus/books/``, asked "What is the pass key?" with the defaults of ``llmxmr run``
  (``qa``), so that no two chunks are alike.

Per document and per set: keys found (status ``answered``, the key in the answer), wall time, prompt
tokens sent and computed (less what the server's prefix cache held, where it says so), tokens
decoded, calls, requests, the server's busy share (the time some request was in flight, over the
wall time: a one-slot server is idle only when none is), and the prefill floor: the document's
tokens in the model's own tokenizer over the server's prefill rate, measured at the start with a
one-token reply to a fresh prompt. No reading can take less than its floor on this server; wall
over floor is what is left to remove. Prints a table and writes ``--out``
(``benchmarks/results/local_speed-<label>.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from default_path import BOOKS, KEYS, document

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.bench.infinitebench.generate import generate, parse_length
from llmxmr.bench.infinitebench.tasks import Example, question_for, task_config
from llmxmr.clients.base import ChatReply, ChatRequest, LLMClient
from llmxmr.clients.openai_compat import OpenAICompatibleClient
from llmxmr.prompts import ChatMessage
from llmxmr.reuse import SharedCalls
from llmxmr.schemas import MapOutput

RESULTS = Path(__file__).parent / "results"
CALIBRATION_TOKENS = 1500


class TimedClient:
    """The server's client, noting the interval of every request it sends."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner
        self.intervals: list[tuple[float, float]] = []

    async def chat(self, request: ChatRequest, *args: Any, **kwargs: Any) -> ChatReply:
        sent = time.perf_counter()
        try:
            return await self.inner.chat(request, *args, **kwargs)
        finally:
            self.intervals.append((sent, time.perf_counter()))

    def __getattr__(self, name: str) -> Any:  # everything else, as the server's client does it
        return getattr(self.inner, name)


def busy_seconds(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """How long, between ``start`` and ``end``, at least one request was in flight."""
    busy, reached = 0.0, start
    for sent, answered in sorted(intervals):
        sent, answered = max(sent, reached), min(answered, end)
        if answered > sent:
            busy += answered - sent
            reached = answered
    return busy


async def prefill_rate(client: LLMClient) -> float:
    """Prompt tokens a second: a one-token reply to words no earlier prompt began with."""
    words = random.Random(time.time_ns()).choices("amber birch cedar delta ember fjord grove heron".split(), k=2000)
    counter = await client.token_counter()
    text = " ".join(words)
    if counter is not None:
        while counter.count_batch([text])[0] > CALIBRATION_TOKENS:
            text = text[: int(len(text) * 0.9)]
    request = ChatRequest(messages=[ChatMessage(role="user", content=text)], max_tokens=1)
    started = time.perf_counter()
    reply = await client.chat(request)
    return reply.prompt_tokens / (time.perf_counter() - started)


Reading = tuple[str, str, str, str]  # name, text, question, key


def passkey_documents(n: int, length: str) -> list[Reading]:
    examples = [Example.model_validate(raw) for raw in generate("passkey", parse_length(length), n, seed=0)]
    return [
        (f"passkey-{i}", example.context, question_for("passkey", example), str(example.answer[0]))
        for i, example in enumerate(examples)
    ]


def novel_documents(n: int, tokens: int) -> list[Reading]:
    books = sorted(BOOKS.glob("*.txt"))[:n]
    return [
        (book.stem, document(book, key, tokens), "What is the pass key?", key)
        for book, key in zip(books, KEYS, strict=False)
    ]


async def read_one(
    base_url: str,
    name: str,
    text: str,
    question: str,
    config: PipelineConfig,
    key: str,
    rate: float,
    shared: SharedCalls[MapOutput],
    traces: Path | None = None,
) -> dict[str, Any]:
    client = TimedClient(OpenAICompatibleClient(base_url=base_url))
    try:
        counter = await client.token_counter()
        document_tokens = counter.count_batch([text])[0] if counter is not None else None
        started = time.perf_counter()
        pipeline = MapReducePipeline(config, client=client, progress=False, shared_calls=shared)
        result = await pipeline.arun(text, question)
        ended = time.perf_counter()
    finally:
        await client.aclose()
    if traces is not None:  # the whole result, every call's reply and record included
        traces.mkdir(parents=True, exist_ok=True)
        (traces / f"{name}.json").write_text(result.model_dump_json(indent=1))
    totals = result.trace.totals
    wall = ended - started
    floor = document_tokens / rate if document_tokens else None
    return {
        "document": name,
        "found": result.status == "answered" and key in result.answer,
        "status": result.status,
        "answer": result.answer[:80],
        "chunks": len(result.chunks),
        "wall_s": round(wall, 1),
        "document_tokens": document_tokens,
        "prompt_tokens": totals.prompt_tokens,
        "computed_tokens": totals.computed_tokens,
        "decoded_tokens": totals.completion_tokens,
        "calls": totals.calls,
        "requests": totals.requests,
        "busy_share": round(busy_seconds(client.intervals, started, ended) / wall, 3),
        "floor_s": round(floor, 1) if floor else None,
        "wall_over_floor": round(wall / floor, 2) if floor else None,
    }


def summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    wall = sum(r["wall_s"] for r in rows)
    floor = sum(r["floor_s"] or 0 for r in rows)
    return {
        "found": f"{sum(r['found'] for r in rows)}/{len(rows)}",
        "wall_s": round(wall, 1),
        "computed_tokens": sum(r["computed_tokens"] for r in rows),
        "decoded_tokens": sum(r["decoded_tokens"] for r in rows),
        "calls": sum(r["calls"] for r in rows),
        "busy_share": round(sum(r["busy_share"] * r["wall_s"] for r in rows) / wall, 3) if wall else None,
        "floor_s": round(floor, 1),
        "wall_over_floor": round(wall / floor, 2) if floor else None,
    }


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(item.split("=", 1) for item in args.set)
    calibration = OpenAICompatibleClient(base_url=args.base_url)
    try:
        rate = await prefill_rate(calibration)
    finally:
        await calibration.aclose()
    print(f"prefill: {rate:.0f} tokens/s", flush=True)
    sets = {
        "passkey": lambda: passkey_documents(args.n, args.length),
        "novels": lambda: novel_documents(args.n, args.novel_tokens),
    }
    report: dict[str, Any] = {
        "label": args.label, "commit": commit(), "server": args.base_url, "prefill_tokens_per_s": round(rate, 1),
        "settings": overrides, "machine": platform.platform(), "sets": {},
    }  # fmt: skip
    for name in args.sets.split(","):
        if name == "novels" and not BOOKS.is_dir():
            print(f"skipped novels: {BOOKS} is absent")
            continue
        rows = []
        shared = SharedCalls[MapOutput]()  # the set's documents share map calls, as a batch's do
        # The pass keys with the passkey task's preset (as llmxmr bench infinitebench), the novels
        # with llmxmr run's defaults.
        preset = task_config("passkey").pipeline if name == "passkey" else None
        for doc, text, question, key in sets[name]():
            config = PipelineConfig.load(preset=preset, **{"llm.base_url": args.base_url, **overrides})
            row = await read_one(args.base_url, doc, text, question, config, key, rate, shared, args.traces)
            rows.append(row)
            print(json.dumps(row), flush=True)
        report["sets"][name] = {"rows": rows, "total": summed(rows)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="a one-slot server, e.g. llmxmr serve --local's")
    parser.add_argument("--sets", default="passkey,novels")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--length", default="16k")
    parser.add_argument("--novel-tokens", type=int, default=14000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting, as --set of run")
    parser.add_argument("--label", default="now")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--traces", type=Path, help="a folder for each document's result, with its trace")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print("| set | found | wall s | floor s | wall/floor | computed tokens | decoded tokens | calls | busy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, part in report["sets"].items():
        t = part["total"]
        print(
            f"| {name} | {t['found']} | {t['wall_s']:.0f} | {t['floor_s']:.0f} | {t['wall_over_floor']} "
            f"| {t['computed_tokens']} | {t['decoded_tokens']} | {t['calls']} | {t['busy_share']:.0%} |"
        )
    out = args.out or RESULTS / f"local_speed-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
