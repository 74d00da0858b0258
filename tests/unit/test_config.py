from __future__ import annotations

import pytest

from llmxmr.config import PipelineConfig
from llmxmr.errors import ConfigError
from llmxmr.prompts import TASK_FAMILIES, load_prompts
from llmxmr.resources import data_dir


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("LLMXMR_BASE_URL", "LLMXMR_API_KEY", "LLMXMR_MODEL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_come_from_the_packaged_yaml():
    config = PipelineConfig.load()
    assert (data_dir("configs") / "default.yaml").is_file()
    assert config.task_type == "qa" and config.llm.base_url is None and config.llm.concurrency is None
    assert config.llm.concurrency_per_worker == 64  # each server or gateway worker
    assert config.uses_embedded_model and config.chunk_token_cap == config.embedded.chunk_tokens


def test_precedence_defaults_yaml_environment_flags(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("llm:\n  base_url: http://yaml/v1\n  model: from-yaml\n  concurrency: 8\n")
    assert PipelineConfig.load(path).llm.base_url == "http://yaml/v1"
    monkeypatch.setenv("LLMXMR_BASE_URL", "http://env/v1")
    config = PipelineConfig.load(path)
    assert config.llm.base_url == "http://env/v1" and config.llm.model == "from-yaml"
    config = PipelineConfig.load(path, **{"llm.base_url": "http://flag/v1", "llm.concurrency": None})
    assert config.llm.base_url == "http://flag/v1"
    assert config.llm.concurrency == 8  # an unset flag (None) does not override
    assert not config.uses_embedded_model and config.chunk_token_cap is None


def test_api_key_is_kept_secret(monkeypatch):
    monkeypatch.setenv("LLMXMR_API_KEY", "sk-very-secret")
    config = PipelineConfig.load()
    assert config.llm.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in config.model_dump_json() and "sk-very-secret" not in repr(config)


def test_sglang_profile_is_valid():
    config = PipelineConfig.load(data_dir("configs") / "sglang-minicpm3.yaml")
    assert config.llm.context_window == 32768


@pytest.mark.parametrize("family", TASK_FAMILIES)
def test_every_family_lays_its_map_prompt_out_document_first(family):
    """The system message and the map instructions (the same for every map call of the family),
    then the chunk, then the question."""
    prompts = load_prompts(family)
    system, user = prompts.messages("map", question="QUESTION-TEXT", chunk="CHUNK-TEXT")
    other_system, other_user = prompts.messages("map", question="other", chunk="other")
    assert system.content == other_system.content and other_user.content.startswith(prompts.map_head)
    assert "$" not in system.content + prompts.map_head and "QUESTION-TEXT" not in prompts.map_head
    chunk_at = user.content.index("CHUNK-TEXT")
    assert user.content.startswith(prompts.map_head) and chunk_at - len(prompts.map_head) < 20
    assert chunk_at < user.content.index("QUESTION-TEXT")
    assert len(user.content) - chunk_at - len("CHUNK-TEXT") - len("QUESTION-TEXT") < 250
    assert "$" not in prompts.collapse.replace("$partials", "").replace("$question", "")


def test_prompt_with_unknown_placeholder_is_rejected(tmp_path):
    root = tmp_path / "prompts"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "system.md").write_text("system")
    (root / "qa").mkdir()
    (root / "qa" / "map.md").write_text("$chunk $question $oops")
    (root / "qa" / "map_system.md").write_text("instructions")
    (root / "qa" / "collapse.md").write_text("$question $partials")
    (root / "qa" / "reduce.md").write_text("$question $partials")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_prompts("qa", root)


@pytest.mark.parametrize(
    ("map_template", "instructions", "problem"),
    [
        ("Question: $question\n<document_part>\n$chunk\n</document_part>", "instructions", "the chunk must come first"),
        ("<document_part>\n$chunk\n</document_part>\n$question\n" + "x" * 300, "instructions", "short ask"),
        ("<document_part>\n$chunk\n</document_part>\n$question", "Answer $question", "no placeholder"),
    ],
)
def test_a_map_prompt_that_is_not_document_first_is_rejected(tmp_path, map_template, instructions, problem):
    root = tmp_path / "prompts"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "system.md").write_text("system")
    (root / "qa").mkdir()
    (root / "qa" / "map.md").write_text(map_template)
    (root / "qa" / "map_system.md").write_text(instructions)
    (root / "qa" / "collapse.md").write_text("$question $partials")
    (root / "qa" / "reduce.md").write_text("$question $partials")
    with pytest.raises(ConfigError, match=problem):
        load_prompts("qa", root)


def test_unknown_task_type():
    with pytest.raises(ConfigError, match="unknown task type 'poetry'"):
        load_prompts("poetry")
