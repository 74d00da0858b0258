"""Scheduling overhead: how close a run comes to the time its own calls need, and the CPU it spends per call.

    python benchmarks/overhead.py [--sizes 10,100,1000,10000] [--latency fixed:0.2 --latency lognormal:0.2,0.5]
                                  [--schedulers streaming,barrier] [--concurrency 64] [--slots N]
                                  [--chunk-tokens 128] [--info-rate 0.2] [--reply-tokens 200]
                                  [--max-model-len 32768] [--seed 0]

Each row is one ``MapReducePipeline.run`` (the library API, a fresh client per run as a user gets it)
against the simulated server (``benchmarks/simserver.py``) in a separate process, so the server's CPU
is not counted. The document is generated: distinct sentences in paragraphs of about 80% of the chunk
budget, so that it splits into exactly the requested number of chunks (checked before the run, and
``len(result.chunks)`` after). Settings: ``llm.tokenizer: tiktoken``, ``chunking.chunk_tokens``,
``llm.concurrency``, ``scheduler``; everything else is ``configs/default.yaml`` (window: the server's
``max_model_len``, 32768). The server answers ``--info-rate`` of the map prompts with information
(about ``--reply-tokens`` tokens), the rest with null, so long documents need collapse rounds.

Columns:

* **wall s**: seconds around ``run()`` (client set-up, chunking, every call, close).
* **ideal s**: the makespan of this run's own call graph with zero overhead, each call taking exactly
  the latency the server applied to it (the server reports it in the reply, and the trace keeps the
  reply). The graph comes from ``result.trace.calls``: the first map (chunk 0) depends on nothing,
  every other map on the first (it runs alone to warm the prefix cache); a collapse call depends on
  the calls that produced its members (the map calls of its chunks in round 1, the earlier collapse
  calls covering them later) and on every map of the chunks its span covers (a group's members are
  known only once the chunks between them are known to hold nothing); the reduce depends on every
  other call (the set of final partials is known only when every map has answered). The calls are
  list-scheduled on ``min(concurrency, slots)`` slots, reduce before collapse before map, then in
  document order. Constraints of the pipeline's own algorithm that a different schedule could avoid
  (the streaming scheduler consumes partials in document order; a collapse round starts once it is
  certain) are not in the graph, so they count against efficiency.
* **efficiency**: ideal / wall (1.0: no overhead at all).
* **CPU ms/call**: ``time.process_time()`` of this (the benchmark's) process over the run, divided by
  the calls in the trace. It includes chunking, which is shown on its own as **chunk ms/call**
  (``chunk_text`` on the same document and budget, timed separately before the run).

Before the rows of each server, one untimed 10-chunk run warms imports and caches. Prints a table and
writes benchmarks/results/overhead.json (machine, parameters, rows).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import sys
import time
from pathlib import Path
from typing import Any

from reporting import machine, write_report
from simserver import latency_of, server_stats, start_server

from llmxmr import MapReducePipeline, PipelineConfig, PipelineResult
from llmxmr.chunking import chunk_text
from llmxmr.tokens import TiktokenCounter
from llmxmr.trace import CallRecord

RESULTS = Path(__file__).parent / "results" / "overhead.json"
QUESTION = "Who paid the rent for the northern estate, and on which day?"
PRIORITY = {"reduce": 0, "collapse": 1, "map": 2}

# fmt: off
_NAMES = [
    "Ada", "Bram", "Cora", "Dov", "Elin", "Fenn", "Greta", "Hal", "Ines", "Jory", "Kai", "Lena",
    "Milo", "Nia", "Oren", "Pia", "Quin", "Rhea", "Sol", "Tova",
]
_THINGS = [
    "ledger", "barrel", "lantern", "wagon", "anchor", "bell", "cart", "loom", "mill", "kiln", "forge",
    "net", "oar", "plough", "saddle", "sail",
]
_PLACES = [
    "harbour", "ridge", "ford", "quarry", "orchard", "chapel", "market", "bridge", "granary",
    "lighthouse", "meadow", "tannery",
]
_VERBS = [
    "repaired", "counted", "painted", "sold", "mended", "weighed", "moved", "stored", "inspected",
    "carried", "polished", "traded",
]
# fmt: on


def sentence(rng: random.Random, number: int) -> str:
    return (
        f"In entry {number} {rng.choice(_NAMES)} {rng.choice(_VERBS)} the {rng.choice(_THINGS)} "
        f"near the {rng.choice(_PLACES)} on day {rng.randrange(1, 10_000)}."
    )


def build_document(chunks: int, chunk_tokens: int, counter: TiktokenCounter, seed: int = 0) -> str:
    """Paragraphs of distinct sentences, each about 80% of ``chunk_tokens``: one paragraph fits a
    chunk, two do not, and a paragraph break is the best boundary, so each chunk is one paragraph."""
    rng = random.Random(seed)
    sample = [sentence(rng, i) for i in range(200)]
    per_sentence = sum(counter.count_batch(sample)) / len(sample) + 1  # +1: the space between sentences
    per_paragraph = max(1, round(0.8 * chunk_tokens / per_sentence))
    number = 0
    paragraphs = []
    for _ in range(chunks):
        paragraphs.append(" ".join(sentence(rng, number + i) for i in range(per_paragraph)))
        number += per_paragraph
    return "\n\n".join(paragraphs) + "\n"


def ideal_makespan(calls: list[CallRecord], latencies: list[float], slots: int) -> float:
    """List-scheduled makespan of the run's call graph on ``slots`` slots (see the module docstring)."""
    n = len(calls)
    deps: list[set[int]] = [set() for _ in range(n)]
    map_of = {c.chunk_indices[0]: i for i, c in enumerate(calls) if c.stage == "map"}
    first_map = map_of.get(min(map_of)) if map_of else None
    producers = [
        i
        for i, c in enumerate(calls)
        if c.stage == "collapse" or (c.stage == "map" and c.output is not None and c.output.get("answer") is not None)
    ]
    for i, call in enumerate(calls):
        if call.stage == "map":
            if first_map is not None and i != first_map:
                deps[i].add(first_map)
        elif call.stage == "collapse":
            span = set(call.chunk_indices)
            inside = sorted(
                (j for j in producers if j != i and set(calls[j].chunk_indices) <= span),
                key=lambda j: -len(calls[j].chunk_indices),
            )
            covered: set[int] = set()
            for j in inside:  # the largest earlier results that fit: this group's members
                if not covered & set(calls[j].chunk_indices):
                    deps[i].add(j)
                    covered |= set(calls[j].chunk_indices)
            first, last = min(span), max(span)
            deps[i] |= {map_of[k] for k in range(first, last + 1) if k in map_of}
        else:  # reduce (or any other final call): after everything else
            deps[i] = set(range(n)) - {i}
    children: list[list[int]] = [[] for _ in range(n)]
    waiting = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            children[j].append(i)

    def key(i: int) -> tuple[int, int, int]:
        return (PRIORITY.get(calls[i].stage, 1), min(calls[i].chunk_indices, default=0), i)

    ready = [key(i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    done = 0
    while done < n:
        while ready and len(running) < slots:
            i = heapq.heappop(ready)[2]
            heapq.heappush(running, (now + latencies[i], i))
        now, i = heapq.heappop(running)
        done += 1
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, key(child))
    return now


def run_once(
    base_url: str, document: str, scheduler: str, args: argparse.Namespace
) -> tuple[PipelineResult, float, float]:
    config = PipelineConfig.load(
        **{
            "llm.base_url": base_url,
            "llm.concurrency": args.concurrency,
            "chunking.chunk_tokens": args.chunk_tokens,
            "llm.tokenizer": "tiktoken",
            "scheduler": scheduler,
        }
    )
    pipeline = MapReducePipeline(config)
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = pipeline.run(document, QUESTION)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000", help="chunks per document, comma-separated")
    parser.add_argument(
        "--latency", action="append", help="server latency model, repeatable (default: fixed:0.2 and lognormal:0.2,0.5)"
    )
    parser.add_argument("--schedulers", default="streaming,barrier")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slots", type=int, default=None, help="server slots (default: --concurrency)")
    parser.add_argument("--chunk-tokens", type=int, default=128)
    parser.add_argument("--info-rate", type=float, default=0.2)
    parser.add_argument("--reply-tokens", type=int, default=200)
    parser.add_argument("--max-model-len", type=int, default=32768, help="the window the server reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.slots = args.slots or args.concurrency
    latencies = args.latency or ["fixed:0.2", "lognormal:0.2,0.5"]
    sizes = [int(s) for s in args.sizes.split(",")]
    schedulers = args.schedulers.split(",")
    slots = min(args.concurrency, args.slots)
    counter = TiktokenCounter()

    documents: dict[int, tuple[str, float]] = {}
    for size in sizes:
        document = build_document(size, args.chunk_tokens, counter, args.seed)
        cpu = time.process_time()
        chunks = chunk_text(document, args.chunk_tokens, counter)
        chunking_cpu = time.process_time() - cpu
        if len(chunks) != size:
            sys.exit(f"the generated document splits into {len(chunks)} chunks, not {size}")
        documents[size] = (document, chunking_cpu)

    header = (
        f"{'chunks':>6}  {'scheduler':9}  {'latency':18}  {'calls':>6}  {'wall s':>7}  {'ideal s':>7}  "
        f"{'efficiency':>10}  {'CPU ms/call':>11}  {'chunk ms/call':>13}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for latency in latencies:
        with start_server(
            latency=latency,
            slots=args.slots,
            seed=args.seed,
            info_rate=args.info_rate,
            reply_tokens=args.reply_tokens,
            max_model_len=args.max_model_len,
        ) as (base_url, _):
            run_once(base_url, build_document(10, args.chunk_tokens, counter, args.seed + 1), schedulers[0], args)
            for size in sizes:
                document, chunking_cpu = documents[size]
                for scheduler in schedulers:
                    before = server_stats(base_url, reset=True)
                    result, wall, cpu = run_once(base_url, document, scheduler, args)
                    after = server_stats(base_url)
                    if len(result.chunks) != size:
                        sys.exit(f"the run made {len(result.chunks)} chunks, not {size}")
                    calls = result.trace.calls
                    applied = [latency_of(c.output) for c in calls]
                    missing = sum(1 for a in applied if a is None)
                    durations = [a if a is not None else c.latency_s for a, c in zip(applied, calls, strict=True)]
                    ideal = ideal_makespan(calls, durations, slots)
                    stages = {s: sum(1 for c in calls if c.stage == s) for s in ("map", "collapse", "reduce")}
                    row = {
                        "chunks": size,
                        "scheduler": scheduler,
                        "latency": latency,
                        "calls": len(calls),
                        "calls_by_stage": stages,
                        "wall_s": round(wall, 4),
                        "trace_wall_s": round(result.trace.wall_time_s, 4),
                        "ideal_s": round(ideal, 4),
                        "efficiency": round(ideal / wall, 4),
                        "cpu_s": round(cpu, 4),
                        "cpu_ms_per_call": round(1000 * cpu / len(calls), 4),
                        "chunking_cpu_s": round(chunking_cpu, 4),
                        "chunking_ms_per_call": round(1000 * chunking_cpu / len(calls), 4),
                        "server_latency_sum_s": round(sum(durations), 4),
                        "latency_unknown_calls": missing,
                        "failed_calls": len(result.failed_calls),
                        "transport_retries": sum(c.transport_retries for c in calls),
                        "requests": after["served"] - before["served"],
                        "server_max_in_service": after["max_in_service"],
                        "found": result.found,
                    }
                    rows.append(row)
                    print(
                        f"{size:>6}  {scheduler:9}  {latency:18}  {len(calls):>6}  {wall:>7.2f}  {ideal:>7.2f}  "
                        f"{ideal / wall:>10.3f}  {row['cpu_ms_per_call']:>11.3f}  {row['chunking_ms_per_call']:>13.3f}",
                        flush=True,
                    )
                    if missing or row["failed_calls"] or row["transport_retries"]:
                        print(
                            f"        note: {missing} call(s) without a server latency, {row['failed_calls']} failed, "
                            f"{row['transport_retries']} transport retries",
                            flush=True,
                        )
    report = {
        "machine": machine(),
        "parameters": {
            "sizes": sizes,
            "latencies": latencies,
            "schedulers": schedulers,
            "concurrency": args.concurrency,
            "slots": args.slots,
            "chunk_tokens": args.chunk_tokens,
            "info_rate": args.info_rate,
            "reply_tokens": args.reply_tokens,
            "max_model_len": args.max_model_len,
            "seed": args.seed,
            "tokenizer": "tiktoken",
            "question": QUESTION,
        },
        "rows": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
