"""End to end on the embedded model: one pass-key run, against llama.cpp's own speed here.

    python benchmarks/e2e.py [--length 32k] [--seed 0] [--depth-example 5]

Builds an InfiniteBench-style pass-key document offline (``llmxmr bench generate``'s builder),
runs ``MapReducePipeline`` on the embedded default (SmolLM2-135M through llama.cpp, in-process),
and measures llama.cpp's prefill speed on this machine with the same model: one completion of one
token over a prompt as long as a map call's. The run's tokens per second (prompt + completion
tokens of all calls over wall time) against that speed says how much of the time is the model's
own work; the rest is decoding, re-asks and the pipeline. Prints a table and writes
``benchmarks/results/e2e.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.bench.infinitebench.generate import generate, parse_length
from llmxmr.clients.embedded import default_model_path

RESULTS = Path(__file__).parent / "results" / "e2e.json"


def prefill_tokens_per_s(prompt_tokens: int, threads: int, n_ctx: int) -> float:
    """llama.cpp alone: the time to read a prompt of ``prompt_tokens`` tokens (and write one)."""
    from llama_cpp import Llama

    llama = Llama(str(default_model_path()), n_ctx=n_ctx, n_threads=threads, verbose=False)
    prompt = "The grass is green. The sky is blue. " * (prompt_tokens // 10)
    tokens = llama.tokenize(prompt.encode())[:prompt_tokens]
    started = time.perf_counter()
    llama.eval(tokens)
    elapsed = time.perf_counter() - started
    return len(tokens) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", default="32k", help="Document length in cl100k tokens.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--example", type=int, default=5, help="Which of 11 generated examples (depth 0-100%%).")
    args = parser.parse_args()

    example = generate("passkey", parse_length(args.length), 11, args.seed)[args.example]
    config = PipelineConfig.load(task_type="retrieval")
    result = MapReducePipeline(config).run(example["context"], example["input"])
    totals = result.trace.totals
    map_prompt = max(r.prompt_tokens for r in result.trace.calls if r.stage == "map")
    threads = config.embedded.threads or os.cpu_count() or 1
    prefill = prefill_tokens_per_s(map_prompt, threads, config.embedded.n_ctx)
    tokens = totals.prompt_tokens + totals.completion_tokens
    row = {
        "length": parse_length(args.length),
        "depth_percent": round(100 * args.example / 10),
        "found_key": example["answer"][0] in result.answer,
        "answer": result.answer,
        "chunks": len(result.chunks),
        "calls": totals.calls,
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "wall_s": round(totals.wall_time_s, 2),
        "run_tokens_per_s": round(tokens / totals.wall_time_s, 1),
        "llama_cpp_prefill_tokens_per_s": round(prefill, 1),
        "prefill_share_of_wall": round(totals.prompt_tokens / prefill / totals.wall_time_s, 3),
    }
    for name, value in row.items():
        print(f"{name:<32}{value}")
    RESULTS.parent.mkdir(exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "threads": threads}
    RESULTS.write_text(json.dumps({"machine": machine, "model": result.model, "run": row}, indent=2) + "\n")


if __name__ == "__main__":
    main()
