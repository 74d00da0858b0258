"""Loops are no answer: a text that repeats itself is cut at its first repetition (``llmxmr.loops``),
in one place for every stage, family and model (``structured.call_structured``), and an answer that
is nothing but a loop counts as none."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.loops import LoopWatch, cut_loop, find_repetition, first_repetition, is_only_loop
from llmxmr.prompts import ChatMessage
from llmxmr.schemas import FinalAnswer, MapOutput
from llmxmr.structured import LOOP_ONLY, call_structured
from llmxmr.trace import CallRecord

from ..conftest import SHARED, WordCounter, final_reply, partial_reply

# The bundled SmolLM2-135M's loops (issue 26).
ANSWER_LOOP = "The answer is " + "the answer that is " * 12
KEY_LOOP = "58213. " + "The pass key is 58213. " * 12


# The rules.


def test_a_sentence_said_again_is_cut_before_it():
    text = "The key is hidden. It lies in the third part. The key is hidden. Look there."
    found = find_repetition(text)
    assert found is not None and found.rule == "sentence"
    assert found.cut == text.index("The key is hidden. Look")
    assert cut_loop(text) == "The key is hidden. It lies in the third part."


def test_a_sentence_of_one_word_may_come_again():
    assert find_repetition("Yes. He came at noon. Yes.") is None


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("He is here, he is here, truly.", "He is here"),  # three words back to back
        ("It was a long and cold, a long and cold winter.", "It was a long and cold"),
        ("It was very very very cold.", "It was very"),  # one word three times
        ("Go on, go on, go on!", "Go on"),  # two words three times
    ],
)
def test_a_unit_followed_by_itself_is_cut_after_its_first_copy(text, kept):
    found = find_repetition(text)
    assert found is not None and found.rule == "tandem"
    assert cut_loop(text) == kept


@pytest.mark.parametrize("text", ["I know that that is true.", "Go on, go on.", "Bora Bora is far."])
def test_one_or_two_words_twice_are_no_loop(text):
    assert find_repetition(text) is None


def test_a_run_of_eight_words_seen_again_is_cut():
    run = "the letter was hidden under the old oak"
    text = f"We learn {run} tree, and later hear {run} tree again."
    found = find_repetition(text)
    assert found is not None and found.rule == "run"
    assert (found.first, found.copy) == (text.index(run), text.rindex(run))
    assert cut_loop(text) == f"We learn {run} tree, and later hear"


def test_a_run_of_seven_words_may_come_again():
    run = "the letter was hidden under the oak"
    assert find_repetition(f"We learn {run}, and later hear {run}.") is None


@pytest.mark.parametrize("unit", ["Paris", "The pass key is 71432", "It is stated in the second paragraph"])
def test_x_x_x_keeps_x(unit):
    assert cut_loop(f"{unit}. {unit}. {unit}.") == f"{unit}."


def test_case_punctuation_and_spacing_do_not_count_and_offsets_are_exact():
    text = "The  PASS key, is 71432!\n  the pass KEY is 71432 -- THE pass key is"
    found = find_repetition(text)
    assert found is not None and found.first == 0
    assert found.copy == found.cut == text.index("the pass KEY")
    assert text[found.first : found.copy] == "The  PASS key, is 71432!\n  "
    assert cut_loop(text) == "The  PASS key, is 71432!"


def test_the_cut_moves_back_to_the_sentence_the_copy_begins_in():
    found = find_repetition(KEY_LOOP)
    assert found is not None and found.copy == KEY_LOOP.index("58213", 1)
    assert found.cut == KEY_LOOP.index("The")  # "The pass key is" of the first copy goes too
    assert cut_loop(KEY_LOOP) == "58213."


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('He said "yes." "He said "yes."', 'He said "yes."'),
        ("One, two, three; one, two, three", "One, two, three"),
        ("First (the answer is here) (the answer is here)", "First (the answer is here)"),
    ],
)
def test_no_separator_or_opening_mark_dangles_after_the_cut(text, kept):
    assert cut_loop(text) == kept


# The two examples, and what is no loop.


def test_an_answer_that_only_repeats_itself_is_nothing_but_a_loop():
    assert cut_loop(ANSWER_LOOP) == "The answer is the answer that"
    assert is_only_loop(ANSWER_LOOP)


def test_an_answer_said_once_then_repeated_is_an_answer():
    for text, kept in [(KEY_LOOP, "58213."), ("Paris. Paris. Paris.", "Paris."), ("71432 71432 71432", "71432")]:
        assert cut_loop(text) == kept and not is_only_loop(text)


@pytest.mark.parametrize(
    "text",
    [
        "The Bennets and the Lucases dined together, and the Lucases left early.",
        "Mr. Bennet agreed. Mrs. Bennet agreed. Mr. Collins did not.",
        "Apples, pears, plums, cherries, figs, dates, grapes, lemons, limes and oranges.",
        "- the first chapter\n- the second chapter\n- the third chapter\n- the fourth chapter",
        "The pass key is 71432. The key to the door is 58213. The pass key opens the vault.",
        "3.14 is pi. 2.72 is e. 1.41 is the square root of 2.",
    ],
)
def test_ordinary_text_is_not_cut(text):
    assert find_repetition(text) is None and cut_loop(text) == text and not is_only_loop(text)


def test_narrative_prose_is_not_cut():
    """The first hundred paragraphs of narration (no dialogue, 40 words or more) of a novel."""
    book = SHARED / "corpus" / "books" / "pride_and_prejudice.txt"
    if not book.exists():
        pytest.skip(f"{book} is absent")
    paragraphs = [p for p in re.split(r"\n\s*\n", book.read_text()) if len(p.split()) >= 40 and '"' not in p]
    assert len(paragraphs) >= 100
    assert [p[:60] for p in paragraphs[:100] if find_repetition(p) is not None] == []


# Reading a growing text.

_PIECES = st.sampled_from(
    ["the", "answer", "is", "The", "Mr.", "Bennet", "58213", "pass", "key", "x", "a", "b", "3.5", "e.g."]
    + [".", ". ", "! ", " ", "  ", ", ", "\n", '"', "。"]
)
TEXTS = st.lists(_PIECES, max_size=60).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.data())
def test_a_repetition_found_in_a_prefix_is_the_one_of_every_longer_text(text, data):
    prefix = text[: data.draw(st.integers(0, len(text)))]
    found = find_repetition(prefix, complete=False)
    if found is not None:
        assert find_repetition(text) == found
        assert find_repetition(text, complete=False) == found
        assert first_repetition(text) == first_repetition(prefix, complete=False) == found.cut


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.lists(st.integers(0, 400), max_size=6))
def test_a_watch_fed_the_text_in_parts_finds_what_one_reading_finds(text, ends):
    watch = LoopWatch()
    for end in sorted(ends):
        watch.feed(text[:end])
    assert watch.feed(text, complete=True) == find_repetition(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_what_is_kept_does_not_repeat_itself(text):
    kept = cut_loop(text)
    assert text.startswith(kept) and find_repetition(kept) is None


def test_a_word_or_sentence_that_may_go_on_does_not_count_yet():
    assert find_repetition("a b c a b c", complete=False) is None  # "c" may become "cd"
    assert find_repetition("a b c a b c") is not None
    assert find_repetition("a b c a b c5") is None
    assert find_repetition("I agree. I agree.", complete=False) is None  # what follows decides the end
    assert find_repetition("I agree. I agree.") is not None


def test_a_watch_takes_only_a_text_that_grows():
    watch = LoopWatch()
    watch.feed("one two", complete=True)
    with pytest.raises(ValueError, match="extends"):
        watch.feed("one two three")


@pytest.mark.timeout(30)  # a reading quadratic in the length would take hours
@pytest.mark.parametrize(
    "text",
    [
        "The answer is " + "the answer that is " * 10_000,
        "58213. " + "The pass key is 58213. " * 10_000,
        " ".join(f"word{i}" for i in range(40_000)),  # one long sentence, no repetition
        " ".join(f"Sentence number {i} ends here." for i in range(10_000)),
    ],
)
def test_long_texts_are_read_in_linear_time(text):
    assert len(text) > 150_000
    find_repetition(text)
    watch = LoopWatch()
    for end in range(0, len(text), 4096):  # a reply streaming in
        if watch.feed(text[:end]) is not None:
            break


# In every structured call.

MESSAGES = [ChatMessage(role="user", content="read this")]


def structured(client: ScriptedClient, output_type=MapOutput, attempts: int = 3):
    return asyncio.run(
        call_structured(
            client,
            MESSAGES,
            output_type,
            stage="map" if output_type is MapOutput else "reduce",
            chunk_indices=[0],
            max_tokens=512,
            temperature=0.0,
            attempts=attempts,
        )
    )


def test_a_looping_answer_is_no_answer():
    output, record = structured(ScriptedClient([partial_reply(ANSWER_LOOP, info="The pass key is 58213.")]))
    assert output is not None and output.answer is None and not output.has_information
    assert record.loops_cut == ["answer"] and record.output is not None and record.output["answer"] is None
    assert record.attempts == 1 and record.error is None


def test_an_answer_said_and_repeated_keeps_its_statement():
    output, record = structured(ScriptedClient([partial_reply(KEY_LOOP, info="The pass key is 58213.")]))
    assert output is not None and output.answer == "58213." and record.loops_cut == ["answer"]


def test_the_rationale_the_information_and_each_quote_are_cut():
    reply = partial_reply(
        "58213",
        info="The pass key is 58213. " * 5,
        rationale="It says so. " + "The text states the key. " * 6,
        evidence=["The pass key is 58213. The pass key is 58213.", "A quote said once."],
    )
    output, record = structured(ScriptedClient([reply]))
    assert output is not None and output.answer == "58213"
    assert output.extracted_information == "The pass key is 58213."
    assert output.rationale == "It says so. The text states the key."
    assert output.evidence == ["The pass key is 58213.", "A quote said once."]
    assert record.loops_cut == ["extracted_information", "evidence", "rationale"]


def test_a_reply_without_loops_is_untouched():
    reply = partial_reply("58213", info="The pass key is 58213.", rationale="Stated once.")
    output, record = structured(ScriptedClient([reply]))
    assert output is not None and output == MapOutput.model_validate_json(reply)
    assert record.loops_cut == []


def test_loops_in_the_text_protocol_are_cut_too():
    reply = f"Extracted Information: {KEY_LOOP}\nRationale: stated\nAnswer: {ANSWER_LOOP}\nConfidence Score: 3"
    output, record = structured(ScriptedClient([reply]))
    assert output is not None and output.answer is None and output.extracted_information == "58213."


def test_a_final_answer_that_only_loops_is_asked_again_without_the_loop():
    client = ScriptedClient([final_reply(ANSWER_LOOP), final_reply("58213")])
    output, record = structured(client, FinalAnswer)
    assert output is not None and output.answer == "58213"
    assert record.attempts == 2 and record.loops_cut == ["answer"]
    reask = client.requests[1].messages
    assert reask[-1].content.startswith(LOOP_ONLY) and "the answer is empty" not in reask[-1].content
    assert "the answer that is the answer that is" not in reask[-2].content.lower()  # not read again
    assert json.loads(reask[-2].content)["answer"] == "The answer is the answer that"


def test_a_final_answer_that_always_loops_fails_the_call():
    output, record = structured(ScriptedClient([final_reply(ANSWER_LOOP)] * 2), FinalAnswer, attempts=2)
    assert output is None and record.error_kind == "invalid" and LOOP_ONLY in (record.error or "")


def test_a_looping_reduce_leaves_the_most_confident_partial_answer_standing():
    document = "The grass is green. The pass key is 58213. The sky is blue."

    def respond(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            return partial_reply("58213", info="The pass key is 58213.")
        return final_reply(ANSWER_LOOP)

    config = PipelineConfig.load(task_type="retrieval")
    client = ScriptedClient(responder=respond, counter=WordCounter())
    result = MapReducePipeline(config, client=client).run(document, "What is the pass key?")
    assert result.found and result.answer == "58213"
    (reduce,) = [record for record in result.trace.calls if record.stage == "reduce"]
    assert reduce.loops_cut == ["answer"] and reduce.error_kind == "invalid"


def test_a_trace_written_before_loops_were_cut_still_loads():
    old = {"stage": "map", "chunk_indices": [0], "attempts": 1}
    assert CallRecord.model_validate(old).loops_cut == []


# The rescue of a reply cut at the length limit, when the reply loops.


def test_a_looping_reply_cut_at_the_length_limit_is_rescued_and_the_rescue_cut_at_its_loop():
    looping = json.dumps({"extracted_information": "The pass key is 58213. " * 200})[:900]
    rescued = partial_reply("58213", info="The pass key is 58213. The pass key is 58213. The pass")
    client = ScriptedClient([ChatReply(text=looping, finish_reason="length"), rescued])
    output, record = structured(client)
    assert record.rescue_max_chars is not None and record.attempts == 2
    assert output is not None and output.answer == "58213"
    assert output.extracted_information == "The pass key is 58213."
    assert record.loops_cut == ["extracted_information", "evidence"]
    assert all("58213. The pass key" not in message.content for message in client.requests[1].messages)
