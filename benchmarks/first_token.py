"""Time to the first answer token against time to the whole answer, with the reduce reply streamed.

    python benchmarks/first_token.py [--token-delays 0.01,0.03] [--reply-tokens 50,200] [--chunks 16]
                                     [--chunk-tokens 256] [--latency fixed:0.2] [--info-rate 0.2]
                                     [--repeat 3] [--seed 0]
    python benchmarks/first_token.py --base-url URL [--model NAME] [--api-key KEY]
                                     [--input FILE --question TEXT] [--task-type qa] [--chunks 16]
                                     [--chunk-tokens 256] [--repeat 3]

Each run is one question through ``MapReducePipeline.astream`` (the library's event stream, a fresh
client per run, as a user gets it), timed from the call: when the reduce call was started
(``ReduceStarted``), when the first characters of its answer field arrived (the first
``AnswerDelta``: what ``llmxmr run`` prints first on a terminal), and when the result came
(``FinalResult``: the reply complete and checked, which is when the answer is printed without
streaming, or by a server that cannot stream). Every call of a run streams either way (the loop
watch reads each reply as it grows), so the two times come from the same run.

**Simulated** (the default): ``benchmarks/simserver.py`` in its own process, with a sampled latency
before each reply (``--latency``: queueing and prefill) and ``--token-delay-s`` per piece of about a
token after it (decoding), one row per token delay and reduce reply size. The reduce reply is the
schema's order: its ``rationale`` first (``--reply-tokens`` × 2 characters of filler), then the
answer, the confidence and the supporting chunks, so the answer starts late in the reply; the
map replies of informative chunks (``--info-rate``) are of the same size. The document is
generated, one paragraph per chunk (``--chunks`` of ``--chunk-tokens``); grounding is off, since
the simulated replies are no real answers (the reduce's answer then stands as streamed).

**A real server** (``--base-url``): your document and question (``--input``, ``--question``), or
else a generated one with a planted code and the question that asks for it; the settings are
``configs/default.yaml``'s (``--task-type``, grounding on). One row per repeat.

Columns (seconds from the start of the run; medians of ``--repeat`` runs in the simulated rows):

* **reduce**: when the reduce call was started;
* **first token**: when the first characters of the answer arrived;
* **whole**: when the result came (the whole answer);
* **saved**: whole - first token: how much sooner a reader sees the answer begin;
* **wait share**: (first token - reduce) / (whole - reduce): the part of the reduce's wait that is
  still spent before the answer begins (1.0: streaming shows nothing sooner);
* **reduce tokens**: the reduce reply's completion tokens; **kept**: whether the result's answer is
  the streamed one (the check may replace it).

Prints a table and writes benchmarks/results/first_token.json (with ``--base-url``,
first_token_server.json): machine, parameters, every run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from overhead import build_document
from reporting import machine, write_report
from simserver import start_server

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.events import AnswerDelta, ReduceStarted
from llmxmr.pipeline import FinalResult
from llmxmr.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results" / "first_token.json"
SERVER_RESULTS = Path(__file__).parent / "results" / "first_token_server.json"
SIM_QUESTION = "Who paid the rent for the northern estate, and on which day?"
PLANTED = "The code of the northern vault is 4817."
PLANTED_QUESTION = "What is the code of the northern vault?"


async def timed_run(config: PipelineConfig, document: str, question: str) -> dict[str, Any]:
    """One run through ``astream``: its event times (seconds from the call) and what it answered."""
    pipeline = MapReducePipeline(config)
    started = time.perf_counter()
    times: dict[str, float] = {}
    streamed = ""
    deltas = 0
    result = None
    async for event in pipeline.astream(document, question):
        now = time.perf_counter() - started
        if isinstance(event, ReduceStarted):
            times.setdefault("reduce_s", now)
        elif isinstance(event, AnswerDelta):
            times.setdefault("first_token_s", now)
            times["answer_written_s"] = now
            streamed = event.text if event.restart else streamed + event.text
            deltas += 1
        elif isinstance(event, FinalResult):
            times["whole_s"] = now
            result = event.result
    assert result is not None
    reduce = next((record for record in result.trace.calls if record.stage == "reduce"), None)
    return {
        **{key: round(value, 4) for key, value in times.items()},
        "answer_deltas": deltas,
        "calls": len(result.trace.calls),
        "chunks": len(result.chunks),
        "reduce_completion_tokens": reduce.completion_tokens if reduce else None,
        "status": result.status,
        "answer": result.answer,
        "streamed_answer": streamed,
        "kept": bool(streamed) and streamed == result.answer,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of a setting's runs (a run without a streamed answer has no first token)."""

    def median(key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return round(statistics.median(values), 4) if values else None

    row: dict[str, Any] = {key: median(key) for key in ("reduce_s", "first_token_s", "answer_written_s", "whole_s")}
    first, whole, reduce = row["first_token_s"], row["whole_s"], row["reduce_s"]
    row["saved_s"] = round(whole - first, 4) if first is not None and whole is not None else None
    waited = (whole - reduce) if whole is not None and reduce is not None else None
    row["wait_share"] = round((first - reduce) / waited, 3) if first is not None and waited else None
    row["reduce_completion_tokens"] = median("reduce_completion_tokens")
    row["calls"] = median("calls")
    row["kept"] = f"{sum(run['kept'] for run in runs)}/{len(runs)}"
    return row


def figure(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


HEADER = (
    f"{'source':10}  {'token delay s':>13}  {'reply tokens':>12}  {'calls':>5}  {'reduce':>7}  {'first token':>11}  "
    f"{'whole':>7}  {'saved':>6}  {'wait share':>10}  {'reduce tokens':>13}  {'kept':>5}"
)


def print_row(source: str, delay: float | None, reply_tokens: int | None, row: dict[str, Any]) -> None:
    delay_text = f"{delay:>13g}" if delay is not None else f"{'-':>13}"
    reply_text = f"{reply_tokens:>12}" if reply_tokens is not None else f"{'-':>12}"
    print(
        f"{source:10}  {delay_text}  {reply_text}  {figure(row['calls'], 5, 0)}  {figure(row['reduce_s'], 7)}  "
        f"{figure(row['first_token_s'], 11)}  {figure(row['whole_s'], 7)}  {figure(row['saved_s'], 6)}  "
        f"{figure(row['wait_share'], 10, 3)}  {figure(row['reduce_completion_tokens'], 13, 0)}  {row['kept']:>5}",
        flush=True,
    )


def simulated(args: argparse.Namespace, document: str) -> list[dict[str, Any]]:
    rows = []
    for reply_tokens in [int(n) for n in args.reply_tokens.split(",")]:
        for delay in [float(d) for d in args.token_delays.split(",")]:
            with start_server(
                latency=args.latency,
                seed=args.seed,
                info_rate=args.info_rate,
                reply_tokens=reply_tokens,
                token_delay_s=delay,
            ) as (base_url, _):
                config = PipelineConfig.load(
                    **{
                        "llm.base_url": base_url,
                        "llm.tokenizer": "tiktoken",
                        "chunking.chunk_tokens": args.chunk_tokens,
                        "grounding.mode": "off",
                    }
                )
                runs = [asyncio.run(timed_run(config, document, SIM_QUESTION)) for _ in range(args.repeat)]
            row = {"source": "simulated", "token_delay_s": delay, "reply_tokens": reply_tokens, **summary(runs)}
            rows.append({**row, "runs": runs})
            print_row("simulated", delay, reply_tokens, row)
    return rows


def real(args: argparse.Namespace, document: str, question: str) -> list[dict[str, Any]]:
    settings: dict[str, Any] = {"llm.base_url": args.base_url, "chunking.chunk_tokens": args.chunk_tokens}
    if args.model:
        settings["llm.model"] = args.model
    if args.api_key:
        settings["llm.api_key"] = args.api_key
    if args.task_type:
        settings["task_type"] = args.task_type
    config = PipelineConfig.load(**settings)
    rows = []
    for number in range(args.repeat):
        run = asyncio.run(timed_run(config, document, question))
        row = {"source": "server", "repeat": number + 1, **summary([run])}
        rows.append({**row, "runs": [run]})
        print_row("server", None, None, row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-delays", default="0.01,0.03", help="simulated seconds per token, comma-separated")
    parser.add_argument("--reply-tokens", default="50,200", help="simulated reply sizes (the reduce's rationale)")
    parser.add_argument("--latency", default="fixed:0.2", help="simulated latency before each reply")
    parser.add_argument("--info-rate", type=float, default=0.2, help="simulated share of chunks holding information")
    parser.add_argument("--chunks", type=int, default=16, help="chunks of the generated document")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-url", help="a real OpenAI-compatible server instead of the simulated one")
    parser.add_argument("--model", help="with --base-url: the model (default: the first the server lists)")
    parser.add_argument("--api-key", help="with --base-url: its key (or LLMXMR_API_KEY)")
    parser.add_argument("--task-type", help="with --base-url: the task family (default: configs/default.yaml's)")
    parser.add_argument("--input", type=Path, help="with --base-url: the document (default: generated, a code planted)")
    parser.add_argument("--question", help="with --input: the question")
    parser.add_argument("--out", type=Path, help=f"default: {RESULTS.name}, with --base-url {SERVER_RESULTS.name}")
    args = parser.parse_args()
    if (args.input is None) != (args.question is None):
        parser.error("give --input and --question together")
    if args.input is not None and not args.base_url:
        parser.error("--input goes with --base-url (the simulated server answers any document alike)")

    generated = build_document(args.chunks, args.chunk_tokens, TiktokenCounter(), args.seed)
    print(HEADER)
    print("-" * len(HEADER))
    if args.base_url:
        if args.input is not None:
            document, question = args.input.read_text(encoding="utf-8"), args.question
        else:
            paragraphs = generated.split("\n\n")
            paragraphs.insert(len(paragraphs) * 2 // 3, PLANTED)
            document, question = "\n\n".join(paragraphs), PLANTED_QUESTION
        rows = real(args, document, question)
    else:
        rows = simulated(args, generated)

    args.out = args.out or (SERVER_RESULTS if args.base_url else RESULTS)
    report = {
        "machine": machine(),
        "parameters": {
            "source": "server" if args.base_url else "simulated",
            "base_url": args.base_url,
            "model": args.model,
            "input": str(args.input) if args.input else None,
            "question": args.question or (PLANTED_QUESTION if args.base_url else SIM_QUESTION),
            "token_delays": args.token_delays,
            "reply_tokens": args.reply_tokens,
            "latency": args.latency,
            "info_rate": args.info_rate,
            "chunks": args.chunks,
            "chunk_tokens": args.chunk_tokens,
            "repeat": args.repeat,
            "seed": args.seed,
        },
        "rows": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
