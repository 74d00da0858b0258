"""A model per stage: the map on one server, collapse and reduce on another. Each stage's calls
reach its own server, chunks follow the map model's window and the merges the reduce model's, each
model's profile applies to its own stages, each client has its own call budget, the reply cache
keeps each model's replies apart, and ``--dry-run`` prices each model as the run then spends."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.budget import prompt_tokens
from llmxmr.cli import main
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.errors import ConfigError
from llmxmr.estimate import estimate_cost, format_estimate
from llmxmr.stage_models import StageBudgets, StageClients

from ..conftest import WordCounter, final_reply, partial_reply
from ..fake_server import Answer, completion, fake_server, models

WORDS = WordCounter()
QUESTION = "Which lamps are lit?"
# Every part states a fact of its own: every chunk answers, and the partials must collapse.
DOCUMENT = "\n\n".join(
    f"Part {n} reports that the lamp number {n} is lit. " + "The grass is green and the sky is blue. " * 12
    for n in range(1, 31)
)
FACT = re.compile(r"Part \d+ reports that the lamp number \d+ is lit\.")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("LLMXMR_BASE_URL", "LLMXMR_API_KEY", "LLMXMR_MODEL"):
        monkeypatch.delenv(name, raising=False)


def reply_text(schema: str, user: str, words: int = 30) -> str:
    """A stage's reply: a map reply quotes its chunk's first fact; replies are ``words`` long."""
    rationale = " ".join(f"why{n}" for n in range(words))  # none repeated: a reply that repeats itself is cut
    if schema == "MapOutput":
        fact = FACT.search(user.rsplit("<document_part>", 1)[-1])
        if fact is None:
            return partial_reply(None, 0, info="", rationale="")
        return partial_reply("lit", 4, info=fact.group(), rationale=rationale)
    if schema == "CollapseOutput":
        return partial_reply("lit", 4, info="merged lamps", rationale=rationale)
    return final_reply("lit", chunks=[0])


def scripted(model: str, window: int, words: int | None = 30, delay_s: float = 0.0) -> ScriptedClient:
    """A scripted model that reports the prompt tokens of each request (one per word). With
    ``words`` None, replies fill their ``max_tokens``."""

    def reply(request: ChatRequest) -> ChatReply:
        length = words
        if length is None:
            length = request.max_tokens - len(
                reply_text(request.schema_name or "", request.messages[-1].content, 0).split()
            )
        text = reply_text(request.schema_name or "", request.messages[-1].content, length)
        assert len(text.split()) <= request.max_tokens
        return ChatReply(text=text, prompt_tokens=prompt_tokens(request.messages, WORDS), completion_tokens=7)

    return ScriptedClient(responder=reply, window=window, counter=WordCounter(), model=model, delay_s=delay_s)


def settings(**overrides) -> PipelineConfig:
    values = {
        "generation.map_max_tokens": 60,
        "generation.collapse_max_tokens": 60,
        "generation.reduce_max_tokens": 60,
        **overrides,
    }
    return PipelineConfig.load(**values)


# ---- the settings -------------------------------------------------------------------------------


def test_a_stage_takes_llm_settings_it_does_not_set_and_collapse_follows_reduce():
    config = PipelineConfig.load(
        **{
            "llm.base_url": "http://default/v1",
            "llm.api_key": "key",
            "llm.concurrency": 8,
            "stages.map.llm.base_url": "embedded",
            "stages.reduce.llm.base_url": "http://strong/v1",
            "stages.reduce.llm.model": "big",
        }
    )
    mapping, collapsing, reducing = (config.for_stage(stage).llm for stage in ("map", "collapse", "reduce"))
    assert mapping.base_url is None and config.for_stage("map").uses_embedded_model  # embedded
    assert (reducing.base_url, reducing.model, reducing.concurrency) == ("http://strong/v1", "big", 8)
    assert reducing.api_key is not None and reducing.api_key.get_secret_value() == "key"
    assert collapsing == reducing  # collapse follows reduce
    own = PipelineConfig.load(**{"stages.reduce.llm.model": "big", "stages.collapse.llm.concurrency": 2})
    assert own.for_stage("collapse").llm.model is None  # its own settings: llm's, not reduce's
    assert own.for_stage("collapse").llm.concurrency == 2
    plain = PipelineConfig.load()
    assert all(plain.for_stage(stage) is plain for stage in ("map", "collapse", "reduce"))  # the run as it was
    assert PipelineConfig.load(**{"llm.base_url": "embedded"}).uses_embedded_model


def test_a_stage_setting_that_is_wrong_is_one_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\.map\.llm\.concurrency"):
        PipelineConfig.load(**{"stages.map.llm.concurrency": 0})
    with pytest.raises(ConfigError, match=r"stages\.reduce\.llm\.profile: no model profile 'nope'"):
        PipelineConfig.load(**{"stages.reduce.llm.profile": "nope"})
    path = tmp_path / "mine.yaml"
    path.write_text("stages:\n  reduce:\n    llm:\n      cache: x.sqlite\n")  # one reply cache for every model
    with pytest.raises(ConfigError, match=r"stages\.reduce\.llm\.cache"):
        PipelineConfig.load(path)


def test_stages_that_agree_share_a_client_and_a_budget():
    opened: list[PipelineConfig] = []

    def opener(config: PipelineConfig) -> ScriptedClient:
        opened.append(config)
        return ScriptedClient(parallel=None)

    plain = StageClients.open(PipelineConfig.load(**{"llm.base_url": "http://one/v1"}), opener)
    assert len(opened) == 1 and plain.map is plain.collapse is plain.reduce
    config = PipelineConfig.load(
        **{"llm.base_url": "http://one/v1", "stages.map.llm.concurrency": 3, "stages.reduce.llm.concurrency": 5}
    )
    clients = StageClients.open(config, opener)
    assert clients.map is not clients.reduce and clients.collapse is clients.reduce and len(opened) == 3
    budgets = asyncio.run(StageBudgets.open(config, clients))
    assert (budgets.map.slots, budgets.reduce.slots) == (3, 5) and budgets.collapse is budgets.reduce
    # The embedded model is loaded once, whatever else the stages on it say.
    opened.clear()
    embedded = PipelineConfig.load(**{"stages.map.llm.model": "tiny", "stages.reduce.llm.concurrency": 2})
    assert len({id(client) for _, client in StageClients.open(embedded, opener).distinct()}) == len(opened) == 1


# ---- two servers ---------------------------------------------------------------------------------


def server_scripts(model: str, window: int) -> dict:
    listing = models("vllm", max_model_len=window)
    listing.body["data"][0]["id"] = model

    def respond(body: dict) -> Answer:
        schema = body["response_format"]["json_schema"]["name"]
        return completion(reply_text(schema, body["messages"][-1]["content"]))

    return {"/v1/models": [listing], "/v1/chat/completions": respond}


def chat_schemas(server) -> list[str]:
    return [
        body["response_format"]["json_schema"]["name"]
        for path, body in server.requests
        if path.endswith("/chat/completions")
    ]


def two_server_config(map_url: str, reduce_url: str, **overrides) -> PipelineConfig:
    return settings(
        **{
            "llm.tokenizer": "tiktoken",
            "stages.map.llm.base_url": map_url,
            "stages.reduce.llm.base_url": reduce_url,
            **overrides,
        }
    )


def test_each_stage_reaches_its_own_server_and_the_chunks_follow_the_map_models_window():
    with (
        fake_server(server_scripts("small-model", 1024)) as small,
        fake_server(server_scripts("large-model", 2048)) as large,
    ):
        config = two_server_config(small.base_url, large.base_url)
        result = MapReducePipeline(config).run(DOCUMENT, QUESTION)
        small_calls, large_calls = chat_schemas(small), chat_schemas(large)
        # The same document read by the map model alone: the same chunks.
        alone = MapReducePipeline(settings(**{"llm.tokenizer": "tiktoken", "llm.base_url": small.base_url})).run(
            DOCUMENT, QUESTION
        )
        by_reduce_model = MapReducePipeline(
            settings(**{"llm.tokenizer": "tiktoken", "llm.base_url": large.base_url})
        ).run(DOCUMENT, QUESTION)
    assert not result.failed_calls
    stages = [record.stage for record in result.trace.calls]
    assert stages.count("map") == len(result.chunks) > 1 and "collapse" in stages  # the partials had to merge
    # Every map call reached the map's server, and every collapse and reduce call the other.
    assert small_calls == ["MapOutput"] * stages.count("map")
    schemas = {"collapse": "CollapseOutput", "reduce": "FinalAnswer"}
    assert sorted(large_calls) == sorted(schemas[s] for s in stages if s != "map")
    assert result.chunks == alone.chunks != by_reduce_model.chunks  # sized by the map model's window
    assert len(by_reduce_model.chunks) < len(result.chunks)
    # Every call names its model, and the totals are per model.
    assert {r.model for r in result.trace.calls if r.stage == "map"} == {"small-model"}
    assert {r.model for r in result.trace.calls if r.stage != "map"} == {"large-model"}
    by_model = result.trace.totals.by_model
    assert by_model["small-model"].calls == stages.count("map") and by_model["small-model"].stages == ["map"]
    assert by_model["large-model"].calls == len(stages) - stages.count("map")
    assert [(use.stages, use.model) for use in result.models] == [
        (["map"], "small-model"),
        (["collapse", "reduce"], "large-model"),
    ]
    assert result.model.startswith("map: ") and "collapse, reduce: " in result.model


def test_the_merges_are_sized_by_the_reduce_models_window():
    """The same map model and replies: a reduce model with a larger window takes more partials in
    one prompt, so fewer collapse calls are made (none at all once every partial fits)."""

    def collapses(reduce_window: int) -> int:
        reducing = scripted("large", reduce_window)
        clients = StageClients(scripted("small", 1000), reducing, reducing)
        result = MapReducePipeline(settings(**{"chunking.chunk_tokens": 120}), client=clients).run(DOCUMENT, QUESTION)
        return sum(record.stage == "collapse" for record in result.trace.calls)

    assert collapses(1000) > collapses(2000) > collapses(8000) == 0


# ---- profiles ---------------------------------------------------------------------------------------

BUNDLED = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"  # the smollm2-135m profile caps strings at 200 chars


def capped(request: ChatRequest) -> bool:
    return '"maxLength": 200' in json.dumps(request.json_schema)


@pytest.mark.parametrize("small_on", ["map", "reduce"])
def test_each_models_profile_applies_to_its_own_stages_only(small_on):
    small, strong = scripted(BUNDLED, 4000), scripted("Qwen/Qwen2.5-7B-Instruct", 4000)
    mapping, reducing = (small, strong) if small_on == "map" else (strong, small)
    config = settings(task_type="retrieval")
    result = MapReducePipeline(config, client=StageClients(mapping, reducing, reducing)).run(DOCUMENT, QUESTION)
    maps = [request for request in mapping.requests if request.schema_name == "MapOutput"]
    merges = [request for request in reducing.requests if request.schema_name != "MapOutput"]
    assert maps and merges and len(mapping.requests) == len(maps) and len(reducing.requests) == len(merges)
    assert all(capped(request) == (small_on == "map") for request in maps)
    assert all(capped(request) == (small_on == "reduce") for request in merges)
    # The bundled model's profile asks a retrieval question before the chunk too, in its maps only.
    assert all((QUESTION in r.messages[-1].content.split("<document_part>")[0]) == (small_on == "map") for r in maps)
    # Its chunk size (2048 tokens) is a map setting: it sizes chunks only when it reads them.
    assert (max(c.tokens for c in result.chunks) <= 2048) == (small_on == "map")
    profiles = {tuple(use.stages): use.profile for use in result.models}
    small_stages = ("map",) if small_on == "map" else ("collapse", "reduce")
    assert profiles[small_stages] == "smollm2-135m" and set(profiles.values()) == {"smollm2-135m", None}
    assert result.model_profile is None  # not one profile for the whole run


def test_a_stage_names_its_profile():
    config = settings(**{"stages.reduce.llm.profile": "smollm2-135m"})
    mapping, reducing = scripted("a-model", 4000), scripted("another-model", 4000)
    MapReducePipeline(config, client=StageClients(mapping, reducing, reducing)).run(DOCUMENT, QUESTION)
    assert not any(capped(r) for r in mapping.requests) and all(capped(r) for r in reducing.requests)


# ---- budgets --------------------------------------------------------------------------------------


def test_each_client_has_its_own_call_budget():
    mapping, reducing = scripted("small", 1000, delay_s=0.01), scripted("large", 1000, delay_s=0.01)
    overrides = {"stages.map.llm.concurrency": 3, "stages.reduce.llm.concurrency": 1, "chunking.chunk_tokens": 120}
    config = settings(**overrides)
    clients = StageClients(mapping, reducing, reducing)
    budgets = asyncio.run(StageBudgets.open(config, clients))
    assert (budgets.map.slots, budgets.reduce.slots) == (3, 1)
    MapReducePipeline(config, client=clients).run(DOCUMENT, QUESTION)
    assert mapping.max_in_flight == 3 and reducing.max_in_flight == 1


# ---- the reply cache --------------------------------------------------------------------------------


def test_the_reply_cache_keeps_each_models_replies_apart(tmp_path):
    cache = str(tmp_path / "replies.sqlite")
    with (
        fake_server(server_scripts("small-model", 1024)) as small,
        fake_server(server_scripts("large-model", 2048)) as large,
    ):

        def run(map_url: str, reduce_url: str, window: int):
            config = two_server_config(map_url, reduce_url, **{"llm.cache": cache, "llm.context_window": window})
            before = len(chat_schemas(small)) + len(chat_schemas(large))
            result = MapReducePipeline(config).run(DOCUMENT, QUESTION)
            return result, len(chat_schemas(small)) + len(chat_schemas(large)) - before

        first, sent = run(small.base_url, large.base_url, 1024)
        assert sent == first.trace.totals.calls and first.trace.totals.cache_hits == 0
        again, sent = run(small.base_url, large.base_url, 1024)
        assert sent == 0 and again.trace.totals.cache_hits == again.trace.totals.calls
        assert again.trace.totals.by_model["small-model"].cache_hits == again.trace.totals.by_model["small-model"].calls
        # The same prompts, each stage on the other model: none of its replies is the other's.
        swapped, sent = run(large.base_url, small.base_url, 1024)
    assert swapped.trace.totals.cache_hits == 0 and sent == swapped.trace.totals.calls
    assert {r.model for r in swapped.trace.calls if r.stage == "map"} == {"large-model"}


# ---- batch results --------------------------------------------------------------------------------


def test_batch_results_give_each_models_calls_and_tokens(tmp_path):
    from llmxmr.batch import BatchItem, format_report, read_results, run_batch

    reducing = scripted("large", 2000)
    clients = StageClients(scripted("small", 1000), reducing, reducing)
    other = DOCUMENT.replace("grass", "moss")
    items = [BatchItem(id=1, question=QUESTION, document=DOCUMENT), BatchItem(id=2, question=QUESTION, document=other)]
    config = settings(**{"chunking.chunk_tokens": 120})
    report = asyncio.run(run_batch(items, tmp_path, config, client=clients))
    lines = read_results(tmp_path / "results.jsonl")
    for line in lines:
        assert set(line.models) == {"small", "large"} and line.models["small"].stages == ["map"]
        assert sum(spent.calls for spent in line.models.values()) == line.calls
        assert sum(spent.prompt_tokens for spent in line.models.values()) == line.prompt_tokens
    assert report.models["small"].calls == sum(line.models["small"].calls for line in lines)
    assert report.models["large"].prompt_tokens == sum(line.models["large"].prompt_tokens for line in lines)
    table = format_report(report)
    assert re.search(r"^model\s+small \(map\): [\d,]+ calls", table, re.M)
    assert re.search(r"^model\s+large \(collapse, reduce\): [\d,]+ calls", table, re.M)


# ---- --dry-run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["streaming", "barrier"])
def test_the_dry_run_gives_each_models_tokens_and_calls_as_the_run_then_spends(scheduler):
    """Replies as long as the plan allows: every stage's calls are the run's own, the map's prompt
    tokens exactly, the collapse and reduce model's within their bound."""
    config = settings(scheduler=scheduler, **{"chunking.chunk_tokens": 120})

    def clients() -> StageClients:
        mapping, reducing = scripted("small", 1000, words=None), scripted("large", 1600, words=None)
        return StageClients(mapping, reducing, reducing)

    figures = asyncio.run(estimate_cost(config, clients(), [(DOCUMENT, [QUESTION])]))
    result = MapReducePipeline(config, client=clients()).run(DOCUMENT, QUESTION)
    spent = result.trace.totals.by_model
    assert set(figures.by_model) == set(spent) == {"small", "large"}
    small, large = figures.by_model["small"], figures.by_model["large"]
    assert (small.calls, small.prompt_tokens) == (spent["small"].calls, spent["small"].prompt_tokens)  # exact
    assert not small.bound and large.bound
    assert large.calls == spent["large"].calls > 1  # collapse and reduce: as many as the run made
    assert spent["large"].prompt_tokens <= large.prompt_tokens
    assert figures.chunks == len(result.chunks) and figures.window == 1000  # the map model's window
    assert [(m.model, m.stages, m.window) for m in figures.models] == [
        ("small", ["map"], 1000),
        ("large", ["collapse", "reduce"], 1600),
    ]
    table = format_estimate(figures)
    assert re.search(r"small \(map\)\s+exactly", table) and re.search(r"large \(collapse, reduce\)\s+at most", table)


def test_one_model_prices_as_it_always_did():
    figures = asyncio.run(estimate_cost(settings(), scripted("only", 1000), [(DOCUMENT, [QUESTION])]))
    assert [m.stages for m in figures.models] == [["map", "collapse", "reduce"]]
    assert figures.by_model["only"] == figures.total
    assert not re.search(r"^model\s+calls", format_estimate(figures), re.M)  # no table of models


# ---- the command line -----------------------------------------------------------------------------


def test_the_stage_flags_open_a_client_per_model_and_embedded_is_accepted(tmp_path, monkeypatch):
    """--map-base-url embedded: the in-process model, here never loaded (the opener is replaced)."""
    opened: list[PipelineConfig] = []

    def opener(config: PipelineConfig) -> ScriptedClient:
        opened.append(config)
        name = "small" if config.uses_embedded_model else "large"
        return scripted(name, 4000 if name == "small" else 8000)

    monkeypatch.setattr("llmxmr.pipeline.make_client", opener)
    document = tmp_path / "doc.txt"
    document.write_text(DOCUMENT, encoding="utf-8")
    flags = ["--map-base-url", "embedded", "--reduce-base-url", "http://strong/v1", "--reduce-model", "big"]
    common = ["--input", str(document), "--question", QUESTION, "--no-progress"]
    result = CliRunner().invoke(main, ["run", *common, *flags, "--map-model", "tiny"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [(c.llm.base_url, c.llm.model) for c in opened] == [(None, "tiny"), ("http://strong/v1", "big")]
    summary = result.stderr.splitlines()
    assert re.search(r"^  small \(map\): \d+ calls · [\d,]+ prompt \+ [\d,]+ completion tokens$", summary[-2])
    assert re.search(r"^  large \((collapse, )?reduce\): \d+ calls? · ", summary[-1])  # the stages it served
    as_json = CliRunner().invoke(main, ["run", *common, *flags, "--json"], catch_exceptions=False)
    payload = json.loads(as_json.stdout)
    assert set(payload["trace"]["totals"]["by_model"]) == {"small", "large"}
    assert [use["stages"] for use in payload["models"]] == [["map"], ["collapse", "reduce"]]


@pytest.mark.parametrize("command", ["run", "batch", "chat"])
def test_every_map_reduce_command_takes_the_stage_flags(command):
    usage = CliRunner().invoke(main, [command, "--help"]).output
    for flag in ("--map-base-url", "--map-model", "--reduce-base-url", "--reduce-model"):
        assert flag in usage


def test_the_dry_run_opens_each_stages_client(tmp_path, monkeypatch):
    opened: list[str | None] = []

    def opener(config: PipelineConfig) -> ScriptedClient:
        opened.append(config.llm.base_url)
        embedded = config.uses_embedded_model
        return ScriptedClient(
            counter=WordCounter(), window=4000 if embedded else 8000, model=("small" if embedded else "large")
        )

    monkeypatch.setattr("llmxmr.cli.make_client", opener)
    document = tmp_path / "doc.txt"
    document.write_text(DOCUMENT, encoding="utf-8")
    args = ["run", "--input", str(document), "--question", QUESTION, "--dry-run", "--json"]
    args += ["--base-url", "http://strong/v1", "--map-base-url", "embedded"]
    args += ["--chunk-tokens", "120"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert opened == [None, "http://strong/v1"]
    payload = json.loads(result.stdout)
    assert set(payload["by_model"]) == {"small", "large"} and payload["window"] == 4000
