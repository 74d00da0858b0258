"""Grounding: quotes located in the text by code, the policies, citations and "not found"."""

from __future__ import annotations

import json
import re

import pytest
from rapidfuzz import fuzz

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.chunking import Chunk
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.families import SupportCheck, family
from llmxmr.families.retrieval import checked_value, names_request
from llmxmr.families.workarounds import WORDS_ECHOED_FROM_THE_PROMPT
from llmxmr.grounding import (
    Citation,
    DocumentIndex,
    carried_forward,
    content_words,
    distinctive_words,
    locate_all,
    normalise,
    sentences_of,
)
from llmxmr.partials import Partial
from llmxmr.schemas import CollapseOutput, MapOutput

from ..conftest import WordCounter, final_reply, partial_reply

THRESHOLD = 90.0


def whole(text: str, index: int = 0) -> Chunk:
    return Chunk(index=index, start=0, end=len(text), overlap_start=0, text=text, tokens=len(text.split()))


def span(text: str, start: int, end: int, index: int = 0) -> Chunk:
    return Chunk(index=index, start=start, end=end, overlap_start=start, text=text[start:end], tokens=1)


def sentence_stating(
    answer: str, question: str, chunk: Chunk, document: DocumentIndex, ignoring: frozenset[str] = frozenset()
) -> Citation | None:
    return SupportCheck(question, document, ignoring).stating(answer, chunk)


def found(quote: str, text: str, chunk: Chunk | None = None, threshold: float = THRESHOLD) -> Citation | None:
    citations = locate_all([quote], chunk or whole(text), DocumentIndex(text), threshold)
    return citations[0] if citations else None


# --- locating quotes --------------------------------------------------------------------------

TEXT = "First line.\nThe grass is green.\nThe pass key is 71432. Remember it.\nLast line.\n"


def test_an_exact_quote_gets_its_span_and_line():
    citation = found("The pass key is 71432.", TEXT)
    assert citation is not None and citation.match == "exact" and citation.score == 100
    assert TEXT[citation.start : citation.end] == citation.quote == "The pass key is 71432."
    assert citation.line == 3 and citation.chunk == 0


def test_whitespace_and_case_differences_still_match_exactly():
    text = "Intro.\n\nThe   PASS key\n  is 71432.   Remember it."
    citation = found("the pass key is 71432.", text)
    assert citation is not None and citation.match == "exact"
    assert citation.quote == "The   PASS key\n  is 71432." == text[citation.start : citation.end]
    assert citation.line == 3


def test_a_near_miss_is_found_just_above_the_threshold_and_not_below():
    quote = "The pass key was 71432, remember it."  # one word changed, one sentence
    score = fuzz.partial_ratio(normalise(quote).text, normalise(TEXT).text)
    assert 80 < score < 100
    above = found(quote, TEXT, threshold=score - 0.5)
    assert above is not None and above.match == "fuzzy" and above.score == pytest.approx(score, abs=0.1)
    assert "71432" in above.quote and above.line == 3
    assert found(quote, TEXT, threshold=score + 0.5) is None


def test_an_invented_quote_is_not_found():
    assert found("The pass key is 55555. Do not forget it.", TEXT) is None
    assert found("The sky is purple and the sea is made of lemonade.", TEXT) is None


def test_a_quote_too_short_to_prove_anything_is_not_found():
    """A model that copies a field name ("answer") or two words of the text has quoted nothing."""
    assert found("is", TEXT) is None and found("  ", TEXT) is None
    assert found("Line", TEXT) is None and found("Remember it.", TEXT) is None and found("71432", TEXT) is None
    assert found("the grass is", TEXT) is not None
    chinese = "前言。\n密码是 71432，请记住。\n结束。"
    assert found("密码", chinese) is None and found("密码是", chinese) is not None


def test_a_quote_spanning_the_chunk_boundary_is_found_around_the_chunk():
    cut = TEXT.index("71432") + 2  # the chunk ends inside the key
    first, second = span(TEXT, 0, cut, 0), span(TEXT, cut, len(TEXT), 1)
    for chunk in (first, second):
        citation = found("The pass key is 71432. Remember it.", TEXT, chunk)
        assert citation is not None and citation.match == "exact" and citation.chunk == chunk.index
        assert citation.quote == "The pass key is 71432. Remember it."


def test_a_quote_wholly_in_another_chunk_is_not_found():
    cut = TEXT.index("Last line")
    assert found("Last line.", TEXT, span(TEXT, 0, cut)) is None
    assert found("First line.", TEXT, span(TEXT, cut, len(TEXT), 1)) is None


def test_non_ascii_text_maps_back_to_the_right_span():
    text = "前言。\n密码是 71432，请记住。\n Die STRASSE ist lang. Ende."
    chinese = found("密码是 71432，请记住。", text)
    assert chinese is not None and chinese.quote == "密码是 71432，请记住。" and chinese.line == 2
    german = found("die straße ist lang.", text)  # ß folds to ss, as the text spells it
    assert german is not None and german.match == "exact" and german.quote == "Die STRASSE ist lang."
    zero_width = "The pass key is 714\u200b32."
    defused = found("The pass key is 71432.", zero_width)  # the map prompt's defused tags
    assert defused is not None and defused.match == "exact" and defused.quote == zero_width


def test_invisible_characters_before_a_quote_do_not_shift_its_span():
    text = "Intro\u200b\u200b\u200b text here.\nTHE  PASS KEY is 71432."
    citation = found("the pass key is 71432", text)
    assert citation is not None and citation.quote == "THE  PASS KEY is 71432" and citation.line == 2


def test_a_quote_of_several_sentences_counts_by_the_sentences_in_the_text():
    looped = "The pass key is 71432. Remember it. The pass key is 71432. Remember it. The pass key is"
    citations = locate_all([looped], whole(TEXT), DocumentIndex(TEXT), THRESHOLD)
    assert [c.quote for c in citations] == ["The pass key is 71432."]  # "Remember it.": too short alone
    mixed = "The grass is green. The pass key is 55555."  # one real sentence, one invented
    assert [c.quote for c in locate_all([mixed], whole(TEXT), DocumentIndex(TEXT), THRESHOLD)] == [
        "The grass is green."
    ]
    chinese = "密码是 71432，请记住。密码是 71432，请记住。"
    text = "前言。\n密码是 71432，请记住。\n结束。"
    assert [c.quote for c in locate_all([chinese], whole(text), DocumentIndex(text), THRESHOLD)] == [
        "密码是 71432，请记住。"
    ]


def test_a_quote_split_into_sentences_keeps_initials_and_abbreviations_whole():
    text = "Intro.\nJ.R.R. Tolkien served in the U.S. Army with Mr. Darcy. Outro.\n"
    quote = "J.R.R. Tolkien served in the U.S. Army with Mr. Darcy. He then wrote a book about it."
    assert sentences_of(quote) == [
        "J.R.R. Tolkien served in the U.S. Army with Mr. Darcy.",
        "He then wrote a book about it.",
    ]
    citations = locate_all([quote], whole(text), DocumentIndex(text), THRESHOLD)
    assert [c.quote for c in citations] == ["J.R.R. Tolkien served in the U.S. Army with Mr. Darcy."]


def test_a_stating_sentence_is_cited_whole_across_abbreviations():
    fact = "The U.S. Army paid Mr. Hill 4071 dollars for the tin."
    text = f"Nothing here. {fact} Nothing there."
    stated = sentence_stating("4071", "How much did the Army pay for the tin?", whole(text), DocumentIndex(text))
    assert stated is not None and stated.match == "stated" and stated.quote == fact


def test_a_copy_beside_the_chunk_does_not_hide_the_one_inside_it():
    sentence = "The pass key is 71432."
    text = f"{sentence}\n{'Filler words here. ' * 5}\n{sentence.upper()}\nMore filler after it."
    chunk = span(text, text.index(sentence.upper()), len(text), 1)
    citation = found("the pass key is 71432.", text, chunk)
    assert citation is not None and citation.quote == sentence.upper() and citation.line == 3


def test_a_quote_with_another_number_is_not_found_however_close():
    text = "Long ago the treaty was signed in 1648 by both kings, and peace followed."
    quote = "the treaty was signed in 1658 by both kings"
    assert fuzz.partial_ratio(quote, normalise(text).text) > 90  # close enough by score alone
    assert found(quote, text) is None
    assert found("the treaty was signed in 1648 by the kings", text) is not None  # a changed word passes


def test_repeated_quotes_give_one_citation_in_document_order():
    chunk, document = whole(TEXT), DocumentIndex(TEXT)
    quotes = ["The pass key is 71432.", "The grass is green.", "the grass is GREEN."]
    citations = locate_all(quotes, chunk, document, THRESHOLD)
    assert [c.quote for c in citations] == ["The grass is green.", "The pass key is 71432."]


def test_a_collapse_carries_forward_only_quotes_that_were_verified():
    verified = found("The pass key is 71432.", TEXT)
    assert verified is not None
    assert carried_forward(["the pass key is 71432."], [verified], THRESHOLD) == [verified]
    assert carried_forward(["The pass key is 71432. Remember it."], [verified], THRESHOLD) == [verified]
    assert carried_forward(["The pass key is 99999, not 71432 at all."], [verified], THRESHOLD) == []
    assert carried_forward(["The pass key is 7143"], [verified], THRESHOLD) == []  # a digit short
    assert carried_forward(["The pass key is 71433."], [verified], THRESHOLD) == []


def test_a_collapse_cannot_pass_off_a_truncated_value_as_verified():
    verified = found("The pass key is 71432.", TEXT)
    assert verified is not None
    answer = MapOutput(extracted_information="", evidence=[verified.quote], rationale="", answer="71432", confidence=5)
    group = [Partial(chunk_indices=[0], answer=answer, citations=[verified], support="verified")]
    settings = PipelineConfig.load().grounding
    for quotes in (["The pass key is 7143"], ["secret"], [verified.quote]):
        merged = CollapseOutput(extracted_information="", evidence=quotes, rationale="", answer="7143", confidence=5)
        partial, check = family("retrieval").ground_collapse(
            merged, group, "What is the pass key?", DocumentIndex(TEXT), settings
        )
        assert partial.answer.answer == "71432" and check is not None and "best verified input stands" in check


def test_evidence_past_three_quotes_is_dropped_not_failed():
    reply = MapOutput.model_validate(
        {
            "extracted_information": "",
            "evidence": ["a", " ", "b", "c", "d"],
            "rationale": "",
            "answer": "x",
            "confidence": 1,
        }
    )
    assert reply.evidence == ["a", "b", "c"]


# --- which words say what a question asks or an answer states -------------------------------


def test_function_words_never_count_and_prompt_words_only_when_a_family_says_so():
    """Function words are a rule of English, right for every model; the words of the prompt are
    the retrieval family's workaround (``families.workarounds``), passed in as ``ignoring``."""
    request = "Please find the pass key in the text below."
    assert content_words(request) == {"please", "find", "pass", "key", "text", "below"}
    assert content_words(request, ignoring=WORDS_ECHOED_FROM_THE_PROMPT) == {"pass", "key"}
    answer = "According to the document, Collins"
    assert distinctive_words(answer) == {"according", "document", "collins"}
    assert distinctive_words(answer, WORDS_ECHOED_FROM_THE_PROMPT) == {"according", "collins"}


def test_a_stating_sentence_need_not_write_the_prompt_words_an_answer_echoes_when_the_family_says_so():
    text = "Nothing here. The tin was marked 4071 by Mrs. Hill. Nothing there."
    chunk, document = whole(text), DocumentIndex(text)
    answer, question = "The document says 4071", "What was the tin marked?"
    assert sentence_stating(answer, question, chunk, document) is None  # "document" is not in the text
    stated = sentence_stating(answer, question, chunk, document, ignoring=WORDS_ECHOED_FROM_THE_PROMPT)
    assert stated is not None and stated.quote == "The tin was marked 4071 by Mrs. Hill."


def test_the_pronoun_i_is_no_name_for_any_model():
    assert distinctive_words("Well, I am very glad of Netherfield") == {"netherfield"}
    assert distinctive_words("It was Plan B") == {"plan", "b"}  # other one-letter capitals may be names


def test_retrieval_reads_requests_and_replies_without_the_words_of_the_prompt():
    text = "The pass key is 71432. The text below is long."
    # SmolLM2 writes its value as a sentence about the task.
    evidence = "The pass key is 71432."
    assert checked_value("The answer is 71432", evidence, "What is the pass key?", text) == (
        "The answer is 71432",
        None,
    )
    # A request's instructions name nothing: "text" and "below" do not make a sentence about it.
    assert not names_request("The text below is long.", "Please find the pass key in the text below.")
    assert names_request("The pass key is 71432.", "Please find the pass key in the text below.")


# --- the policies, end to end with the scripted client ---------------------------------------

FILLER = "The weather was mild and nothing happened that day. " * 30
KEY = "The pass key is 71432. Remember it."
WITH_KEY = f"{FILLER}\n\n{KEY}\n\n{FILLER}"
WITHOUT_KEY = f"{FILLER}\n\n{FILLER}"


def chunk_of(request: ChatRequest) -> str:
    return request.messages[-1].content.rsplit("<document_part>", 1)[1]


def honest_or_inventive(request: ChatRequest) -> str:
    """A model like SmolLM2: quotes the key where it is, invents one with a made-up quote where
    it is not."""
    if request.schema_name == "MapOutput":
        if "71432" in chunk_of(request):
            return partial_reply("71432", 5, info=KEY, evidence=[KEY])
        return partial_reply("55555", 5, info="The pass key is 55555.", evidence=["The pass key is 55555."])
    answers = re.findall(r"^Answer: (.+)$", request.messages[-1].content, flags=re.M)
    if request.schema_name == "CollapseOutput":
        return partial_reply(answers[0], 5, info=KEY, evidence=[KEY])
    return final_reply(answers[0], 5, [])


def run(document: str, responder=honest_or_inventive, **settings):
    values = {"chunking.chunk_tokens": 120, "task_type": "retrieval"}
    values.update(settings)
    client = ScriptedClient(responder=responder, counter=WordCounter())
    result = MapReducePipeline(PipelineConfig.load(**values), client=client).run(document, "What is the pass key?")
    return result, client


@pytest.mark.parametrize("mode", ["cap", "strict"])
def test_retrieval_answers_without_a_found_quote_count_as_no_information(mode):
    result, client = run(WITHOUT_KEY, **{"grounding.mode": mode})
    assert not result.found and result.answer == "" and result.citations == []
    assert result.rationale.startswith("The document does not appear to contain the answer")
    assert all(r.schema_name == "MapOutput" for r in client.requests)  # no reduce on a guess
    checks = [c.check for c in result.trace.calls]
    assert all("0 quote(s) found in the text: unsupported, counts as no information" == c for c in checks)


def test_with_grounding_off_the_invented_key_is_the_answer():
    result, _ = run(WITHOUT_KEY, **{"grounding.mode": "off"})
    assert result.found and result.answer == "55555"  # invented, and nothing checked it
    assert result.citations == []


def test_the_real_key_is_found_and_cited():
    result, client = run(WITH_KEY)
    assert result.found and result.answer == "71432"
    (citation,) = result.citations
    assert citation.quote == KEY and WITH_KEY[citation.start : citation.end] == KEY
    assert citation.line == WITH_KEY[: citation.start].count("\n") + 1
    assert citation.chunk in result.supporting_chunks or result.supporting_chunks == []
    reduce_prompt = client.requests[-1].messages[-1].content
    assert "55555" not in reduce_prompt and f'Quote: "{KEY}"' in reduce_prompt


def test_a_right_answer_with_an_unfound_quote_is_still_set_aside_for_retrieval():
    def sloppy(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput" and "71432" in chunk_of(request):
            return partial_reply("71432", 5, info="key", evidence=["The secret number was given as 71432 in the memo."])
        return partial_reply(None, 0, info="")

    result, _ = run(WITH_KEY, sloppy)
    assert not result.found


def test_a_retrieval_value_comes_from_a_found_sentence_that_names_the_request():
    """SmolLM2 behind a server: the key sentence only in its extracted information (asked for
    verbatim), a bare "the pass key" as evidence, and junk made of real words as the answer."""

    def sloppy(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput" and "71432" in chunk_of(request):
            info = f"The weather was mild and nothing happened that day. {KEY} The wea"
            return partial_reply("nothing happened that day", 5, info=info, evidence=["the pass key"])
        if request.schema_name == "MapOutput":
            return partial_reply(
                "The weather was mild", 5, info="The weather was mild.", evidence=["The weather was mild"]
            )
        answers = re.findall(r"^Answer: (.+)$", request.messages[-1].content, flags=re.M)
        return final_reply(answers[0], 5, [])

    result, _ = run(WITH_KEY, sloppy)
    assert result.found and "71432" in result.answer
    assert len(result.citations) == 1 and KEY in result.citations[0].quote


def test_a_reply_that_copies_the_needle_but_answers_null_still_finds_it():
    """SmolLM2 on the NIAH haystack: the needle copied as extracted information and evidence, the
    answer null. The found sentence naming the request stands in for the value; a null reply
    quoting a sentence that names nothing of the request stays no information."""

    def copies_but_abstains(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            part = chunk_of(request)
            info = KEY if "71432" in part else "The weather was mild and nothing happened that day."
            return partial_reply(None, 5, info=info, evidence=[info])
        return final_reply(re.findall(r"^Answer: (.+)$", request.messages[-1].content, flags=re.M)[0], 5, [])

    result, _ = run(WITH_KEY, copies_but_abstains)
    assert result.found and "71432" in result.answer
    assert [c.quote for c in result.citations] == [KEY]
    checks = [c.check or "" for c in result.trace.calls if c.stage == "map"]
    assert sum("no value given" in check for check in checks) == 1
    assert all("no value given" in check or "none naming what the request asks for" in check for check in checks)
    result, _ = run(WITHOUT_KEY, copies_but_abstains)
    assert not result.found


def test_an_invented_sentence_cannot_reach_the_final_answer_through_the_extracted_information():
    """A reply whose extracted information blends the real sentence with an invented one: only
    the found sentence is kept for later stages, and a reduce that copies the invented value
    gives way to the checked partial answer."""
    blended = f"{KEY} The door code is 55555."

    def blends(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            if "71432" in chunk_of(request):
                return partial_reply("71432", 5, info=blended, evidence=[KEY])
            return partial_reply(None, 0, info="")
        return final_reply("55555", 5, [])

    result, client = run(WITH_KEY, blends)
    reduce_prompt = client.requests[-1].messages[-1].content
    assert "55555" not in reduce_prompt and KEY in reduce_prompt
    assert result.answer == "71432"
    assert any("the most confident partial answer stands" in (c.check or "") for c in result.trace.calls)


def qa_responder(request: ChatRequest) -> str:
    """Every chunk answers; only the chunk with the key quotes the text."""
    if request.schema_name == "MapOutput":
        if "71432" in chunk_of(request):
            return partial_reply("It is 71432.", 4, info=KEY, evidence=[KEY])
        return partial_reply("Probably 12345.", 4, info="a guess", evidence=["The key is probably 12345."])
    if request.schema_name == "CollapseOutput":
        return partial_reply("It is 71432.", 4, info="merged", evidence=[])
    return final_reply("It is 71432.", 4, [])


def test_cap_keeps_unsupported_qa_answers_with_their_confidence_capped():
    result, client = run(WITH_KEY, qa_responder, task_type="qa", **{"grounding.unsupported_confidence": 1.5})
    assert result.found and result.answer == "It is 71432."
    maps = [c for c in result.trace.calls if c.stage == "map"]
    capped = [c for c in maps if c.check and "confidence capped at 1.5" in c.check]
    assert len(capped) == len(maps) - 1
    reduce_prompt = client.requests[-1].messages[-1].content
    assert "(confidence 1.5; unverified: no quote of the text supports it)" in reduce_prompt
    assert "(confidence 4; quoted from the text)" in reduce_prompt
    assert [c.quote for c in result.citations] == [KEY]


def test_strict_drops_unsupported_qa_answers():
    result, client = run(WITH_KEY, qa_responder, task_type="qa", **{"grounding.mode": "strict"})
    assert result.found and [c.quote for c in result.citations] == [KEY]
    reduce_prompt = client.requests[-1].messages[-1].content
    assert "12345" not in reduce_prompt and reduce_prompt.count("### Chunk") == 1


def test_cap_with_no_supported_answer_anywhere_is_unsupported_and_keeps_the_guess_apart():
    """The reduce still gives the model's answer (what a benchmark scores as the model's text), but
    as an unsupported guess: never the answer, at no more than the capped confidence."""
    result, client = run(WITHOUT_KEY, qa_responder, task_type="qa")
    assert result.status == "unsupported" and not result.found and result.answer == "" and result.citations == []
    assert result.unsupported_guess == "It is 71432." and result.confidence <= 2
    assert "no quote of the text holds it and is about what is asked" in result.rationale
    (reduce_call,) = [c for c in result.trace.calls if c.stage == "reduce"]
    assert "the model's unsupported guess" in (reduce_call.check or "")


def test_summaries_neither_quote_nor_get_checked():
    def summariser(request: ChatRequest) -> str:
        assert request.json_schema is not None
        if request.schema_name != "FinalAnswer":
            assert "evidence" not in request.json_schema["properties"]
            return partial_reply("A mild day.", 3, evidence=[])
        return final_reply("Nothing happened.", 3)

    result, _ = run(WITHOUT_KEY, summariser, task_type="summary")
    assert result.found and result.answer == "Nothing happened." and result.citations == []
    assert all(c.check is None for c in result.trace.calls)


def test_the_quoting_families_send_the_evidence_field():
    result, client = run(WITH_KEY, qa_responder, task_type="qa")
    maps = [r for r in client.requests if r.schema_name == "MapOutput"]
    assert all(r.json_schema and r.json_schema["required"][1] == "evidence" for r in maps)
    assert result.found


# A rationale long enough that three partials do not fit one reduce prompt, and none of its
# sentences repeated (a reply that repeats itself is cut where it starts to).
SAYS_SO = " ".join(f"It says so in line {n}." for n in range(12))


def test_a_collapse_that_drops_the_verified_answer_gives_way_to_it():
    def forgetful(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            if "71432" in chunk_of(request):  # long enough that three do not fit one reduce prompt
                return partial_reply("71432", 5, info=KEY, rationale=SAYS_SO, evidence=[KEY])
            return partial_reply(None, 0, info="")
        if request.schema_name == "CollapseOutput":
            return partial_reply(None, 0, info="")
        return final_reply("71432", 5)

    document = "\n\n".join([FILLER, KEY, FILLER, KEY.replace("Remember", "Keep"), FILLER, KEY, FILLER])
    small = {"generation.map_max_tokens": 64, "generation.collapse_max_tokens": 64, "generation.reduce_max_tokens": 64}
    result, client = run(document, forgetful, **{"llm.context_window": 520, **small})
    collapses = [c for c in result.trace.calls if c.stage == "collapse"]
    assert collapses and "dropped the verified answers" in collapses[0].check
    assert result.found and result.answer == "71432"


def test_a_value_only_in_a_collapse_s_own_information_cannot_be_the_final_answer():
    def embellishing(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            if "71432" in chunk_of(request):
                return partial_reply("71432", 5, info=KEY, rationale=SAYS_SO, evidence=[KEY])
            return partial_reply(None, 0, info="")
        if request.schema_name == "CollapseOutput":
            return partial_reply("71432", 5, info="The pass key is 71432, or 55555 on Sundays.", evidence=[KEY])
        return final_reply("55555", 5)

    document = "\n\n".join([FILLER, KEY, FILLER, KEY.replace("Remember", "Keep"), FILLER, KEY, FILLER])
    small = {"generation.map_max_tokens": 64, "generation.collapse_max_tokens": 64, "generation.reduce_max_tokens": 64}
    result, client = run(document, embellishing, **{"llm.context_window": 520, **small})
    assert any(c.stage == "collapse" for c in result.trace.calls)
    assert "55555" in client.requests[-1].messages[-1].content  # the reduce was shown it
    assert result.answer == "71432"  # but a value no checked answer or found quote holds is refused


def test_citations_appear_in_the_cli_output_and_json(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from llmxmr.cli import main

    document = tmp_path / "doc.txt"
    document.write_text(WITH_KEY)
    monkeypatch.setattr(
        "llmxmr.pipeline.make_client",
        lambda config: ScriptedClient(responder=honest_or_inventive, counter=WordCounter()),
    )
    base = ["run", "--input", str(document), "--question", "What is the pass key?", "--task-type", "retrieval"]
    base += ["--chunk-tokens", "120", "--no-progress"]
    text = CliRunner().invoke(main, base)
    assert text.exit_code == 0, text.output
    line = WITH_KEY[: WITH_KEY.index(KEY)].count("\n") + 1
    assert text.stdout.splitlines()[0] == "71432"
    assert f'line {line}, chars {WITH_KEY.index(KEY)}-{WITH_KEY.index(KEY) + len(KEY)}: "{KEY}"' in text.stdout
    hidden = CliRunner().invoke(main, [*base, "--no-citations"])
    assert hidden.stdout.strip() == "71432"
    payload = json.loads(CliRunner().invoke(main, [*base, "--json"]).stdout)
    assert payload["citations"] == [
        {
            "chunk": payload["citations"][0]["chunk"],
            "start": WITH_KEY.index(KEY),
            "end": WITH_KEY.index(KEY) + len(KEY),
            "line": line,
            "quote": KEY,
            "match": "exact",
            "score": 100.0,
            "page": None,
            "section": [],
            "location": None,
        }
    ]
    unchecked = CliRunner().invoke(main, [*base, "--grounding", "off"])
    assert unchecked.exit_code == 0 and unchecked.stdout.splitlines()[0] == "55555"  # the flag took effect
