"""Prompt tokens: what a run sends for a 128k-token document, against the document itself, and how much
of it a prefix cache can serve.

    python benchmarks/tokens.py [--doc-tokens 128000] [--chunk-tokens 4096] [--window 32768]
                                [--info-rate 0.2] [--reply-tokens 200] [--concurrency 64] [--seed 0]

The document is the first ``--doc-tokens`` tokens (tiktoken cl100k_base) of the books in
``../shared/corpus/books/`` next to the checkout, read in name order (read in place, never copied);
without that folder, generated prose. One ``MapReducePipeline.run`` (``chunking.chunk_tokens: 4096``,
``llm.tokenizer: tiktoken``, window 32768 from the server) against the simulated server
(``benchmarks/simserver.py``, which logs every request it receives).

Counts are tiktoken cl100k_base over the requests the server received, not the server's usage (a
characters/4 estimate, kept in the JSON as ``trace_totals``). A request is counted as a ChatML
template renders it: per message ``<|im_start|>`` + ``role\\ncontent`` + ``<|im_end|>`` + ``\\n``
(the two markers one token each), plus ``<|im_start|>assistant\\n`` to open the reply. Completion
tokens are the reply texts, counted the same way.

* **prompt / document**: all prompt tokens of the run (map, collapse, reduce; no cache) over the
  document's tokens. Target: at most 1.15.
* **shared prefix**: the longest common prefix, in tokens, of all map prompts as rendered above (what
  a radix or slot cache can reuse: system message, instructions and question), times the number of
  map calls, over all map prompt tokens. ``prompt tokens after prefix cache`` subtracts the prefix
  for every map call but the first.

Prints a table and writes benchmarks/results/tokens.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tiktoken
from overhead import sentence
from simserver import start_server

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.tokens import OFFLINE_CL100K

RESULTS = Path(__file__).parent / "results" / "tokens.json"
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "books"
QUESTION = "Which ship does the narrator sail on, and who is her captain?"
STAGES = {"MapOutput": "map", "CollapseOutput": "collapse", "FinalAnswer": "reduce"}
IM_START, IM_END = -1, -2  # ChatML markers: one token each, outside cl100k_base's ids


def books_text(tokens: int) -> tuple[str, list[str]] | None:
    """Enough of the books, in name order, for ``tokens`` tokens (about 4 characters a token, with room)."""
    files = sorted(BOOKS.glob("*.txt")) if BOOKS.is_dir() else []
    if not files:
        return None
    parts, used, characters = [], [], 0
    for path in files:
        if characters >= tokens * 6:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        used.append(path.name)
        characters += len(text)
    return "\n\n".join(parts), used


def generated_text(tokens: int, seed: int) -> str:
    rng = random.Random(seed)
    paragraphs, number, size = [], 0, 0
    while size < tokens * 5:  # ~22 tokens per ~100-character sentence: plenty
        count = rng.randint(3, 8)
        paragraphs.append(" ".join(sentence(rng, number + i) for i in range(count)))
        number += count
        size += len(paragraphs[-1])
    return "\n\n".join(paragraphs)


def rendered(messages: list[dict[str, Any]], encoding: Any) -> list[int]:
    """The request as a ChatML template renders it, in tokens."""
    tokens: list[int] = []
    for message in messages:
        tokens += [IM_START, *encoding.encode_ordinary(f"{message['role']}\n{message['content']}"), IM_END]
        tokens += encoding.encode_ordinary("\n")
    return tokens + [IM_START, *encoding.encode_ordinary("assistant\n")]


def common_prefix(sequences: list[list[int]]) -> int:
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for other in sequences[1:]:
        i = 0
        while i < length and other[i] == first[i]:
            i += 1
        length = i
    return length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc-tokens", type=int, default=128_000)
    parser.add_argument("--chunk-tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=32768, help="max_model_len the server reports")
    parser.add_argument("--info-rate", type=float, default=0.2)
    parser.add_argument("--reply-tokens", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", default="fixed:0.01", help="server latency (does not change the counts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    encoding = tiktoken.get_encoding(OFFLINE_CL100K)  # the offline cl100k_base the pipeline counts with
    found = books_text(args.doc_tokens)
    if found:
        text, sources = found
        source = f"books: {', '.join(sources)} (first {args.doc_tokens:,} tokens)"
    else:
        text, sources = generated_text(args.doc_tokens, args.seed), []
        source = f"generated prose ({BOOKS} not found)"
    ids = encoding.encode_ordinary(text[: args.doc_tokens * 6])
    if len(ids) < args.doc_tokens:
        sys.exit(f"only {len(ids):,} tokens of text available, {args.doc_tokens:,} asked")
    document = encoding.decode(ids[: args.doc_tokens])
    document_tokens = len(encoding.encode_ordinary(document))

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "requests.jsonl"
        with start_server(
            latency=args.latency,
            slots=args.concurrency,
            seed=args.seed,
            info_rate=args.info_rate,
            reply_tokens=args.reply_tokens,
            max_model_len=args.window,
            log=log,
        ) as (base_url, _):
            config = PipelineConfig.load(
                **{
                    "llm.base_url": base_url,
                    "llm.concurrency": args.concurrency,
                    "chunking.chunk_tokens": args.chunk_tokens,
                    "llm.tokenizer": "tiktoken",
                }
            )
            started = time.perf_counter()
            result = MapReducePipeline(config).run(document, QUESTION)
            seconds = time.perf_counter() - started
        requests = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]

    per_stage: dict[str, dict[str, int]] = {
        s: {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0} for s in STAGES.values()
    }
    map_prompts: list[list[int]] = []
    for request in requests:
        stage = STAGES.get(request["schema"], request["schema"])
        prompt = rendered(request["messages"], encoding)
        row = per_stage.setdefault(stage, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        row["calls"] += 1
        row["prompt_tokens"] += len(prompt)
        row["completion_tokens"] += len(encoding.encode_ordinary(request["reply"]))
        if stage == "map":
            map_prompts.append(prompt)
    prompt_total = sum(r["prompt_tokens"] for r in per_stage.values())
    completion_total = sum(r["completion_tokens"] for r in per_stage.values())
    map_total = per_stage["map"]["prompt_tokens"]
    prefix = common_prefix(map_prompts)
    shared = prefix * len(map_prompts)
    after_cache = prompt_total - prefix * max(len(map_prompts) - 1, 0)
    chunk_tokens = [c.tokens for c in result.chunks]

    print(f"document: {source}")
    print(f"{'stage':8}  {'calls':>5}  {'prompt tokens':>13}  {'completion tokens':>17}")
    for stage, row in per_stage.items():
        print(f"{stage:8}  {row['calls']:>5}  {row['prompt_tokens']:>13,}  {row['completion_tokens']:>17,}")
    print(f"{'total':8}  {len(requests):>5}  {prompt_total:>13,}  {completion_total:>17,}")
    print()
    lines = [
        ("document tokens (cl100k)", f"{document_tokens:,}"),
        ("chunks", f"{len(result.chunks)} (tokens per chunk: {min(chunk_tokens):,} to {max(chunk_tokens):,})"),
        ("prompt tokens / document", f"{prompt_total / document_tokens:.3f}  (target <= 1.15)"),
        ("map prompt tokens / document", f"{map_total / document_tokens:.3f}"),
        ("completion tokens / document", f"{completion_total / document_tokens:.3f}"),
        (
            "shared map prefix",
            f"{prefix:,} tokens x {len(map_prompts)} map calls = {shared / map_total:.1%} of map prompt tokens",
        ),
        ("prompt tokens after prefix cache", f"{after_cache:,} ({after_cache / document_tokens:.3f} x document)"),
    ]
    for name, value in lines:
        print(f"{name:34}{value}")

    report = {
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "parameters": {
            "doc_tokens": args.doc_tokens,
            "chunk_tokens": args.chunk_tokens,
            "window": args.window,
            "info_rate": args.info_rate,
            "reply_tokens": args.reply_tokens,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "question": QUESTION,
            "source": source,
            "source_files": sources,
            "counting": "tiktoken cl100k_base over the requests the server received, rendered as ChatML",
        },
        "document_tokens": document_tokens,
        "chunks": len(result.chunks),
        "chunk_tokens": chunk_tokens,
        "stages": per_stage,
        "prompt_tokens": prompt_total,
        "completion_tokens": completion_total,
        "prompt_ratio": round(prompt_total / document_tokens, 4),
        "map_prompt_ratio": round(map_total / document_tokens, 4),
        "completion_ratio": round(completion_total / document_tokens, 4),
        "shared_prefix_tokens": prefix,
        "shared_prefix_fraction_of_map_prompts": round(shared / map_total, 4) if map_total else 0.0,
        "prompt_tokens_after_prefix_cache": after_cache,
        "trace_totals": result.trace.totals.model_dump(),
        "found": result.found,
        "seconds": round(seconds, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
