"""The served model's own token counts, through its server's tokenize endpoint (SGLang
``/v1/tokenize``, vLLM ``/tokenize``, llama.cpp ``/tokenize``, llama-cpp-python
``/extras/tokenize/count``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import transport
from ..errors import LlmxmrError
from ..tokens import TiktokenCounter


class ServerTokenCounter:
    """The served model's own tokenizer, through the server's tokenize endpoint.

    Servers that take a list (SGLang) get texts in batches; others one text a request, which is why
    the chunker only asks it to check whole chunks (see ``chunking.chunk_text``'s ``estimator``).

    Counting must never fail a run: a busy server with one slot (llama-cpp-python's) answers a
    tokenize request only after the generations queued before it, which can take minutes. So a
    request gets ``COUNT_TIMEOUT_S``, and a batch the server does not count in time (or fails to
    count) is estimated with tiktoken instead, raised by ``safety_margin``, the share of the window
    that inexact counts keep free (``chunking.safety_margin``, which the client passes on), so that
    the estimate errs on the large side where exact counts leave no margin.
    ``estimated`` counts the texts estimated so, for the trace."""

    exact = True
    BATCH = 256
    COUNT_TIMEOUT_S = transport.COUNT_TIMEOUT_S

    def __init__(
        self,
        base_url: str,
        path: str,
        field: str,
        api_key: str | None = None,
        *,
        extra: dict[str, object] | None = None,
        batches: bool = False,
        safety_margin: float,
    ) -> None:
        self._endpoints = transport.ServerEndpoints(base_url, api_key, timeout_s=self.COUNT_TIMEOUT_S)
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
        body = self._endpoints.post_json(self._path, {self._field: payload, **self._extra})
        if "count" in body:
            found = body["count"]
        else:
            tokens = body["tokens"]
            found = [len(t) for t in tokens] if isinstance(payload, list) else len(tokens)
        return [int(n) for n in found] if isinstance(found, list) else [int(found)]

    def close(self) -> None:
        self._endpoints.close()
