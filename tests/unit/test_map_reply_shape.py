"""The nothing-first map reply (``llm.map_reply: nothing-first``): "nothing here" is the first
value of a reply and ends it; a reply about something keeps the paper's extract-then-decide order;
the default shape's prompts are left exactly as they were."""

from __future__ import annotations

import json

import pytest

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.prompts import TASK_FAMILIES, load_prompts
from llmxmr.schemas import MapOutput, NothingFirstMapOutput, capped_lengths, json_schema

from ..conftest import WordCounter, final_reply, partial_reply

QUOTING_FAMILIES = [family for family in TASK_FAMILIES if family != "summary"]


def test_the_schema_is_nothing_or_the_full_reply_with_relevant_first() -> None:
    schema = json_schema(NothingFirstMapOutput)
    nothing, something = schema["anyOf"]
    assert nothing["properties"] == {"relevant": {"const": False}}
    assert nothing["required"] == ["relevant"] and nothing["additionalProperties"] is False
    full = json_schema(MapOutput)
    assert list(something["properties"]) == ["relevant", *full["properties"]]
    assert something["properties"]["relevant"] == {"const": True}
    assert something["required"] == ["relevant", *full["required"]]


def test_fields_left_out_of_the_reply_are_left_out_of_both_shapes() -> None:
    schema = json_schema(NothingFirstMapOutput, ("evidence",))
    assert "evidence" not in schema["anyOf"][1]["properties"]
    assert "evidence" not in schema["anyOf"][1]["required"]


def test_nothing_here_is_no_information_whatever_follows_it() -> None:
    # A server that does not enforce the schema may let the model go on after "relevant": false.
    reply = NothingFirstMapOutput.model_validate({"relevant": False, "answer": "58213", "confidence": 5})
    assert not reply.has_information
    assert reply.evidence == [] and reply.confidence == 0


def test_a_reply_about_something_reads_as_the_extract_first_reply() -> None:
    fields = {
        "extracted_information": "The pass key is 58213.",
        "evidence": ["The pass key is 58213."],
        "rationale": "stated",
        "answer": "58213",
        "confidence": 5,
    }
    reply = NothingFirstMapOutput.model_validate({"relevant": True, **fields})
    assert reply.has_information
    assert reply.model_dump(exclude={"relevant"}) == MapOutput.model_validate(fields).model_dump()


def test_llama_cpp_turns_the_capped_schema_into_a_grammar() -> None:
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    schema = capped_lengths(json_schema(NothingFirstMapOutput), 200)
    gbnf = grammar.json_schema_to_gbnf(json.dumps(schema))
    assert '"false"' in gbnf and '"true"' in gbnf
    grammar.LlamaGrammar.from_string(gbnf, verbose=False)


@pytest.mark.parametrize("family", TASK_FAMILIES)
def test_the_extract_first_prompts_never_mention_relevance(family: str) -> None:
    prompts = load_prompts(family)
    for text in (prompts.map_system, prompts.map, prompts.map_question_first or ""):
        assert '"relevant"' not in text


@pytest.mark.parametrize("family", QUOTING_FAMILIES)
def test_the_nothing_first_prompts_add_only_the_opening_rule(family: str) -> None:
    before, after = load_prompts(family), load_prompts(family, nothing_first=True)
    for old, new in ((before.map_system, after.map_system), (before.map_question_first, after.map_question_first)):
        if old is None:
            continue
        assert new != old and '{"relevant": false}' in new
        start = next(i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b)
        added = len(new) - len(old)
        assert new[:start] + new[start + added :] == old  # one insertion, nothing else changed
    assert (after.map, after.collapse, after.reduce) == (before.map, before.collapse, before.reduce)


KEY_SENTENCE = "The secret code is KEY-77."
FILLER = "Line {n}: the grass is green and the sky is blue today. "
DOCUMENT = "".join(FILLER.format(n=n) for n in range(200)) + KEY_SENTENCE + " " + FILLER.format(n=200)


def _reads_nothing_first(request: ChatRequest) -> str:
    if request.schema_name == "NothingFirstMapOutput":
        if "KEY-77" not in request.messages[-1].content:
            return json.dumps({"relevant": False})
        return json.dumps({"relevant": True, **json.loads(partial_reply("KEY-77", confidence=5, info=KEY_SENTENCE))})
    assert request.schema_name not in ("MapOutput", "CollapseOutput")
    return final_reply("KEY-77", chunks=[0])


def test_a_nothing_first_run_ends_empty_chunks_at_their_first_value_and_answers_from_the_rest() -> None:
    client = ScriptedClient(responder=_reads_nothing_first, counter=WordCounter())
    config = PipelineConfig.load(**{"chunking.chunk_tokens": 450, "llm.map_reply": "nothing-first"})
    result = MapReducePipeline(config, client=client).run(DOCUMENT, "What is the code?")
    assert result.status == "answered" and result.answer == "KEY-77"
    assert [c.quote for c in result.citations] == [KEY_SENTENCE]
    maps = [r for r in client.requests if r.schema_name == "NothingFirstMapOutput"]
    assert len(maps) == len(result.chunks) > 1
    assert all(r.json_schema is not None and "anyOf" in r.json_schema for r in maps)
    assert all('{"relevant": false}' in r.messages[-1].content for r in maps)
    records = [r for r in result.trace.calls if r.stage == "map"]
    assert sum(r.output is not None and r.output["relevant"] is False for r in records) == len(maps) - 1


def test_summaries_keep_the_extract_first_reply() -> None:
    seen: list[str | None] = []

    def summarise(request: ChatRequest) -> str:
        seen.append(request.schema_name)
        if request.schema_name == "FinalAnswer":
            return final_reply("a summary")
        return partial_reply("part", confidence=4)

    config = PipelineConfig.load(
        **{"task_type": "summary", "chunking.chunk_tokens": 450, "llm.map_reply": "nothing-first"}
    )
    MapReducePipeline(config, client=ScriptedClient(responder=summarise, counter=WordCounter())).run(
        DOCUMENT, "Summarise the text."
    )
    assert "MapOutput" in seen and "NothingFirstMapOutput" not in seen
