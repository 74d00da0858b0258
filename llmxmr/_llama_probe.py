"""The child that ``llama_safety.probe`` runs: load a GGUF with llama.cpp's defaults (extra buffer
types on) and decode. On a CPU that advertises instructions it traps, this process dies by a
signal, which is the verdict; exit 0 means the defaults work here.

Usage: python -m llmxmr._llama_probe MODEL.gguf
"""

from __future__ import annotations

import sys

# A prompt of some tens of tokens and one generated token: both the batched prefill kernels and
# the single-token ones run, with the weights in their repacked buffers.
PROMPT = "The pass key is 12345. Remember it. " * 4 + "What is the pass key?"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m llmxmr._llama_probe MODEL.gguf", file=sys.stderr)
        return 2
    from llama_cpp import Llama

    llama = Llama(model_path=argv[1], n_ctx=256, verbose=False)
    llama.create_completion(PROMPT, max_tokens=2, temperature=0.0)
    llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
