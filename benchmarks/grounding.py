"""Grounding on and off: recall where the answer is, false answers where it is not.

    python benchmarks/grounding.py [--length 16k] [--n 4] [--modes off,cap] [--base-url URL]

Builds pass-key and KV-retrieval documents offline (``llmxmr bench generate``'s builders): ``n``
with the needle at depths spread from start to end, and the same ``n`` haystacks with the needle
taken out. Each document is run through ``MapReducePipeline`` once per grounding mode, on the
embedded default model or on the server given by ``--base-url``.

* recall: documents with the needle whose answer scores 1 with InfiniteBench's official scorer.
* false answers: documents without the needle where the run still answered (``found`` true):
  every such answer is invented. The rate over those documents is the hallucination rate.

The modes read the same model replies: the first mode's calls go to the model, and a reply cache
(a temporary SQLite file, the ``--cache`` of ``llmxmr run``) answers the same requests in the
later modes, so their differences are the grounding policy's alone. Calls and tokens are counted
per mode as made; a later mode's wall time is short where the cache answered, so the table shows
its cache hits. Prints a table and writes ``benchmarks/results/grounding.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.bench.infinitebench.generate import generate, parse_length, without_answer
from llmxmr.bench.infinitebench.scorers import score_example
from llmxmr.bench.infinitebench.tasks import Example, question_for, task_config
from llmxmr.clients import make_client
from llmxmr.pipeline import PipelineResult

RESULTS = Path(__file__).parent / "results" / "grounding.json"
TASKS = ("passkey", "kv_retrieval")


def documents(task: str, length: int, n: int, seed: int) -> list[tuple[Example, bool]]:
    """``n`` examples with their needle, then the same ``n`` without it."""
    examples = generate(task, length, n, seed)
    return [(Example.model_validate(e), True) for e in examples] + [
        (Example.model_validate(without_answer(task, e)), False) for e in examples
    ]


async def run_mode(task: str, mode: str, docs: list[tuple[Example, bool]], args: argparse.Namespace, cache: str) -> dict[str, Any]:
    overrides = {"grounding.mode": mode, "llm.cache": cache, "llm.base_url": args.base_url, "llm.model": args.model}
    config = PipelineConfig.load(preset=task_config(task).pipeline, **overrides)
    client = make_client(config)
    runs: list[dict[str, Any]] = []
    try:
        for example, has_needle in docs:
            result = await MapReducePipeline(config, client=client).arun(example.context, question_for(task, example))
            runs.append(_run_row(task, example, has_needle, result))
            print(f"  {task} {mode} #{example.id} needle={has_needle}: {result.answer[:40]!r} found={result.found}", flush=True)
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


def _run_row(task: str, example: Example, has_needle: bool, result: PipelineResult) -> dict[str, Any]:
    totals = result.trace.totals
    return {
        "id": example.id,
        "needle": has_needle,
        "answer": result.answer,
        "found": result.found,
        "score": score_example(task, result.answer, example.answer) if has_needle else None,
        "citations": len(result.citations),
        "calls": totals.calls,
        "cache_hits": totals.cache_hits,
        "tokens": totals.prompt_tokens + totals.completion_tokens,
        "wall_s": round(totals.wall_time_s, 2),
    }


COLUMNS = ("task", "grounding", "present", "recall", "absent", "false_answers", "hallucination_rate", "calls", "cache_hits", "tokens", "wall_s")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [" | ".join(COLUMNS), " | ".join("---" for _ in COLUMNS)]
    lines += [" | ".join(str(row[c]) for c in COLUMNS) for row in rows]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    length = parse_length(args.length)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(Path(scratch) / "replies.sqlite")
        for task in args.tasks.split(","):
            docs = documents(task, length, args.n, args.seed)
            for mode in modes:
                rows.append(await run_mode(task, mode, docs, args, cache))
    print(table(rows))
    RESULTS.parent.mkdir(exist_ok=True)
    setup = {"length": length, "n": args.n, "seed": args.seed, "server": args.base_url or "embedded"}
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    RESULTS.write_text(json.dumps({"machine": machine, "setup": setup, "rows": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", default="16k", help="Document length in cl100k tokens.")
    parser.add_argument("--n", type=int, default=4, help="Documents with the needle per task (as many without).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--modes", default="off,cap", help="Grounding modes, in order; the first calls the model.")
    parser.add_argument("--base-url", help="An OpenAI-compatible server (default: the embedded model).")
    parser.add_argument("--model", help="Model name on the server.")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
