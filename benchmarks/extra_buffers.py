"""llama.cpp's extra buffer types on this machine: the probe's one-time cost, and prefill speed
with them on and off.

    python benchmarks/extra_buffers.py [--prompt-tokens 2300] [--repeats 3]

The probe (``llmxmr.llama_safety.probe``) is the child process that ``embedded.extra_buffers: auto``
runs once per machine, llama-cpp-python version and model file. Prefill is timed in a child process
per setting (turning extra buffer types off is process-wide): the bundled model reads a prompt as
long as a map call's, ``--repeats`` times, and the best time counts. A setting whose child dies by
a signal is reported as such (the CPU cannot run it). Prints a table and writes
``benchmarks/results/extra_buffers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from llmxmr.clients.embedded import default_model_path
from llmxmr.llama_safety import cpu_fingerprint, probe, probe_command, signal_name

RESULTS = Path(__file__).parent / "results" / "extra_buffers.json"

# Run in a child: load the model with extra buffer types on or off and time its prefill.
_PREFILL = """
import json, sys, time
from llama_cpp import Llama
from llmxmr.llama_safety import disable_extra_buffer_types
path, setting = sys.argv[1], sys.argv[2]
prompt_tokens, repeats, threads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if setting == "off":
    disable_extra_buffer_types()
llama = Llama(path, n_ctx=max(4096, prompt_tokens + 64), n_threads=threads, verbose=False)
tokens = llama.tokenize(("The grass is green. The sky is blue. " * (prompt_tokens // 8)).encode())[:prompt_tokens]
best = float("inf")
for _ in range(repeats):
    llama.reset()
    started = time.perf_counter()
    llama.eval(tokens)
    best = min(best, time.perf_counter() - started)
print(json.dumps({"tokens": len(tokens), "seconds": best}))
"""


def prefill(setting: str, prompt_tokens: int, repeats: int, threads: int) -> dict[str, object]:
    command = [
        sys.executable,
        "-c",
        _PREFILL,
        str(default_model_path()),
        setting,
        str(prompt_tokens),
        str(repeats),
        str(threads),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        how = signal_name(-finished.returncode) if finished.returncode < 0 else f"exit {finished.returncode}"
        return {"extra_buffers": setting, "died": how}
    measured = json.loads(finished.stdout.strip().splitlines()[-1])
    return {
        "extra_buffers": setting,
        "prompt_tokens": measured["tokens"],
        "prefill_s": round(measured["seconds"], 3),
        "tokens_per_s": round(measured["tokens"] / measured["seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=2300, help="A map call's prompt at 2k-token chunks.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    model = default_model_path()

    verdict = probe(probe_command(model))
    rows = [prefill(setting, args.prompt_tokens, args.repeats, threads) for setting in ("on", "off")]

    amx = (
        sorted({flag for flag in Path("/proc/cpuinfo").read_text().split() if flag.startswith("amx")})
        if Path("/proc/cpuinfo").exists()
        else []
    )
    print(
        f"probe: {'safe' if verdict.safe else 'unsafe'} ({verdict.detail}) in {verdict.seconds:.2f} s; "
        f"CPU AMX flags: {', '.join(amx) or 'none'}"
    )
    print(f"{'extra buffers':<14}{'prompt tokens':>14}{'prefill s':>11}{'tokens/s':>10}")
    for row in rows:
        if "died" in row:
            print(f"{row['extra_buffers']:<14}{'died: ' + str(row['died']):>35}")
        else:
            print(
                f"{row['extra_buffers']:<14}{row['prompt_tokens']:>14,}{row['prefill_s']:>11.3f}{row['tokens_per_s']:>10,.1f}"
            )
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "threads": threads,
        "amx_flags": amx,
        "cpu": cpu_fingerprint(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"machine": machine, "model": model.name, "probe": verdict.model_dump(), "prefill": rows}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
