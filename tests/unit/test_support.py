"""Answers you can check: a quote supports an answer only when it holds what the answer states and
is about what the question asks; every result says what it is (answered, unsupported, not found,
incomplete) and never shows a guess as an answer."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.chunking import Chunk
from llmxmr.cli import _answer_text, main
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.families import SupportCheck, family
from llmxmr.grounding import Citation, DocumentIndex, locate_all, stem
from llmxmr.partials import Partial
from llmxmr.schemas import CollapseOutput, MapOutput

from ..conftest import WordCounter, final_reply, partial_reply

FILLER = "Elizabeth walked to Meryton with her sisters, and the morning was fine. " * 20
LONGBOURN = "The family at Longbourn dined early that week."
LETTER = (
    "She wrote cheerfully, seemed surrounded with comforts, and mentioned nothing which she could not praise. "
    "The house, furniture, neighbourhood, and roads, were all to her taste, and Lady Catherine's behaviour was "
    "most friendly and obliging. It was Mr. Collins's picture of Hunsford and Rosings rationally softened."
)
CATHERINE = "Lady Catherine's behaviour was most friendly and obliging"
GARDENER = "The new gardener at Longbourn was a quiet young man named Tobias Wrenfield."
HIRED = "Longbourn hired a new gardener in the spring. Everyone called him Tobias Wrenfield."
QUESTION = "What was the name of the new gardener at Longbourn?"
WITHOUT_FACT = f"{FILLER}\n\n{LONGBOURN}\n\n{LETTER}\n\n{FILLER}"
WITH_FACT = f"{FILLER}\n\n{LONGBOURN}\n\n{LETTER}\n\n{GARDENER}\n\n{FILLER}"
THRESHOLD = 90.0


def whole(text: str) -> Chunk:
    return Chunk(index=0, start=0, end=len(text), overlap_start=0, text=text, tokens=len(text.split()))


def cited(quote: str, text: str) -> Citation:
    (citation,) = locate_all([quote], whole(text), DocumentIndex(text), THRESHOLD)
    return citation


def check(question: str, text: str) -> SupportCheck:
    return family("qa").support(question, DocumentIndex(text))


# --- the rule, on located quotes ----------------------------------------------------------------


def test_a_quote_of_the_questions_own_words_is_no_evidence():
    text = f"{FILLER} The pass key is 71432. Remember it. {FILLER}"
    echo = cited("The pass key", text)
    support = check("What is the pass key?", text)
    assert support.supporting("71432", [echo]) == []
    assert support.supporting("The pass key is a very important part of the question", [echo]) == []
    assert support.supporting("71432", [cited("The pass key is 71432.", text)]) != []


def test_information_with_no_answer_must_name_the_whole_subject_of_a_question_about_the_text():
    """With no answer to hold, a quote is information about the question only when it names
    everything the question is about: the new cook is not the new gardener."""
    cook = "The new cook was named Ann Hill."
    text = f"{FILLER}\n\n{LONGBOURN}\n\n{GARDENER}\n\n{cook}\n\n{FILLER}"
    support = check(QUESTION, text)
    gardener, other = cited(GARDENER, text), cited(cook, text)
    assert support.about([gardener, other]) == [gardener]
    code = "def compute_beta(n):\n    return n * 17\n\ndef compute_alpha(n):\n    return n + 1\n"
    beta = cited("def compute_beta(n):\n    return n * 17", code)
    asked = "What does the function compute_alpha return when called with 3?"
    assert family("code").support(asked, DocumentIndex(code)).about([beta]) == []  # an operation: no subject


def test_an_answer_without_a_word_is_supported_by_no_quote():
    """Punctuation alone ("] ,", a reply cut inside its JSON) claims nothing a quote could hold."""
    text = f"{FILLER} The pass key is 71432. Remember it. {FILLER}"
    support = check("What is the pass key?", text)
    assert support.supporting("] ,", [cited("The pass key is 71432.", text)]) == []
    assert support.supporting("", [cited("The pass key is 71432.", text)]) == []


def test_an_answer_of_nothing_but_framing_and_function_words_is_supported_by_no_quote():
    """The README's first command answered ", the answer is that", and a quote holding "answer" and
    about what was asked stood for it. A yes or a no says something with no other word."""
    text = f"{FILLER} The pass key is 71432, and the answer is that number. {FILLER}"
    quote = cited("The pass key is 71432, and the answer is that number.", text)
    assert check("What is the pass key?", text).supporting(", the answer is that", [quote]) == []
    assert check("What is the pass key?", text).supporting("The answer is 71432.", [quote]) == [quote]
    assert check("Is the pass key 71432?", text).supporting("Yes.", [quote]) == [quote]


def test_an_answer_cut_off_before_it_says_what_is_supported_by_no_quote():
    """The README's first command answered "The embedded default model is", and a long quote
    holding "embedded default" stood for it. A finished sentence ending so is an answer."""
    text = f"{FILLER} The embedded default model is SmolLM2, and it runs when no server is set. {FILLER}"
    quote = cited("The embedded default model is SmolLM2, and it runs when no server is set.", text)
    support = check("Which model runs when no server is set?", text)
    for cut in ("The embedded default model is", "The embedded default model is the", "The default was a,"):
        assert support.supporting(cut, [quote]) == [], cut
    for whole_answer in ("Vitamin A", "a tin can", "in his will", "It is what it is."):
        assert not support.claim(whole_answer).cut_off, whole_answer
    assert support.supporting("The embedded default model is SmolLM2", [quote]) == [quote]
    assert support.supporting("SmolLM2 is what it is.", [quote]) == [quote]


def test_a_question_copied_from_the_text_answers_nothing():
    """The README's first command: SmolLM2 answered "Which model ...?" with a question of the
    README's own, which a quote of that question holds word for word."""
    text = f"{FILLER} Which gardener did Mr. Bennet hire at Longbourn? {FILLER}"
    support = check(QUESTION, text)
    asked_back = cited("Which gardener did Mr. Bennet hire at Longbourn?", text)
    assert support.supporting("Which gardener did Mr. Bennet hire at Longbourn?", [asked_back]) == []
    assert support.supporting("“Who was hired?”", [asked_back]) == []
    assert support.stating("Which gardener did Mr. Bennet hire at Longbourn?", whole(text)) is None
    fact = cited(GARDENER, WITH_FACT)  # a statement is still checked as before
    assert check(QUESTION, WITH_FACT).supporting("Tobias Wrenfield", [fact]) == [fact]


def test_a_quote_with_the_answers_words_that_is_not_about_the_subject_is_no_support():
    """The gardener case: the quote holds "Lady Catherine", but neither it nor the sentences beside
    it name a gardener (the text names none)."""
    support = check(QUESTION, WITHOUT_FACT)
    quote = cited(CATHERINE, WITHOUT_FACT)
    assert support.supporting("The new gardener at Longbourn is Lady Catherine's", [quote]) == []
    assert support.stating("The new gardener at Longbourn is Lady Catherine's", whole(WITHOUT_FACT)) is None


def test_a_quote_holding_the_value_and_naming_the_subject_supports_it():
    support = check(QUESTION, WITH_FACT)
    fact = cited(GARDENER, WITH_FACT)
    assert support.supporting("Tobias Wrenfield", [fact]) == [fact]
    assert support.supporting("It was Tobias Wrenfield, a quiet young man.", [fact]) == [fact]
    # The same value somewhere the subject is not named is no support; nor is another value.
    elsewhere = f"{WITH_FACT}\n\nTobias Wrenfield sold apples on market days.\n\n{FILLER}"
    apples = cited("Tobias Wrenfield sold apples on market days.", elsewhere)
    assert check(QUESTION, elsewhere).supporting("Tobias Wrenfield", [apples]) == []
    assert support.supporting("Tobias Wrenfield, hired from Rosings", [fact]) == []  # a word it does not hold


def test_english_inflections_meet_so_a_question_and_its_answer_do():
    assert stem("married") == stem("marry") == stem("marries") and stem("named") == stem("name")
    assert stem("kept") == stem("keeps") == "keep" and stem("said") == "say" and stem("pass") == stem("passes")
    text = f"{FILLER}\n\nMrs. Hill kept the key of the cellar in a blue tin.\n\n{FILLER}"
    quote = cited("Mrs. Hill kept the key of the cellar in a blue tin.", text)
    assert check("What did Mrs. Hill keep in the blue tin?", text).supporting("the cellar keys", [quote]) == [quote]


def test_a_quote_whose_neighbouring_sentence_names_the_subject_supports_it():
    text = f"{FILLER}\n\n{HIRED}\n\n{FILLER}"
    called = cited("Everyone called him Tobias Wrenfield.", text)
    assert check(QUESTION, text).supporting("Tobias Wrenfield", [called]) == [called]


def test_a_word_the_document_writes_everywhere_does_not_make_a_passage_about_the_question():
    """The README's first command: on a document about llmxmr, a quote of a path beside "llmxmr"
    held the answer "llmxmr/families/support.py" and named "llmxmr", one of the question's rarer
    words there, and "evidence" was held by a passage naming "llmxmr" and "model". Words written
    everywhere are the document's topic; the subject is the question's rarer words less those."""
    question = "Which model does llmxmr run when no server is configured?"
    serving = [f"It runs model {i} on a server." for i in range(20)]  # "run", "model", "server": everywhere
    notes = [f"Then llmxmr keeps note {i} in a file." for i in range(12)]  # "llmxmr": everywhere, less often
    path = "Its support rule is in llmxmr/families/support.py, beside the model."
    default = "Where no server is configured, llmxmr runs the bundled SmolLM2 model."
    text = " ".join([*serving[:10], *notes[:6], path, *notes[6:], default, *serving[10:]])
    support = check(question, text)
    assert support.supporting("llmxmr/families/support.py", [cited("llmxmr/families/support.py", text)]) == []
    bundled = cited("the bundled SmolLM2 model", text)
    assert support.supporting("SmolLM2", [bundled]) == [bundled]
    # When every word of the question is written everywhere, the rarer of them still make the subject.
    everywhere = " ".join([*serving[:10], *notes, "By default llmxmr runs SmolLM2.", *serving[10:]])
    smollm2 = cited("By default llmxmr runs SmolLM2.", everywhere)
    assert check("Which model does llmxmr run?", everywhere).supporting("SmolLM2", [smollm2]) == [smollm2]


def test_citations_are_ordered_by_support():
    text = f"{FILLER}\n\n{HIRED}\n\n{FILLER}\n\n{GARDENER}\n\n{FILLER}"
    called, fact = cited("Everyone called him Tobias Wrenfield.", text), cited(GARDENER, text)
    assert called.start < fact.start
    assert check(QUESTION, text).supporting("Tobias Wrenfield", [called, fact]) == [fact, called]
    # A longer answer: the quote that holds more of it first.
    long = "Tobias Wrenfield, a quiet young man, was the new gardener hired in the spring"
    assert check(QUESTION, text).supporting(long, [called, fact]) == [fact, called]


def test_an_answer_naming_an_option_by_its_letter_claims_the_options_text():
    text = f"{FILLER}\n\n{GARDENER}\n\n{FILLER}"
    question = f"{QUESTION}\nA. Lady Catherine\nB. Tobias Wrenfield\nC. Mr. Collins\nD. Mrs. Hill"
    support = family("choice").support(question, DocumentIndex(text))
    fact = cited(GARDENER, text)
    assert support.supporting("B", [fact]) == [fact] and support.supporting("B. Tobias Wrenfield", [fact]) == [fact]
    assert support.supporting("A", [fact]) == []


def test_chinese_answers_are_checked_by_pairs_of_characters():
    text = (
        "前言写了很多。\n李四是张三的父亲。\n" + "天气很好，大家都去了公园。" * 5 + "\n李四在北京工作了很多年。\n结束。"
    )
    support = family("zh").support("张三的父亲是谁？", DocumentIndex(text))
    father, beijing = cited("李四是张三的父亲。", text), cited("李四在北京工作了很多年。", text)
    assert support.supporting("李四", [father]) == [father]
    assert support.supporting("李四", [beijing]) == []  # it holds the name, but says nothing of the father
    assert support.supporting("王五", [father]) == []


def test_a_collapse_that_changes_the_answer_keeps_no_quote_that_does_not_hold_it():
    document = DocumentIndex(WITH_FACT)
    fact = cited(GARDENER, WITH_FACT)
    answer = MapOutput(
        extracted_information="", evidence=[GARDENER], rationale="", answer="Tobias Wrenfield", confidence=5
    )
    group = [Partial(chunk_indices=[0], answer=answer, citations=[fact], support="verified")]
    settings = PipelineConfig.load().grounding
    merged = CollapseOutput(
        extracted_information="", evidence=[GARDENER], rationale="", answer="Mr. Collins", confidence=5
    )
    partial, note = family("qa").ground_collapse(merged, group, QUESTION, document, settings)
    assert partial.answer.answer == "Tobias Wrenfield" and "best verified input stands" in (note or "")
    same = merged.model_copy(update={"answer": "Tobias Wrenfield, the quiet young man"})
    partial, note = family("qa").ground_collapse(same, group, QUESTION, document, settings)
    assert partial.answer.answer == same.answer and partial.citations == [fact] and note is None


# --- through the pipeline ---------------------------------------------------------------------


def responder(
    answer: str | None,
    evidence: list[str],
    *,
    final: str | None = None,
    confidence: float = 4.5,
    map_confidence: float = 5,
):
    """Every chunk that holds the first quote answers ``answer`` with ``evidence`` at
    ``map_confidence``; the reduce answers ``final`` (by default the same) at ``confidence``."""

    def respond(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if request.schema_name == "MapOutput":
            part = prompt.rsplit("<document_part>", 1)[1]
            if answer is not None and evidence and evidence[0].split()[0] in part:
                return partial_reply(answer, map_confidence, info=evidence[0], evidence=evidence)
            return partial_reply(None, 0, info="")
        return final_reply(final or answer or "none", confidence)

    return respond


def ask(document: str, respond, **settings):
    client = ScriptedClient(responder=respond, counter=WordCounter())
    config = PipelineConfig.load(**{"chunking.chunk_tokens": 2000, "llm.concurrency": 2, **settings})
    return MapReducePipeline(config, client=client).run(document, QUESTION), client


def test_answered_cites_only_the_quotes_that_support_it_the_best_first():
    document = f"{FILLER}\n\n{HIRED}\n\n{FILLER}\n\n{GARDENER}\n\n{FILLER}"
    evidence = ["Everyone called him Tobias Wrenfield.", GARDENER, "Elizabeth walked to Meryton with her sisters"]
    result, _ = ask(document, responder("Tobias Wrenfield", evidence))
    assert (result.status, result.found, result.answer) == ("answered", True, "Tobias Wrenfield")
    assert [c.quote for c in result.citations] == [GARDENER, "Everyone called him Tobias Wrenfield."]
    assert [c.quote for c in result.related] == ["Elizabeth walked to Meryton with her sisters"]
    assert result.unsupported_guess is None


def test_unsupported_keeps_the_guess_apart_and_lists_its_quotes_as_related_passages():
    result, client = ask(WITHOUT_FACT, responder("The new gardener at Longbourn is Lady Catherine's", [CATHERINE]))
    assert (result.status, result.found, result.answer, result.citations) == ("unsupported", False, "", [])
    assert result.unsupported_guess == "The new gardener at Longbourn is Lady Catherine's"
    assert [c.quote for c in result.related] == [CATHERINE]
    assert result.confidence <= 2  # the capped confidence of an unsupported answer
    assert any(r.schema_name == "FinalAnswer" for r in client.requests)  # the guess is the model's own text


def test_a_paraphrased_answer_is_cited_by_the_sentence_that_states_it_and_its_quote_goes_to_related():
    evidence = ["Elizabeth walked to Meryton with her sisters", "the gardener is called Tobias Wrenfield"]
    result, _ = ask(WITH_FACT, responder("Tobias Wrenfield", evidence))
    assert result.status == "answered"
    (citation,) = result.citations
    assert citation.match == "stated" and citation.quote == GARDENER
    assert [c.quote for c in result.related] == ["Elizabeth walked to Meryton with her sisters"]


def test_under_strict_grounding_the_guess_is_still_kept_without_a_reduce():
    result, client = ask(WITHOUT_FACT, responder("Lady Catherine's", [CATHERINE]), **{"grounding.mode": "strict"})
    assert result.status == "unsupported" and result.unsupported_guess == "Lady Catherine's"
    assert not any(r.schema_name == "FinalAnswer" for r in client.requests)
    assert [c.quote for c in result.related] == [CATHERINE]


def test_a_supported_answer_below_the_confidence_threshold_is_unsupported():
    respond = responder("Tobias Wrenfield", [GARDENER], confidence=0.5, map_confidence=0.5)
    result, _ = ask(WITH_FACT, respond)
    assert (result.status, result.answer, result.unsupported_guess) == ("unsupported", "", "Tobias Wrenfield")
    assert result.citations == [] and [c.quote for c in result.related] == [GARDENER]
    assert "below grounding.min_confidence (1)" in result.rationale
    result, _ = ask(WITH_FACT, respond, **{"grounding.min_confidence": 0.5})
    assert result.status == "answered" and result.answer == "Tobias Wrenfield"


def test_a_low_scored_final_answer_backed_by_a_confident_cited_partial_stands_at_its_confidence():
    """The reduce's own score is not the only one: a verified partial answer whose quote is among
    the final answer's citations backs it at its confidence."""
    result, _ = ask(WITH_FACT, responder("Tobias Wrenfield", [GARDENER], confidence=0.5, map_confidence=4))
    assert (result.status, result.answer, result.confidence) == ("answered", "Tobias Wrenfield", 4)
    assert [c.quote for c in result.citations] == [GARDENER]


def test_not_found_when_every_chunk_was_read_and_none_answered():
    result, client = ask(WITHOUT_FACT, responder(None, []))
    assert (result.status, result.found, result.answer, result.unsupported_guess) == ("not_found", False, "", None)
    assert result.rationale.startswith("The document does not appear to contain the answer")
    assert not any(r.schema_name == "FinalAnswer" for r in client.requests)


@pytest.mark.parametrize("guess", [False, True])
def test_incomplete_when_nothing_is_supported_and_a_chunk_went_unread(guess):
    document = f"{FILLER}\n\n{LETTER}\n\n{FILLER}\n\n" + "Mary read in the library all afternoon. " * 60

    def respond(request: ChatRequest) -> str:
        part = "\n".join(m.content for m in request.messages).rsplit("<document_part>", 1)[-1]  # a reask adds one
        if request.schema_name == "MapOutput" and "library" in part:
            return "not json"  # this chunk never gets a valid reply: it goes unread
        if request.schema_name == "MapOutput" and guess and "Lady Catherine" in part:
            return partial_reply("Lady Catherine's", 5, info=CATHERINE, evidence=[CATHERINE])
        if request.schema_name == "MapOutput":
            return partial_reply(None, 0, info="")
        return final_reply("Lady Catherine's")

    client = ScriptedClient(responder=respond, counter=WordCounter())
    config = PipelineConfig.load(**{"chunking.chunk_tokens": 300, "llm.concurrency": 2})
    result = MapReducePipeline(config, client=client).run(document, QUESTION)
    assert result.unread_chunks and result.status == "incomplete" and not result.found and result.answer == ""
    assert result.rationale.startswith("The answer was not found in the chunks that were read.")
    assert result.unsupported_guess == ("Lady Catherine's" if guess else None)
    # As run and chat print it: a guess is never shown as an answer, and comes with its passages.
    shown = _answer_text(result, no_citations=False).splitlines()
    if guess:
        assert shown[:2] == ["No supported answer", "Unsupported guess (not an answer): Lady Catherine's"]
        assert "Closest passages" in "\n".join(shown) and CATHERINE in "\n".join(shown)
    else:
        assert shown == [f"(incomplete) {result.rationale}"]


def test_every_status_keeps_found_consistent():
    cases = [
        ask(WITH_FACT, responder("Tobias Wrenfield", [GARDENER]))[0],
        ask(WITHOUT_FACT, responder("Lady Catherine's", [CATHERINE]))[0],
        ask(WITHOUT_FACT, responder(None, []))[0],
    ]
    assert [r.status for r in cases] == ["answered", "unsupported", "not_found"]
    assert all(r.found == (r.status == "answered") for r in cases)
    assert all(json.loads(r.model_dump_json())["status"] == r.status for r in cases)


# --- what llmxmr run and chat print -------------------------------------------------------------


def run_cli(tmp_path, document: str, replies: list[str], *args: str, name: str = "doc.txt"):
    """``llmxmr run`` against a fake OpenAI-compatible server giving ``replies`` in turn."""
    from tests.fake_server import completion, fake_server, models

    path = tmp_path / name
    path.write_text(document, encoding="utf-8")
    scripts = {
        "/v1/models": [models("vllm", max_model_len=8192)],
        "/v1/chat/completions": list(map(completion, replies)),
    }
    with fake_server(scripts) as server:
        command = ["run", "--input", str(path), "--question", QUESTION, "--base-url", server.base_url]
        command += ["--tokenizer", "tiktoken", "--no-progress", *args]
        return CliRunner().invoke(main, command)


GUESS = "The new gardener at Longbourn is Lady Catherine's"


def test_run_prints_no_supported_answer_the_guess_and_the_closest_passages_with_their_section(tmp_path):
    document = f"# Chapter 12\n\n{FILLER}\n\n## Hunsford\n\n{LETTER}\n\n{FILLER}\n"
    replies = [partial_reply(GUESS, 5, info=CATHERINE, evidence=[CATHERINE]), final_reply(GUESS, 4.5)]
    shown = run_cli(tmp_path, document, replies, name="notes.md")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "No supported answer"
    assert lines[1] == f"Unsupported guess (not an answer): {GUESS}"
    assert GUESS not in "\n".join(lines[2:])  # never printed as an answer
    assert "Closest passages (they do not support the guess):" in shown.stdout
    assert "[1] Chapter 12 › Hunsford, chunk 0, line " in shown.stdout and CATHERINE in shown.stdout
    assert "Citations:" not in shown.stdout and shown.stderr.startswith("unsupported · ")
    payload = json.loads(run_cli(tmp_path, document, replies, "--json", name="notes.md").stdout)
    assert (payload["status"], payload["found"], payload["answer"]) == ("unsupported", False, "")
    assert payload["unsupported_guess"] == GUESS and payload["related"][0]["location"] == "Chapter 12 › Hunsford"


def test_run_says_when_no_passage_is_close(tmp_path):
    replies = [
        partial_reply(GUESS, 5, info="x", evidence=["the gardener was very kind to everyone"]),
        final_reply(GUESS),
    ]
    shown = run_cli(tmp_path, WITHOUT_FACT, replies)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == "No supported answer"
    assert "Closest passages: none" in shown.stdout


def test_run_prints_an_answer_with_its_citations_and_not_found_plainly(tmp_path):
    answered = run_cli(
        tmp_path, WITH_FACT, [partial_reply("Tobias Wrenfield", 5, info=GARDENER), final_reply("Tobias Wrenfield")]
    )
    assert answered.stdout.splitlines()[0] == "Tobias Wrenfield" and "Citations:" in answered.stdout
    assert GARDENER in answered.stdout and answered.stderr.startswith("answered · ")
    nothing = run_cli(tmp_path, WITHOUT_FACT, [partial_reply(None, 0, info="")])
    assert nothing.stdout.splitlines()[0].startswith("(not found) The document does not appear to contain the answer")


def test_chat_prints_an_unsupported_result_as_run_does(tmp_path, monkeypatch):
    from llmxmr import cli

    path = tmp_path / "doc.txt"
    path.write_text(WITHOUT_FACT, encoding="utf-8")
    client = ScriptedClient(responder=responder(GUESS, [CATHERINE]), counter=WordCounter())
    monkeypatch.setattr(cli, "make_client", lambda config: client)
    shown = CliRunner().invoke(main, ["chat", "--input", str(path)], input=f"{QUESTION}\n".encode())
    assert shown.exit_code == 0, shown.output
    assert "No supported answer" in shown.stdout and f"Unsupported guess (not an answer): {GUESS}" in shown.stdout
    assert CATHERINE in shown.stdout
