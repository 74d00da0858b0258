"""Chunking speed: seconds to chunk documents of 100k to 2M tokens (Zh.QA scale), against tiktoken's own floor.

    python benchmarks/chunking.py [--sizes 100000,1000000,2000000] [--budget 3000] [--repeat 3]
                                  [--books ../shared/corpus/books]

Documents, each cut at exactly the target length in tokens (tiktoken cl100k_base, offline):

* **books**: the ``*.txt`` files of ``--books`` (default ``../shared/corpus/books/`` next to the
  checkout), concatenated in name order (a blank line between files) and repeated until the target
  is reached. Read in place, never copied into the repository. Without that folder, generated English
  (one sentence pair repeated) stands in, and the rows say ``generated-english``.
* **generated-chinese**: a Chinese sample repeated (the books are English).

Per row, the best of ``--repeat`` runs of ``chunk_text(text, budget, TiktokenCounter())``, and the
best of ``--repeat`` runs of the **floor**: one ``encode_ordinary`` of the whole text with the same
offline cl100k_base (one call, one thread): the least any exact cl100k_base chunker must spend.
``ratio`` is chunking seconds over floor seconds (target at most 1.5). ``s/Mtok`` is seconds per
million tokens; linear growth means it stays flat: the target is the largest size's s/Mtok at most
1.10 times the next smaller size's (at the default sizes, the 2M time over 2 × the 1M time).

Peak memory is that of one more, untimed ``chunk_text`` run under ``tracemalloc``: the peak of
Python allocations during the call above what was allocated when it started (the document itself
excluded). tiktoken's Rust code allocates outside Python's allocator and is not seen, but what it
holds is per text (one segment or one chunk at a time), so it is small next to the Python lists.

Prints a table and writes benchmarks/results/chunking.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import tiktoken

from llmxmr.chunking import chunk_text
from llmxmr.tokens import OFFLINE_CL100K, TiktokenCounter

RESULTS = Path(__file__).parent / "results" / "chunking.json"
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "books"
SAMPLES = {
    "generated-english": "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune must be in want of a wife. However little known the feelings or views of such a man may be.\n\n",
    "generated-chinese": "这是一个很长的句子，用来测试分块的速度。他说：“我们明天再来！”你觉得呢？\n\n",
}
TARGET_RATIO = 1.5  # chunking seconds over floor seconds
TARGET_LINEARITY = 1.10  # s/Mtok of the largest size over that of the next smaller size


def repeated_to(base: str, tokens: int, encoding: Any, separator: str = "") -> str:
    """``base`` (then ``separator``) repeated until it holds ``tokens`` tokens, cut at exactly that many."""
    unit = base + separator
    sample = unit[:200_000]
    characters = int(tokens * len(sample) / max(1, len(encoding.encode_ordinary(sample))) * 1.05) + 1_000
    while True:
        text = (unit * (characters // len(unit) + 1))[:characters]
        ids = encoding.encode_ordinary(text)
        if len(ids) > tokens:  # one spare token: the last one may be a word the character cut split
            break
        characters = int(characters * 1.2)
    # The prefix's bytes are a prefix of the text's UTF-8: drop at most a character cut in half.
    return encoding.decode_bytes(ids[:tokens]).decode("utf-8", errors="ignore")


def books(folder: Path) -> tuple[str, list[str]] | None:
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        return None
    texts = [path.read_text(encoding="utf-8", errors="replace") for path in files]
    return "\n\n".join(texts), [path.name for path in files]


def best_of(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def peak_mb(call: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return (peak - base) / 1e6


def linearity(rows: list[dict[str, Any]]) -> None:
    """Per source: each row's s/Mtok over the previous (smaller) size's."""
    previous: dict[str, float] = {}
    for row in rows:
        before = previous.get(row["source"])
        row["s_per_mtok_vs_smaller"] = round(row["s_per_mtok"] / before, 3) if before else None
        previous[row["source"]] = row["s_per_mtok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,2000000")
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--books", type=Path, default=BOOKS, help="folder of .txt books (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs, for chunking and the floor")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    counter = TiktokenCounter()
    encoding = tiktoken.get_encoding(OFFLINE_CL100K)  # what TiktokenCounter loads: offline

    found = books(args.books)
    if found:
        sources = {"books": (found[0], "\n\n")}
        books_note = f"books: {', '.join(found[1])} from {args.books} (name order, repeated, cut at the target)"
    else:
        english = SAMPLES["generated-english"]
        sources = {"generated-english": (english, "")}
        books_note = f"generated-english ({args.books} not found)"
    sources["generated-chinese"] = (SAMPLES["generated-chinese"], "")
    print(f"source of English text: {books_note}")
    print(f"budget {args.budget} tokens, best of {args.repeat}, {os.cpu_count()} CPUs\n")

    header = (
        f"{'source':17} {'tokens':>10} {'chars':>10} {'chunks':>6} {'seconds':>8} {'tokens/s':>10} "
        f"{'peak MB':>8} {'floor s':>8} {'ratio':>6} {'s/Mtok':>7} {'vs smaller':>10}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for source, (base, separator) in sources.items():
        for size in sizes:
            text = repeated_to(base, size, encoding, separator)
            seconds, chunks = best_of(args.repeat, partial(chunk_text, text, args.budget, counter))
            floor, ids = best_of(args.repeat, partial(encoding.encode_ordinary, text))
            assert "".join(text[c.start : c.end] for c in chunks) == text
            tokens, count = len(ids), len(chunks)
            chunk_tokens, largest = sum(c.tokens for c in chunks), max(c.tokens for c in chunks)
            del chunks, ids
            peak = peak_mb(partial(chunk_text, text, args.budget, counter))
            rows.append(
                {
                    "source": source,
                    "target_tokens": size,
                    "tokens": tokens,
                    "characters": len(text),
                    "chunks": count,
                    "chunk_tokens_total": chunk_tokens,
                    "max_chunk_tokens": largest,
                    "seconds": round(seconds, 4),
                    "tokens_per_second": round(tokens / seconds),
                    "peak_mb": round(peak, 1),
                    "floor_seconds": round(floor, 4),
                    "floor_tokens_per_second": round(tokens / floor),
                    "ratio": round(seconds / floor, 2),
                    "s_per_mtok": round(seconds / tokens * 1e6, 4),
                    "floor_s_per_mtok": round(floor / tokens * 1e6, 4),
                }
            )
            linearity(rows)
            row = rows[-1]
            vs = row["s_per_mtok_vs_smaller"]
            print(
                f"{source:17} {tokens:>10,} {len(text):>10,} {count:>6} {seconds:>8.3f} "
                f"{row['tokens_per_second']:>10,} {peak:>8.1f} {floor:>8.3f} {row['ratio']:>5.2f}x "
                f"{row['s_per_mtok']:>7.3f} {f'{vs:.2f}x' if vs else '-':>10}"
            )
            del text

    checks = []
    for source in sources:
        mine = [r for r in rows if r["source"] == source]
        worst = max(mine, key=lambda r: r["ratio"])
        checks.append(
            {
                "source": source,
                "target": f"ratio <= {TARGET_RATIO}",
                "value": worst["ratio"],
                "at_tokens": worst["target_tokens"],
                "met": worst["ratio"] <= TARGET_RATIO,
            }
        )
        if len(mine) > 1:
            last = mine[-1]["s_per_mtok_vs_smaller"]
            checks.append(
                {
                    "source": source,
                    "target": f"s/Mtok at {mine[-1]['target_tokens']:,} <= {TARGET_LINEARITY} x s/Mtok at "
                    f"{mine[-2]['target_tokens']:,}",
                    "value": last,
                    "at_tokens": mine[-1]["target_tokens"],
                    "met": last <= TARGET_LINEARITY,
                }
            )
    print("\ntargets:")
    for check in checks:
        print(
            f"  {check['source']:17} {check['target']:48} {check['value']:>6.2f}  {'met' if check['met'] else 'MISSED'}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "budget": args.budget,
                "repeat": args.repeat,
                "english_source": books_note,
                "counter": counter.name,
                "floor": "tiktoken cl100k_base (offline) encode_ordinary of the whole text, one call, one thread",
                "peak_memory": "tracemalloc peak of one untimed chunk_text call, above the level at its start",
                "machine": {
                    "arch": platform.machine(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "tiktoken": getattr(tiktoken, "__version__", None),
                },
                "targets": {"ratio_max": TARGET_RATIO, "linearity_max": TARGET_LINEARITY},
                "checks": checks,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
