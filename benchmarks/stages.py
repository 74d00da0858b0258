"""A model per stage: cost and wall time of one model for every stage against a cheap, fast model for
the map and an expensive, slow one for collapse and reduce.

    python benchmarks/stages.py [--chunks 64] [--chunk-tokens 1024] [--info-rate 0.5] [--reply-tokens 200]
                                [--max-model-len 8192]
                                [--cheap-latency fixed:0.1] [--cheap-slots 16] [--cheap-prefill-tokens-per-s 20000]
                                [--strong-latency fixed:0.6] [--strong-slots 4] [--strong-prefill-tokens-per-s 4000]
                                [--cheap-prompt-price 0.00015] [--cheap-completion-price 0.0006]
                                [--strong-prompt-price 0.0025] [--strong-completion-price 0.01]
                                [--setups strong,split,cheap] [--repeat 1] [--seed 0] [--out FILE]
    python benchmarks/stages.py --map-base-url embedded --reduce-base-url http://127.0.0.1:8080/v1 \\
                                [--document FILE] [--question TEXT] [...prices] [--out FILE]

**Simulated** (the default): two simulated servers (``benchmarks/simserver.py``, each in its own
process) stand for two models. The cheap one (``sim-cheap``) answers each request after
``--cheap-latency`` on one of ``--cheap-slots`` slots and computes prompts at
``--cheap-prefill-tokens-per-s``; the strong one (``sim-strong``) likewise with its own figures,
slower by default. Both answer alike (the simulated server has no model: what is measured is cost
and time, not the answers' quality), and both report ``--max-model-len`` (8192) as their window.
The document is ``benchmarks/overhead.py``'s: ``--chunks`` paragraphs of distinct sentences that
split into exactly that many chunks of ``--chunk-tokens`` (``chunking.chunk_tokens``; so every
setup reads the same chunks). ``--info-rate`` of the map prompts get an answer of about
``--reply-tokens`` tokens, the rest null, so long documents collapse.

**Real** (``--map-base-url`` and ``--reduce-base-url``, each a server's URL or ``embedded``): the
map model and the reduce model as given, e.g. the embedded model for the map and
``llmxmr serve --local`` (another GGUF) for collapse and reduce. ``--document`` (else the generated
one), ``--question``; tokens are counted by each model's own tokenizer (``llm.tokenizer: auto``).
"cheap" is the map's model and "strong" the reduce's, for the setups and the prices.

Setups (``--setups``), each one ``MapReducePipeline.run`` with a fresh client per model:

* **strong**: the strong model for every stage (``llm.base_url``);
* **split**: the cheap model for the map (``stages.map.llm.base_url``), the strong one for collapse
  and reduce (``llm.base_url``);
* **cheap**: the cheap model for every stage.

Columns: chunks; calls per stage (map/collapse/reduce); prompt and completion tokens (as the
servers report them: the simulated server counts characters // 4); **cost** in dollars, each
call's tokens at the price per 1,000 tokens of the model of its stage (``--*-prompt-price``,
``--*-completion-price``); **wall s** around ``run()``, the median of ``--repeat`` runs; both also
relative to the first setup. The JSON (``benchmarks/results/stages.json``, or ``--out``) has every
run with each model's calls, tokens and cost (``Totals.by_model``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from overhead import build_document
from reporting import machine
from simserver import start_server

from llmxmr import MapReducePipeline, PipelineConfig, PipelineResult
from llmxmr.chunking import chunk_text
from llmxmr.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results" / "stages.json"
QUESTION = "Who paid the rent for the northern estate, and on which day?"
STAGES = ("map", "collapse", "reduce")
# Which model serves each stage, in each setup.
SETUPS: dict[str, dict[str, str]] = {
    "strong": {"map": "strong", "collapse": "strong", "reduce": "strong"},
    "split": {"map": "cheap", "collapse": "strong", "reduce": "strong"},
    "cheap": {"map": "cheap", "collapse": "cheap", "reduce": "cheap"},
}


def settings(setup: str, urls: dict[str, str], args: argparse.Namespace) -> PipelineConfig:
    """The run's config: ``llm`` is the model of collapse and reduce, the map's is its own when it differs."""
    roles = SETUPS[setup]
    overrides: dict[str, Any] = {"llm.base_url": urls[roles["reduce"]], "chunking.chunk_tokens": args.chunk_tokens}
    if roles["map"] != roles["reduce"]:
        overrides["stages.map.llm.base_url"] = urls[roles["map"]]
    if not args.real:
        overrides["llm.tokenizer"] = "tiktoken"  # what the simulated servers count in
    return PipelineConfig.load(**overrides)


def priced(result: PipelineResult, roles: dict[str, str], prices: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Each call's tokens at the prices of its stage's model, and each model's share."""
    per_role: dict[str, dict[str, float]] = {}
    for record in result.trace.calls:
        role = roles[record.stage]
        prompt, completion = prices[role]
        spent = per_role.setdefault(role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})
        spent["calls"] += 1
        spent["prompt_tokens"] += record.prompt_tokens
        spent["completion_tokens"] += record.completion_tokens
        spent["cost"] += record.prompt_tokens / 1000 * prompt + record.completion_tokens / 1000 * completion
    return {role: {**spent, "cost": round(spent["cost"], 6)} for role, spent in per_role.items()}


def run_setup(setup: str, urls: dict[str, str], document: str, args: argparse.Namespace) -> dict[str, Any]:
    prices = {"cheap": (args.cheap_prompt_price, args.cheap_completion_price)}
    prices["strong"] = (args.strong_prompt_price, args.strong_completion_price)
    roles = SETUPS[setup]
    walls: list[float] = []
    result: PipelineResult | None = None
    for _ in range(args.repeat):
        pipeline = MapReducePipeline(settings(setup, urls, args))
        started = time.perf_counter()
        result = pipeline.run(document, args.question)
        walls.append(time.perf_counter() - started)
    assert result is not None
    totals = result.trace.totals
    by_role = priced(result, roles, prices)
    return {
        "setup": setup,
        "roles": roles,
        "models": [use.model_dump() for use in result.models],
        "chunks": len(result.chunks),
        "calls": {stage: sum(1 for c in result.trace.calls if c.stage == stage) for stage in STAGES},
        "failed_calls": len(result.failed_calls),
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "by_model": {model: spent.model_dump() for model, spent in totals.by_model.items()},
        "by_role": by_role,
        "cost": round(sum(spent["cost"] for spent in by_role.values()), 6),
        "wall_s": round(statistics.median(walls), 3),
        "wall_s_runs": [round(w, 3) for w in walls],
        "status": result.status,
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| setup | map | collapse, reduce | chunks | calls (map/collapse/reduce) | prompt tokens | completion tokens "
        "| cost $ | cost × | wall s | wall × |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        calls = "/".join(str(row["calls"][stage]) for stage in STAGES)
        cost_ratio = row["cost"] / base["cost"] if base["cost"] else float("nan")
        lines.append(
            f"| {row['setup']} | {row['roles']['map']} | {row['roles']['reduce']} | {row['chunks']} | {calls} "
            f"| {row['prompt_tokens']:,} | {row['completion_tokens']:,} | {row['cost']:.4f} | {cost_ratio:.2f} "
            f"| {row['wall_s']:.2f} | {row['wall_s'] / base['wall_s']:.2f} |"
        )
    lines += ["", "| setup | model | calls | prompt tokens | completion tokens | cost $ |", "|---|---|--:|--:|--:|--:|"]
    for row in rows:
        for role, spent in row["by_role"].items():
            lines.append(
                f"| {row['setup']} | {role} | {spent['calls']} | {spent['prompt_tokens']:,} "
                f"| {spent['completion_tokens']:,} | {spent['cost']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64, help="chunks of the generated document")
    parser.add_argument("--chunk-tokens", type=int, default=1024)
    parser.add_argument("--info-rate", type=float, default=0.5, help="simulated: map prompts answered with information")
    parser.add_argument("--reply-tokens", type=int, default=200, help="simulated: tokens of an informative reply")
    parser.add_argument("--max-model-len", type=int, default=8192, help="simulated: both models' window")
    for role, latency, slots, prefill in (("cheap", "fixed:0.1", 16, 20000.0), ("strong", "fixed:0.6", 4, 4000.0)):
        parser.add_argument(f"--{role}-latency", default=latency, help=f"simulated: the {role} model's latency")
        parser.add_argument(f"--{role}-slots", type=int, default=slots, help=f"simulated: the {role} model's slots")
        parser.add_argument(
            f"--{role}-prefill-tokens-per-s", type=float, default=prefill, help=f"simulated: the {role} model's prefill"
        )
    # Dollars per 1,000 tokens; by default about those of gpt-4o-mini (cheap) and gpt-4o (strong).
    parser.add_argument("--cheap-prompt-price", type=float, default=0.00015)
    parser.add_argument("--cheap-completion-price", type=float, default=0.0006)
    parser.add_argument("--strong-prompt-price", type=float, default=0.0025)
    parser.add_argument("--strong-completion-price", type=float, default=0.01)
    parser.add_argument("--setups", default="strong,split,cheap", help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setup (the wall time is their median)")
    parser.add_argument("--map-base-url", help="real: the map model's server, or embedded")
    parser.add_argument("--reduce-base-url", help="real: the collapse and reduce model's server, or embedded")
    parser.add_argument("--document", type=Path, help="real: a text file to read (default: the generated document)")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.real = bool(args.map_base_url or args.reduce_base_url)
    if args.real and not (args.map_base_url and args.reduce_base_url):
        parser.error("the real mode takes both --map-base-url and --reduce-base-url")
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if not setups or any(s not in SETUPS for s in setups):
        parser.error(f"--setups takes {', '.join(SETUPS)}")

    counter = TiktokenCounter()
    if args.document is not None:
        document = args.document.read_text(encoding="utf-8")
    else:
        document = build_document(args.chunks, args.chunk_tokens, counter, args.seed)
        chunks = len(chunk_text(document, args.chunk_tokens, counter))
        if chunks != args.chunks:
            sys.exit(f"the generated document splits into {chunks} chunks, not {args.chunks}")

    with ExitStack() as servers:
        if args.real:
            urls = {"cheap": args.map_base_url, "strong": args.reduce_base_url}
        else:
            urls = {}
            for role in ("cheap", "strong"):
                url, _ = servers.enter_context(
                    start_server(
                        latency=getattr(args, f"{role}_latency"),
                        slots=getattr(args, f"{role}_slots"),
                        prefill_tokens_per_s=getattr(args, f"{role}_prefill_tokens_per_s"),
                        seed=args.seed,
                        info_rate=args.info_rate,
                        reply_tokens=args.reply_tokens,
                        max_model_len=args.max_model_len,
                        model=f"sim-{role}",
                    )
                )
                urls[role] = url
        rows = []
        for setup in setups:
            rows.append(run_setup(setup, urls, document, args))
            row = rows[-1]
            print(
                f"{setup}: {row['chunks']} chunks, {sum(row['calls'].values())} calls, ${row['cost']:.4f}, "
                f"{row['wall_s']:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    print(table(rows))
    report = {
        "machine": machine(),
        "mode": "real" if args.real else "simulated",
        "parameters": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
            if key not in ("out", "real")
        },
        "prices_per_1k_tokens": {
            "cheap": {"prompt": args.cheap_prompt_price, "completion": args.cheap_completion_price},
            "strong": {"prompt": args.strong_prompt_price, "completion": args.strong_completion_price},
        },
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
