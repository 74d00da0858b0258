from __future__ import annotations

import pytest

from llmxmr.parsing import parse_reply
from llmxmr.schemas import FinalAnswer, MapOutput


def test_bare_json():
    fields = parse_reply('{"answer": "42", "confidence": 5}')
    assert fields == {"answer": "42", "confidence": 5}


def test_raw_line_breaks_inside_strings():
    assert parse_reply('{"answer": "line one\nline two", "confidence": 1}') == {
        "answer": "line one\nline two",
        "confidence": 1,
    }
    assert parse_reply('Here: {"answer": "a\nb"} done')["answer"] == "a\nb"


def test_fenced_json_inside_prose():
    reply = 'Sure! Here it is:\n```json\n{"Extracted Information": "x", "answer": "y"}\n```\nBye.'
    assert parse_reply(reply) == {"extracted_information": "x", "answer": "y"}


def test_first_json_object_in_prose():
    assert parse_reply('The result is {"answer": "z", "confidence": 3.5} as asked.') == {
        "answer": "z",
        "confidence": 3.5,
    }


def test_paper_text_protocol():
    reply = "Extracted Information: The pass key is 123.\nRationale: It is stated.\nAnswer: 123\nConfidence Score: 5/5"
    fields = parse_reply(reply)
    assert fields == {
        "extracted_information": "The pass key is 123.",
        "rationale": "It is stated.",
        "answer": "123",
        "confidence": 5.0,
    }
    assert MapOutput.model_validate(fields).has_information


def test_text_protocol_no_information_and_markdown_labels():
    reply = (
        "**Extracted Information:** nothing\n**Reasoning:** none\n**Answer:** [NO INFORMATION]\n**Confidence Score:** 0"
    )
    fields = parse_reply(reply)
    assert fields["answer"] is None
    assert not MapOutput.model_validate(fields).has_information


def test_chinese_labels():
    fields = parse_reply("提取的信息：他在北京。\n分析：原文直接说明。\n答案：北京\n置信度分数：5")
    assert fields["answer"] == "北京"
    assert fields["confidence"] == 5.0


def test_unrecognisable_reply():
    assert parse_reply("I cannot help with that.") is None


@pytest.mark.parametrize("answer", ["", "   ", "[NO INFORMATION]", None])
def test_empty_or_marked_answer_means_no_information(answer):
    output = MapOutput(extracted_information="", rationale="", answer=answer, confidence=0)
    assert not output.has_information


@pytest.mark.parametrize(("given", "read"), [(7, 5.0), (100, 5.0), (-1, 0.0), (3.5, 3.5), ("7", 5.0), ("4.5", 4.5)])
def test_confidence_off_the_scale_is_clamped(given, read):
    assert MapOutput(extracted_information="", rationale="", answer="x", confidence=given).confidence == read
    assert FinalAnswer(rationale="", answer="x", confidence=given).confidence == read


def test_confidence_must_be_a_number():
    with pytest.raises(ValueError):
        MapOutput(extracted_information="", rationale="", answer="x", confidence="very")


def test_final_answer_chunks_sorted_unique():
    final = FinalAnswer(rationale="r", answer="a", confidence=4, supporting_chunks=[3, 1, 3])
    assert final.supporting_chunks == [1, 3]


def test_final_answer_may_not_be_empty():
    with pytest.raises(ValueError, match="the answer is empty"):
        FinalAnswer(rationale="r", answer="  ", confidence=1)


def test_embedded_length_caps_reach_every_string_and_list():
    from llmxmr.schemas import MAX_LIST_ITEMS, capped_lengths, json_schema

    final = capped_lengths(json_schema(FinalAnswer), 300)["properties"]
    assert final["supporting_chunks"]["maxItems"] == MAX_LIST_ITEMS and final["answer"]["maxLength"] == 300
    capped = capped_lengths(json_schema(MapOutput), 400)
    properties = capped["properties"]
    assert properties["extracted_information"]["maxLength"] == 400
    assert properties["rationale"]["maxLength"] == 400
    assert {"type": "string", "maxLength": 400} in properties["answer"]["anyOf"]
    assert "maxLength" not in properties["confidence"]
    assert "maxLength" not in json_schema(MapOutput)["properties"]["rationale"]  # the original is untouched
