"""Chunking speed: seconds to chunk synthetic documents of 100k to 2M tokens (Zh.QA scale).

    python benchmarks/chunking.py [--sizes 100000,1000000,2000000] [--budget 3000]

Prints a table and writes benchmarks/results/chunking.json. Token counts are tiktoken cl100k_base.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from llmxmr.chunking import chunk_text
from llmxmr.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results" / "chunking.json"
SAMPLES = {
    "english": "It is a truth universally acknowledged, that a single man in possession of a good fortune "
    "must be in want of a wife. However little known the feelings or views of such a man may be.\n\n",
    "chinese": "这是一个很长的句子，用来测试分块的速度。他说：“我们明天再来！”你觉得呢？\n\n",
}


def document(sample: str, tokens: int, counter: TiktokenCounter) -> str:
    per_sample = counter.count_batch([sample])[0]
    return sample * (tokens // per_sample + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,2000000")
    parser.add_argument("--budget", type=int, default=3000)
    args = parser.parse_args()
    counter = TiktokenCounter()
    rows = []
    for language, sample in SAMPLES.items():
        for size in (int(s) for s in args.sizes.split(",")):
            text = document(sample, size, counter)
            started = time.perf_counter()
            chunks = chunk_text(text, args.budget, counter)
            seconds = time.perf_counter() - started
            tokens = sum(c.tokens for c in chunks)
            rows.append(
                {
                    "language": language,
                    "target_tokens": size,
                    "characters": len(text),
                    "chunk_tokens_total": tokens,
                    "chunks": len(chunks),
                    "seconds": round(seconds, 3),
                    "tokens_per_second": round(tokens / seconds),
                }
            )
            row = rows[-1]
            print(
                f"{language:8} {size:>10,} tokens  {len(chunks):>5} chunks  {seconds:7.2f} s  "
                f"{row['tokens_per_second']:>12,} tokens/s"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"budget": args.budget, "machine": platform.machine(), "python": platform.python_version(), "rows": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
