"""Many questions, one reading: what Q questions about one document cost with ``run_many``, against
one question, and against Q separate runs.

    python benchmarks/questions.py [--questions 1,2,5,10,20] [--doc-tokens 128000] [--chunk-tokens 4096]
                                   [--cache-tokens 262144] [--cache-page 16] [--prefill-tokens-per-s 20000]
                                   [--latency fixed:0.5] [--concurrency 64] [--separate 10]
    python benchmarks/questions.py --model-runs [--length 16000] [--model-questions 1,3,5]
                                   [--modes embedded,server]
    python benchmarks/questions.py --chat-runs [--length 16000] [--model-questions 3]

**Part (a)**, the default: ``MapReducePipeline(config).run_many(document, questions[:Q])`` for each Q
against the simulated server (``benchmarks/simserver.py``) with its prefix cache on
(``--cache-tokens``, an LRU of prompt prefixes in pages of ``--cache-page`` tokens that reports
``cached_tokens`` as SGLang does) and
prefill time proportional to the prompt tokens it computes (``--prefill-tokens-per-s`` on one
prefill engine that all requests share; ``--latency`` per call on top, for decoding). The cache is
flushed before each row. The document is the first ``--doc-tokens`` cl100k tokens of the books in
``../shared/corpus/books/`` (as ``benchmarks/tokens.py`` builds it), generated prose without them;
``chunking.chunk_tokens`` 4096, ``llm.tokenizer: tiktoken``, window 32768. Two contrast rows run the
first ``--separate`` questions one ``run`` each, in turn: with the cache kept between runs (the
server still holds the earlier runs' chunk prefixes), and flushed before each run (a server whose
cache cannot hold the document between runs, or a prompt layout that puts the question first).
Tokens are the trace's totals (the server's usage: cl100k over the ChatML-rendered prompt;
computed = prompt - cached). Target: at Q = 10, computed prompt tokens at most 1.5 x those at Q = 1.
Writes ``benchmarks/results/questions.json``.

**Part (b)**, ``--model-runs`` (tens of minutes on 2 cores): Q = 1, 3 and 5 over the first
``--length`` tokens of the same text on the bundled model, embedded (``llm.base_url`` unset) and
through ``llmxmr serve --local`` (started here on a free port, stopped after), with ``llm.concurrency``
1 (``--model-concurrency``): the model serves one call at a time, so a call's latency is its own
model time, and calls reach the model in the pipeline's chunk-major order (with more in flight they
queue on the model and go in another order: see the README). A question's time is the sum of its
calls' latencies; each later question's is compared with the first's. ``marginal`` is the wall time
each question beyond the first adds, over the wall time of one question alone. Target (embedded):
every question after the first at most 0.35 x the first. Writes ``results/questions_model.json``.

**Part (c)**, ``--chat-runs``: the first ``--model-questions`` questions asked one after another, as
``llmxmr chat`` asks them (one embedded model kept open, one pipeline, a question answered before the
next is asked), with the model's state cache at 1024 MB (chat's default) and off: what a later
question computes when the chunks' states are kept. Writes ``results/questions_chat.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tiktoken
from simserver import flush_cache, server_stats, start_server
from tokens import BOOKS, books_text, generated_text

from llmxmr import MapReducePipeline, PipelineConfig, PipelineResult
from llmxmr.tokens import OFFLINE_CL100K

RESULTS = Path(__file__).parent / "results"
# About Moby-Dick, the first of the books (the first 16k tokens reach the Spouter-Inn, 128k about
# chapter 45); the first five are about its opening chapters. They need not be answerable: the
# simulated server's replies are canned.
QUESTIONS = [
    "Why does Ishmael decide to go to sea?",
    "Where does Ishmael spend his first night in New Bedford?",
    "Who does the landlord of the Spouter-Inn say will share Ishmael's bed?",
    "What does the painting in the entrance of the Spouter-Inn seem to show?",
    "What does Ishmael carry in his carpet-bag?",
    "What is Father Mapple's sermon about?",
    "Which island does Queequeg come from, and why did he leave it?",
    "Which ship do Ishmael and Queequeg sign on to, and who signs them on?",
    "Who are the Pequod's owners, and what are they like?",
    "What does the stranger Elijah warn Ishmael and Queequeg about?",
    "Who are the three mates of the Pequod, and how does Ishmael describe each?",
    "Who are the harpooneers, and which mate does each serve?",
    "How did Captain Ahab lose his leg?",
    "What does Ahab nail to the mainmast, and what is it a reward for?",
    "How does Starbuck respond to Ahab's plan to hunt the white whale?",
    "How does Ishmael classify whales in the chapter on cetology?",
    "What does the whiteness of the whale mean to Ishmael?",
    "What does Ahab's chart show, and how does he hope to find Moby Dick?",
    "Who is Fedallah, and when do the crew first see him?",
    "What is the first whale the Pequod lowers for, and what happens to Ishmael's boat?",
]
TARGET_COMPUTED_RATIO = 1.5  # computed prompt tokens at Q = 10 over Q = 1
TARGET_LATER_RATIO = 0.35  # each later question's time over the first's, embedded


def build_document(tokens: int, seed: int, encoding: Any) -> tuple[str, str, list[str]]:
    """The first ``tokens`` cl100k tokens of the books (or of generated prose), as in tokens.py."""
    found = books_text(tokens)
    if found:
        text, files = found
        source = f"books: {', '.join(files)} (first {tokens:,} tokens)"
    else:
        text, files = generated_text(tokens, seed), []
        source = f"generated prose ({BOOKS} not found)"
    ids = encoding.encode_ordinary(text[: tokens * 6])
    if len(ids) < tokens:
        sys.exit(f"only {len(ids):,} tokens of text available, {tokens:,} asked")
    return encoding.decode(ids[:tokens]), source, files


def totals_of(results: list[PipelineResult]) -> dict[str, int]:
    """The runs' calls and tokens, summed over their traces."""
    sums = {"calls": 0, "requests": 0, "failed_calls": 0, "prompt_tokens": 0, "cached_tokens": 0, "computed_tokens": 0}
    for result in results:
        totals = result.trace.totals
        for name in sums:
            sums[name] += getattr(totals, name)
    return sums


def parse_counts(text: str) -> list[int]:
    counts = [int(v) for v in text.split(",") if v.strip()]
    if not counts or min(counts) < 1 or max(counts) > len(QUESTIONS):
        raise SystemExit(f"question counts must be 1 to {len(QUESTIONS)}: {text!r}")
    return counts


# -- part (a): the simulated server with a prefix cache ------------------------------------------


def simulated(args: argparse.Namespace) -> None:
    encoding = tiktoken.get_encoding(OFFLINE_CL100K)
    document, source, files = build_document(args.doc_tokens, args.seed, encoding)
    counts = parse_counts(args.questions)
    rows: list[dict[str, Any]] = []
    print(f"document: {source}")
    print(
        f"server: prefix cache {args.cache_tokens:,} tokens in pages of {args.cache_page}, prefill "
        f"{args.prefill_tokens_per_s:,.0f} tokens/s (shared), latency {args.latency} per call, {args.concurrency} slots"
    )
    header = (
        f"{'run':24}  {'Q':>3}  {'calls':>5}  {'prompt':>9}  {'cached':>9}  {'computed':>9}  {'wall s':>7}  "
        f"{'prompt/Q':>9}  {'computed/Q':>10}  {'wall/Q':>7}  {'vs Q=1':>7}  {'evicted':>7}"
    )
    print(header)
    print("-" * len(header))
    with start_server(
        latency=args.latency,
        slots=args.concurrency,
        seed=args.seed,
        info_rate=args.info_rate,
        max_model_len=args.window,
        prefix_cache_tokens=args.cache_tokens,
        prefix_cache_page=args.cache_page,
        prefill_tokens_per_s=args.prefill_tokens_per_s,
    ) as (base_url, _):
        config = PipelineConfig.load(
            **{
                "llm.base_url": base_url,
                "llm.concurrency": args.concurrency,
                "chunking.chunk_tokens": args.chunk_tokens,
                "llm.tokenizer": "tiktoken",
            }
        )
        MapReducePipeline(config).run(document[:2000], QUESTIONS[0])  # untimed: imports, connections

        def row(run: str, questions: int, results: list[PipelineResult], wall: float, server: dict[str, int]) -> None:
            sums = totals_of(results)
            base = next((r["computed_tokens"] for r in rows if r["run"] == "run_many" and r["questions"] == 1), None)
            ratio = sums["computed_tokens"] / base if base else None
            rows.append(
                {
                    "run": run,
                    "questions": questions,
                    "chunks": len(results[0].chunks),
                    **sums,
                    "wall_s": round(wall, 3),
                    "prompt_tokens_per_question": round(sums["prompt_tokens"] / questions),
                    "computed_tokens_per_question": round(sums["computed_tokens"] / questions),
                    "wall_s_per_question": round(wall / questions, 3),
                    "computed_vs_one_question": round(ratio, 3) if ratio is not None else None,
                    "server": server,
                    "found": [r.found for r in results],
                }
            )
            print(
                f"{run:24}  {questions:>3}  {sums['calls']:>5}  {sums['prompt_tokens']:>9,}  "
                f"{sums['cached_tokens']:>9,}  {sums['computed_tokens']:>9,}  {wall:>7.2f}  "
                f"{sums['prompt_tokens'] / questions:>9,.0f}  {sums['computed_tokens'] / questions:>10,.0f}  "
                f"{wall / questions:>7.2f}  {f'{ratio:.2f}x' if ratio is not None else '':>7}  "
                f"{server['prefix_cache_evicted_tokens']:>7,}",
                flush=True,
            )

        def server_delta(before: dict[str, Any]) -> dict[str, int]:
            after = server_stats(base_url)
            keys = ("served", "prompt_tokens", "cached_tokens", "computed_tokens", "prefix_cache_evicted_tokens")
            delta = {k: after[k] - before[k] for k in keys}
            # The cache's size at the end of the row: with nothing evicted, what the row needed.
            return delta | {
                "prefill_s": round(after["prefill_s"] - before["prefill_s"], 3),
                "prefix_cache_tokens_at_end": after["prefix_cache_tokens"],
            }

        for questions in counts:
            flush_cache(base_url)
            before = server_stats(base_url)
            started = time.perf_counter()
            results = MapReducePipeline(config).run_many(document, QUESTIONS[:questions])
            row("run_many", questions, results, time.perf_counter() - started, server_delta(before))
        for kept in (True, False) if args.separate else ():
            flush_cache(base_url)
            before = server_stats(base_url)
            singles: list[PipelineResult] = []
            started = time.perf_counter()
            for question in QUESTIONS[: args.separate]:
                if not kept:
                    flush_cache(base_url)
                singles.append(MapReducePipeline(config).run(document, question))
            name = f"{args.separate} x run, cache {'kept' if kept else 'flushed'}"
            row(name, args.separate, singles, time.perf_counter() - started, server_delta(before))

    mismatched = [r["run"] for r in rows if r["server"]["computed_tokens"] != r["computed_tokens"]]
    if mismatched:
        print(f"note: the traces and the server's own counts differ for {', '.join(mismatched)} (re-asks, retries)")
    checks = {}
    at_ten = next((r for r in rows if r["run"] == "run_many" and r["questions"] == 10), None)
    if at_ten and at_ten["computed_vs_one_question"] is not None:
        met = at_ten["computed_vs_one_question"] <= TARGET_COMPUTED_RATIO
        checks["computed_tokens_at_10_vs_1"] = {
            "value": at_ten["computed_vs_one_question"],
            "target": TARGET_COMPUTED_RATIO,
            "met": met,
        }
        print(
            f"computed prompt tokens, Q = 10 over Q = 1: {at_ten['computed_vs_one_question']:.2f}x "
            f"(target <= {TARGET_COMPUTED_RATIO}): {'met' if met else 'MISSED'}"
        )
    report = {
        "machine": machine(),
        "parameters": {
            "doc_tokens": args.doc_tokens,
            "chunk_tokens": args.chunk_tokens,
            "window": args.window,
            "concurrency": args.concurrency,
            "slots": args.concurrency,
            "latency": args.latency,
            "prefill_tokens_per_s": args.prefill_tokens_per_s,
            "prefix_cache_tokens": args.cache_tokens,
            "prefix_cache_page": args.cache_page,
            "info_rate": args.info_rate,
            "seed": args.seed,
            "source": source,
            "source_files": files,
            "questions": QUESTIONS,
            "tokens": "the server's usage: cl100k_base over the ChatML-rendered prompt; computed = prompt - cached",
        },
        "checks": checks,
        "rows": rows,
    }
    write(args.out or RESULTS / "questions.json", report)


# -- part (b): the bundled model, embedded and through llmxmr serve --local ----------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_local_server(log: Path, timeout_s: float = 300.0) -> tuple[subprocess.Popen[str], str]:
    """``llmxmr serve --local`` on a free port; the process and the base URL it prints on stdout."""
    command = [sys.executable, "-m", "llmxmr", "serve", "--local", "--port", str(free_port())]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True)
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline().strip()
        if line.startswith("http"):
            return process, line
        if process.poll() is not None:
            break
        time.sleep(0.5)
    stop(process)
    sys.exit(f"llmxmr serve --local did not start:\n{log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()  # serve --local stops its server on SIGTERM, as on Ctrl-C
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def model_runs(args: argparse.Namespace) -> None:
    encoding = tiktoken.get_encoding(OFFLINE_CL100K)
    document, source, files = build_document(args.length, args.seed, encoding)
    counts = parse_counts(args.model_questions)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in ("embedded", "server")]:
        sys.exit(f"unknown mode(s) {', '.join(unknown)}: embedded or server")
    rows: list[dict[str, Any]] = []
    print(f"document: {source}; llm.concurrency {args.model_concurrency or 'from the config'}")
    header = (
        f"{'mode':9}  {'Q':>2}  {'chunks':>6}  {'calls':>5}  {'cached':>7}  {'computed':>8}  {'wall s':>7}  "
        f"{'wall/Q':>7}  {'marginal':>8}  question s (x first)"
    )
    print(header)
    print("-" * len(header))
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="llmxmr-questions-") as scratch:
            process, overrides = None, {}
            if args.model_concurrency:
                overrides["llm.concurrency"] = args.model_concurrency
            if mode == "server":
                process, base_url = start_local_server(Path(scratch) / "server.log")
                overrides["llm.base_url"] = base_url
            try:
                config = PipelineConfig.load(**overrides)
                for questions in counts:
                    started = time.perf_counter()
                    results = MapReducePipeline(config).run_many(document, QUESTIONS[:questions])
                    wall = time.perf_counter() - started
                    seconds = [sum(c.latency_s for c in r.trace.calls) for r in results]
                    ratios = [s / seconds[0] if seconds[0] else None for s in seconds]
                    one = next((r["wall_s"] for r in rows if r["mode"] == mode and r["questions"] == 1), None)
                    # Each question beyond the first, in wall time, over the run of one question.
                    marginal = (wall - one) / (questions - 1) / one if one and questions > 1 else None
                    sums = totals_of(results)
                    rows.append(
                        {
                            "mode": mode,
                            "questions": questions,
                            "chunks": len(results[0].chunks),
                            **sums,
                            "wall_s": round(wall, 2),
                            "wall_s_per_question": round(wall / questions, 2),
                            "marginal_vs_one_question": round(marginal, 3) if marginal is not None else None,
                            "question_s": [round(s, 2) for s in seconds],
                            "question_vs_first": [round(r, 3) if r is not None else None for r in ratios],
                            "model": results[0].model,
                            "answers": [r.answer for r in results],
                        }
                    )
                    shown = ", ".join(
                        f"{s:.1f}" + (f" ({r:.2f}x)" if i and r is not None else "")
                        for i, (s, r) in enumerate(zip(seconds, ratios, strict=True))
                    )
                    print(
                        f"{mode:9}  {questions:>2}  {len(results[0].chunks):>6}  {sums['calls']:>5}  "
                        f"{sums['cached_tokens']:>7,}  {sums['computed_tokens']:>8,}  {wall:>7.1f}  "
                        f"{wall / questions:>7.1f}  {f'{marginal:.2f}x' if marginal is not None else '':>8}  {shown}",
                        flush=True,
                    )
            finally:
                if process is not None:
                    stop(process)
    later = [r for row in rows if row["mode"] == "embedded" for r in row["question_vs_first"][1:] if r is not None]
    checks = {}
    if later:
        met = max(later) <= TARGET_LATER_RATIO
        checks["embedded_later_vs_first"] = {"worst": max(later), "target": TARGET_LATER_RATIO, "met": met}
        print(
            f"embedded, later questions over the first: at most {max(later):.2f}x "
            f"(target <= {TARGET_LATER_RATIO}): {'met' if met else 'MISSED'}"
        )
    report = {
        "machine": machine(),
        "parameters": {
            "length": args.length,
            "questions": QUESTIONS[: max(counts)],
            "modes": modes,
            "concurrency": args.model_concurrency or None,
            "seed": args.seed,
            "source": source,
            "source_files": files,
            "question_s": "sum of the latencies of the question's calls (one call at a time on this model)",
            "marginal": "(wall at Q - wall at 1) / (Q - 1) / wall at 1",
        },
        "checks": checks,
        "rows": rows,
    }
    write(args.out or RESULTS / "questions_model.json", report)


def chat_runs(args: argparse.Namespace) -> None:
    """Part (c): questions asked one after another, as ``llmxmr chat`` asks them: one embedded model
    kept open, one pipeline (the document chunked once), each question answered before the next is
    asked, with the model's state cache (``embedded.state_cache_mb``, 1024 in chat) and without."""
    from llmxmr.clients import make_client

    encoding = tiktoken.get_encoding(OFFLINE_CL100K)
    document, source, _ = build_document(args.length, args.seed, encoding)
    questions = QUESTIONS[: max(parse_counts(args.model_questions))]
    print(f"document: {source}; {len(questions)} questions, one after another")
    print(f"{'state cache':>11}  {'question':>8}  {'calls':>5}  {'prompt':>7}  {'computed':>8}  {'s':>7}  x first")
    rows = []
    for state_cache_mb in (1024, 0):
        config = PipelineConfig.load(**{"embedded.state_cache_mb": state_cache_mb})
        if not config.uses_embedded_model:
            sys.exit("--chat-runs measures the embedded model: unset LLMXMR_BASE_URL")
        client = make_client(config)
        pipeline = MapReducePipeline(config, client=client)
        with asyncio.Runner() as runner:  # one event loop for the session, as llmxmr chat keeps
            first = None
            for number, question in enumerate(questions, 1):
                started = time.perf_counter()
                result = runner.run(pipeline.arun(document, question))
                seconds = time.perf_counter() - started
                first = first or seconds
                totals = result.trace.totals
                row = {
                    "state_cache_mb": state_cache_mb,
                    "question": number,
                    "calls": totals.calls,
                    "prompt_tokens": totals.prompt_tokens,
                    "computed_tokens": totals.computed_tokens,
                    "wall_s": round(seconds, 2),
                    "vs_first": round(seconds / first, 3),
                    "answer": result.answer,
                }
                rows.append(row)
                print(
                    f"{state_cache_mb:>8} MB  {number:>8}  {totals.calls:>5}  {totals.prompt_tokens:>7,}  "
                    f"{totals.computed_tokens:>8,}  {seconds:>7.1f}  {seconds / first:.2f}x",
                    flush=True,
                )
            runner.run(client.aclose())
    report = {
        "machine": machine(),
        "parameters": {"length": args.length, "questions": questions, "seed": args.seed, "source": source},
        "rows": rows,
    }
    write(args.out or RESULTS / "questions_chat.json", report)


def machine() -> dict[str, Any]:
    """What every report says of the machine it ran on."""
    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", default="1,2,5,10,20", help="(a) question counts, comma-separated")
    parser.add_argument("--doc-tokens", type=int, default=128_000, help="(a) document tokens (cl100k)")
    parser.add_argument("--chunk-tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=32768, help="(a) max_model_len the server reports")
    parser.add_argument("--cache-tokens", type=int, default=262_144, help="(a) prefix cache capacity in tokens")
    parser.add_argument("--cache-page", type=int, default=16, help="(a) tokens per cache page (see README)")
    parser.add_argument("--prefill-tokens-per-s", type=float, default=20_000.0, help="(a) shared prefill speed")
    parser.add_argument("--latency", default="fixed:0.5", help="(a) per call, after prefill (decoding)")
    parser.add_argument("--concurrency", type=int, default=64, help="(a) llm.concurrency and server slots")
    parser.add_argument("--info-rate", type=float, default=0.2)
    parser.add_argument("--separate", type=int, default=10, help="(a) questions run one by one for contrast (0: none)")
    parser.add_argument("--model-runs", action="store_true", help="run part (b) on the bundled model instead")
    parser.add_argument("--chat-runs", action="store_true", help="run part (c), questions one after another, instead")
    parser.add_argument("--length", type=int, default=16_000, help="(b) document tokens (cl100k)")
    parser.add_argument("--model-questions", default="1,3,5", help="(b) question counts, comma-separated")
    parser.add_argument("--modes", default="embedded,server", help="(b) embedded, server (llmxmr serve --local)")
    parser.add_argument(
        "--model-concurrency", type=int, default=1, help="(b) llm.concurrency (0: the config's, 64 per server)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/questions[_model].json)")
    args = parser.parse_args()
    if args.chat_runs:
        chat_runs(args)
    elif args.model_runs:
        model_runs(args)
    else:
        simulated(args)


if __name__ == "__main__":
    main()
