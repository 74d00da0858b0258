"""A "not found" must be true: replies cut at the length limit are rescued under a tighter schema,
a result with unread chunks says so instead of claiming the document lacks the answer, a sentence
of the text that states a paraphrase-quoted answer supports it, token counting never fails a run,
and the InfiniteBench harness defaults to the seed's chunk size and the server's parallelism."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.bench.infinitebench.runner import BatchRun
from llmxmr.cli import main
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.clients.openai_compat import server_root
from llmxmr.clients.tokenize import ServerTokenCounter
from llmxmr.executor import default_in_flight
from llmxmr.partials import NO_ANSWER_GIVEN
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import MapOutput, json_schema
from llmxmr.structured import call_structured, rescue_string_chars
from llmxmr.tokens import TiktokenCounter

from ..conftest import WordCounter, final_reply, partial_reply
from ..fake_server import Answer, fake_server, models

LOOPING = '{"extracted_information": "The pass key is 71432. The pass key is 71432. The pass key is'
CUT = ChatReply(text=LOOPING, finish_reason="length")
VALID = partial_reply("71432", info="The pass key is 71432.")
MESSAGES = [ChatMessage(role="user", content="read this")]


def structured(client: ScriptedClient, attempts: int = 3, max_tokens: int = 512):
    return asyncio.run(
        call_structured(
            client,
            MESSAGES,
            MapOutput,
            stage="map",
            chunk_indices=[0],
            max_tokens=max_tokens,
            temperature=0.0,
            attempts=attempts,
        )
    )


def string_caps(schema: Any) -> list[int | None]:
    """The maxLength of every string in a schema (None where a string has none)."""
    if isinstance(schema, list):
        return [cap for item in schema for cap in string_caps(item)]
    if not isinstance(schema, dict):
        return []
    own = [schema.get("maxLength")] if schema.get("type") == "string" else []
    return own + [cap for value in schema.values() for cap in string_caps(value)]


# The rescue of a reply cut at the length limit.


def test_a_cut_reply_is_asked_again_under_a_schema_that_fits_the_reply():
    client = ScriptedClient([CUT, VALID])
    output, record = structured(client)
    assert output is not None and output.answer == "71432"
    cap = rescue_string_chars(512)
    assert record.rescue_max_chars == cap and record.attempts == 2
    first, second = client.requests
    assert any(c is None for c in string_caps(first.json_schema))  # the first schema leaves text free
    caps = string_caps(second.json_schema)
    assert caps and all(c is not None and c <= cap for c in caps)
    assert 6 * cap <= 512 * 4  # six strings at the cap fit the reply at four characters a token
    # The looping reply is not fed back to the model.
    assert all(LOOPING not in message.content for message in second.messages)
    assert f"under {cap} characters" in second.messages[-1].content


def test_a_reply_cut_in_a_loop_of_short_tokens_is_rescued_under_caps_it_fits_at_that_rate():
    """Cut at 512 tokens after 600 characters ("1. 1. 1." runs near a character a token): caps sized
    for prose would let the same loop run to the limit again."""
    loop = '{"extracted_information": "x", "evidence": ["' + "1. " * 200
    client = ScriptedClient([ChatReply(text=loop, finish_reason="length", completion_tokens=512), VALID])
    output, record = structured(client)
    assert output is not None and record.attempts == 2
    assert record.rescue_max_chars == int(512 * (len(loop) / 512) / 8) < rescue_string_chars(512)
    caps = string_caps(client.requests[1].json_schema)
    assert caps and all(c is not None and c <= record.rescue_max_chars for c in caps)


def test_the_rescue_is_tried_even_when_the_cut_reply_was_the_last_attempt():
    client = ScriptedClient([CUT, VALID])
    output, record = structured(client, attempts=1)
    assert output is not None and record.attempts == 2 and record.rescue_max_chars


def test_a_call_fails_only_when_the_rescue_fails_too():
    client = ScriptedClient([CUT, CUT, CUT])
    output, record = structured(client, attempts=2)
    assert output is None and record.attempts == 2
    assert record.error_kind == "invalid" and "cut off at the length limit" in (record.error or "")


def test_a_reply_that_is_not_cut_gets_no_rescue():
    client = ScriptedClient([VALID])
    output, record = structured(client)
    assert output is not None and record.rescue_max_chars is None


@pytest.mark.parametrize("max_tokens", [16, 64, 512, 768, 100_000])
def test_rescue_caps_stay_modest(max_tokens):
    """llama.cpp's grammar converter fails on very large maxLength values."""
    assert 40 <= rescue_string_chars(max_tokens) <= 400


# Honest incompleteness.

FILLER = "The grass is green and the sky is blue today. " * 40
KEY = "The pass key is 71432."
DOCUMENT = "\n\n".join([FILLER, FILLER, f"{FILLER} {KEY}", FILLER])


def _pipeline_config(**overrides: Any) -> PipelineConfig:
    return PipelineConfig.load(
        task_type="retrieval", **{"chunking.chunk_tokens": 450, "llm.concurrency": 2, **overrides}
    )


def _always_cut_on_key(answer_elsewhere: bool):
    def respond(request: ChatRequest) -> str | ChatReply:
        if request.schema_name == "MapOutput":
            chunk = "\n".join(message.content for message in request.messages)  # a rescue adds a message
            if KEY in chunk:
                return CUT
            if answer_elsewhere and "FOUND-ME" in chunk:
                return partial_reply("FOUND-ME", info="The second key is FOUND-ME.")
            return partial_reply(None, confidence=0)
        return final_reply("FOUND-ME")

    return respond


def _run(document: str, respond) -> Any:
    client = ScriptedClient(responder=respond, counter=WordCounter())
    return MapReducePipeline(_pipeline_config(), client=client).run(document, "What is the pass key?")


def test_not_found_with_an_unread_chunk_does_not_say_the_document_lacks_it():
    result = _run(DOCUMENT, _always_cut_on_key(answer_elsewhere=False))
    key_chunk = next(c.index for c in result.chunks if KEY in DOCUMENT[c.start : c.end])
    assert not result.found and not result.complete
    assert result.unread_chunks == [key_chunk]
    assert "does not appear to contain" not in result.rationale
    assert "not found in the chunks that were read" in result.rationale
    assert f"chunk {key_chunk}" in result.rationale and "a rerun retries it" in result.rationale
    assert "cut off at the length limit" in result.rationale  # the cause


def test_not_found_with_every_chunk_read_still_says_so():
    result = _run(DOCUMENT.replace(KEY, ""), _always_cut_on_key(answer_elsewhere=False))
    assert not result.found and result.complete
    assert result.rationale.startswith("The document does not appear to contain the answer")


def test_a_found_answer_with_an_unread_chunk_says_so_and_scales_confidence():
    document = DOCUMENT + "\n\nThe second key is FOUND-ME."
    result = _run(document, _always_cut_on_key(answer_elsewhere=True))
    assert result.found and not result.complete
    assert "went unread" in result.rationale and "scaled by the share read" in result.rationale
    assert result.confidence == pytest.approx(4.5 * (1 - 1 / len(result.chunks)), abs=1e-3)


def _cli(tmp_path, monkeypatch, *args: str, model: str = "scripted"):
    from llmxmr import cli

    path = tmp_path / "doc.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    client = ScriptedClient(responder=_always_cut_on_key(answer_elsewhere=False), counter=WordCounter(), model=model)
    original = cli.MapReducePipeline

    def with_client(config, **kwargs):
        return original(config, client=client)

    monkeypatch.setattr(cli, "MapReducePipeline", with_client)
    command = [
        "run",
        "--input",
        str(path),
        "--question",
        "What is the pass key?",
        "--task-type",
        "retrieval",
        "--chunk-tokens",
        "450",
        *args,
    ]
    return CliRunner().invoke(main, command)


def test_cli_text_of_a_not_found_result_with_unread_chunks(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("(incomplete) The answer was not found in the chunks that were read.")
    assert "went unread" in first and "a rerun retries it" in first


def test_cli_json_of_a_not_found_result_says_the_reading_was_incomplete(tmp_path, monkeypatch):
    result = _cli(tmp_path, monkeypatch, "--json")
    payload = json.loads(result.stdout)
    assert payload["found"] is False and payload["complete"] is False and payload["unread_chunks"]
    assert payload["status"] == "incomplete" and payload["answer"] == ""
    assert payload["model_profile"] is None


def test_cli_output_names_the_model_profile_that_applied(tmp_path, monkeypatch):
    text = _cli(tmp_path, monkeypatch, model=BUNDLED_GGUF)
    assert "(profile smollm2-135m)" in text.output
    payload = json.loads(_cli(tmp_path, monkeypatch, "--json", model=BUNDLED_GGUF).stdout)
    assert payload["model_profile"] == "smollm2-135m"


# Support for an answer whose quotes were paraphrased.

FACT = "Mrs. Hill kept the key of the wine cellar in a blue tin marked with the number 4071."
QUESTION = "What number is marked on the tin that holds the wine cellar key?"
PROSE = "Elizabeth walked to Meryton with her sisters, and the morning was fine. " * 30


def _qa(document: str, answer: str | None, evidence: list[str], question: str = QUESTION) -> Any:
    def respond(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            if "tin" in request.messages[-1].content or answer is None:
                return partial_reply(answer, confidence=4, info="about the tin", evidence=evidence)
            return partial_reply(None, confidence=0)
        return final_reply(answer or "none", chunks=[0, 1, 2])

    client = ScriptedClient(responder=respond, counter=WordCounter())
    config = PipelineConfig.load(task_type="qa", **{"chunking.chunk_tokens": 450, "llm.concurrency": 2})
    return MapReducePipeline(config, client=client).run(document, question)


def test_a_sentence_stating_the_answer_supports_it_when_the_quotes_paraphrase():
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result = _qa(document, "4071", evidence=["the tin that holds the wine cellar key is marked 4071"])
    assert result.found and result.answer == "4071"
    (citation,) = result.citations
    assert citation.match == "stated" and citation.quote == FACT
    assert document[citation.start : citation.end] == FACT


def test_without_the_fact_the_same_reply_is_still_not_found():
    document = f"{PROSE}\n\nMrs. Hill kept the key of the wine cellar in a blue tin.\n\n{PROSE}"
    result = _qa(document, "4071", evidence=["the tin that holds the wine cellar key is marked 4071"])
    assert not result.found


def test_an_answer_with_nothing_distinctive_is_not_supported_by_any_sentence():
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result = _qa(document, "a blue one", evidence=["it was kept somewhere"])
    assert not result.found


def test_an_answer_made_of_the_questions_own_words_is_not_stated_by_a_sentence_on_its_topic():
    document = f"{PROSE}\n\nMrs. Hill kept the key of the wine cellar.\n\n{PROSE}"
    question = "Where did Mrs. Hill keep the tin with the wine cellar key?"
    result = _qa(document, "Mrs. Hill kept it", evidence=["she kept it safe"], question=question)
    assert not result.found


def test_a_reply_in_the_first_person_is_not_stated_by_any_sentence_with_an_i():
    """SmolLM2 on the fact benchmark: "I am very glad that you have taken the liberty..." was
    supported by a sentence of dialogue holding "I" and a word of the question."""
    document = f'{PROSE}\n\n"I did not say so," said she of the blue tin.\n\n{PROSE}'
    result = _qa(document, "Well, I am very glad of your reply", evidence=["glad of it"])
    assert not result.found


def test_a_stating_sentence_must_name_the_question():
    document = f"{PROSE}\n\nThe regiment marched 4071 miles that year.\n\n{PROSE}"
    result = _qa(document, "4071", evidence=["the tin is marked 4071"])
    assert not result.found


# Token counting that cannot fail a run.


def test_a_server_that_does_not_count_in_time_gives_an_estimate_on_the_large_side(monkeypatch):
    monkeypatch.setattr(ServerTokenCounter, "COUNT_TIMEOUT_S", 0.3)
    scripts = {"/extras/tokenize/count": [Answer(body={"count": 5}, delay_s=2.0)]}
    text = "The pass key is 71432. Remember it. " * 20
    with fake_server(scripts) as server:
        counter = ServerTokenCounter(
            server_root(server.base_url), "/extras/tokenize/count", "input", safety_margin=0.15
        )
        try:
            (count,) = counter.count_batch([text])
        finally:
            counter.close()
    estimate = TiktokenCounter().count_batch([text])[0]
    assert count >= estimate / 0.85 and counter.estimated == 1
    assert any(path == "/extras/tokenize/count" for path, body in server.requests)  # it was asked


def test_a_server_that_counts_in_time_is_exact(monkeypatch):
    scripts = {"/extras/tokenize/count": [Answer(body={"count": 5})]}
    with fake_server(scripts) as server:
        counter = ServerTokenCounter(
            server_root(server.base_url), "/extras/tokenize/count", "input", safety_margin=0.15
        )
        try:
            assert counter.count_batch(["hello there"]) == [5] and counter.estimated == 0
        finally:
            counter.close()


# InfiniteBench defaults.


def test_items_in_flight_never_exceed_what_the_server_runs_at_once():
    assert asyncio.run(default_in_flight(ScriptedClient(parallel=1), 8)) == 1
    assert asyncio.run(default_in_flight(ScriptedClient(parallel=4), 8)) == 4
    assert asyncio.run(default_in_flight(ScriptedClient(), 8)) == 8  # a batching server


def test_llama_cpp_python_runs_one_request_at_a_time_and_llama_server_says_its_slots():
    async def ask(base_url: str) -> int | None:
        from llmxmr.clients.openai_compat import OpenAICompatibleClient

        client = OpenAICompatibleClient(base_url)
        try:
            return await client.parallel_requests()
        finally:
            await client.aclose()

    with fake_server({"/v1/models": [models("me")]}) as server:
        assert asyncio.run(ask(server.base_url)) == 1
    with fake_server({"/v1/models": [models("llamacpp")], "/props": [Answer(body={"total_slots": 4})]}) as server:
        assert asyncio.run(ask(server.base_url)) == 4
    with fake_server({"/v1/models": [models("sglang")]}) as server:
        assert asyncio.run(ask(server.base_url)) is None


def test_infinitebench_chunks_at_the_seeds_size_unless_told_otherwise(tmp_path):
    assert BatchRun(tmp_path).config_for("passkey").chunking.chunk_tokens == 4096
    assert BatchRun(tmp_path).config_for("longbook_qa_eng").chunking.chunk_tokens == 4096
    told = BatchRun(tmp_path, overrides={"chunking.chunk_tokens": 2048})
    assert told.config_for("passkey").chunking.chunk_tokens == 2048


def test_a_string_cap_goes_into_every_attempts_schema_and_a_rescue_only_lowers_it():
    client = ScriptedClient([CUT, VALID])
    asyncio.run(
        call_structured(
            client,
            MESSAGES,
            MapOutput,
            stage="map",
            chunk_indices=[0],
            max_tokens=512,
            temperature=0.0,
            attempts=3,
            max_string_chars=250,
        )
    )
    first, rescued = (string_caps(request.json_schema) for request in client.requests)
    own = string_caps(json_schema(MapOutput))
    assert None in own and first == [250 if cap is None else cap for cap in own]  # a field's own cap stays
    assert rescue_string_chars(512) < 250 and rescued == [rescue_string_chars(512)] * len(own)


# The bundled model's settings, wherever it runs.

BUNDLED_GGUF = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"  # what llama-cpp-python's server lists


@pytest.mark.parametrize(("model", "profiled"), [(BUNDLED_GGUF, True), ("Qwen/Qwen2.5-7B-Instruct", False)])
def test_a_server_run_of_the_bundled_model_gets_its_profile_under_the_harness_preset(tmp_path, model, profiled):
    """Behind a server, the bundled model reads the request before each chunk and writes capped
    strings, as in-process; the InfiniteBench preset's 4,096-token chunks stay (the profile's
    2,048 applies where nothing else sets a size)."""
    config = BatchRun(tmp_path, overrides={"llm.base_url": "http://server/v1"}).config_for("passkey")
    client = ScriptedClient(responder=lambda request: partial_reply(None), counter=WordCounter(), model=model)
    document = " ".join(["grass"] * 9000) + " The pass key is 71432. Remember it."
    (result,) = MapReducePipeline(config, client=client).run_many(document, ["What is the pass key?"])
    assert result.model_profile == ("smollm2-135m" if profiled else None)
    assert 2048 < max(chunk.tokens for chunk in result.chunks) <= 4096
    first_map = next(r for r in client.requests if r.schema_name == "MapOutput")
    own = string_caps(json_schema(MapOutput))
    assert string_caps(first_map.json_schema) == ([200 if cap is None else cap for cap in own] if profiled else own)
    user = first_map.messages[-1].content
    assert ("What is the pass key?" in user[: user.index("grass")]) == profiled


# A reply with no answer whose extracted information is the text's own words about the question.


def _informed(
    document: str, info: str, final: str | None, grounding: str = "cap", confidence: float = 0, final_confidence=4.5
) -> tuple[Any, ScriptedClient]:
    """Every map reply has no answer; the one whose chunk holds the fact extracts ``info`` (at
    ``confidence``); the reduce answers ``final`` (None: an invalid reply, every time)."""

    def respond(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            held = "tin" in request.messages[-1].content
            return partial_reply(None, confidence=confidence, info=info if held else "", evidence=[])
        return final_reply(final, final_confidence, chunks=[1]) if final is not None else "not JSON"

    client = ScriptedClient(responder=respond, counter=WordCounter())
    config = PipelineConfig.load(
        task_type="qa", **{"chunking.chunk_tokens": 450, "llm.concurrency": 2, "grounding.mode": grounding}
    )
    return MapReducePipeline(config, client=client).run(document, QUESTION), client


def _reduce_prompts(client: ScriptedClient) -> list[str]:
    return [r.messages[-1].content for r in client.requests if r.schema_name == "FinalAnswer"]


def test_information_found_in_the_text_and_about_the_question_reaches_the_reduce_which_may_answer_from_it():
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result, client = _informed(document, FACT, "4071")
    (prompt,) = _reduce_prompts(client)
    assert FACT in prompt and NO_ANSWER_GIVEN in prompt
    assert result.status == "answered" and result.answer == "4071"
    (citation,) = result.citations
    assert document[citation.start : citation.end] == FACT


def test_information_is_never_an_answer_by_itself():
    """The reduce's answer must still be held by the information's quote; with no partial answer to
    fall back on, an answer it does not hold is the model's unsupported guess."""
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result, _ = _informed(document, FACT, "Mr. Collins keeps it")
    assert result.status == "unsupported" and result.answer == "" and not result.citations
    assert result.unsupported_guess == "Mr. Collins keeps it"
    assert FACT in [c.quote for c in result.related]
    assert "no quote of the text holds the answer written from it" in result.rationale


def test_a_part_that_gave_no_answer_lends_the_answer_no_confidence():
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result, _ = _informed(document, FACT, "4071", confidence=5, final_confidence=0.5)
    assert result.status == "unsupported" and result.confidence == 0.5  # below grounding.min_confidence (1)


def test_a_failed_reduce_over_information_is_incomplete_and_keeps_what_was_found():
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result, _ = _informed(document, FACT, None)
    assert result.status == "incomplete" and "reduce call" in result.rationale
    assert FACT in [c.quote for c in result.related]


@pytest.mark.parametrize(
    ("info", "why"),
    [
        ("Mrs. Hill kept the key of the wine cellar in a blue tin marked with the number 4072.", "not in the text"),
        ("Elizabeth walked to Meryton with her sisters, and the morning was fine.", "not about the question"),
        ("the key of the wine cellar", "the question's own words"),
    ],
)
def test_information_that_is_not_the_texts_words_about_the_question_goes_no_further(info, why):
    document = f"{PROSE}\n\nThe tin was blue. {FACT}\n\n{PROSE}"
    result, client = _informed(document, info, "4071")
    assert result.status == "not_found", why
    assert not _reduce_prompts(client)


def test_without_grounding_information_with_no_answer_goes_no_further():
    document = f"{PROSE}\n\n{FACT}\n\n{PROSE}"
    result, client = _informed(document, FACT, "4071", grounding="off")
    assert result.status == "not_found" and not _reduce_prompts(client)
