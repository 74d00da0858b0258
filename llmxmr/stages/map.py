"""Map: one call per chunk, returning what that chunk says about the question."""

from __future__ import annotations

import re

from ..prompts import ChatMessage, PromptSet


def map_messages(prompts: PromptSet, question: str, chunk_text: str) -> list[ChatMessage]:
    """System message, then instructions and question, then the chunk: a prefix shared by all
    map calls of a run."""
    return prompts.messages("map", question=question, chunk=chunk_text)


def retrieval_rejection(answer: str, evidence: str, request: str, chunk_text: str) -> str | None:
    """Why a retrieval answer cannot be right, or None. The requested value is written in the
    document, and the sentence that holds it names what the request asks for (the pass key, the
    key of a pair). So every word of the answer that carries content (any word with a digit, any
    other word of three letters or more that is not a stopword, as in "The answer is 71432")
    must occur in the chunk, and the answer or its evidence must share such a word with the
    request."""
    answer_words = _content_words(answer, keep_digits=True)
    if answer_words - set(_WORD.findall(chunk_text.casefold())) or (
        not answer_words and _normalised(answer) not in _normalised(chunk_text)
    ):
        return "the answer does not occur in the chunk"
    wanted = _content_words(request)
    if wanted and not wanted & _content_words(f"{answer} {evidence}"):
        return "neither the answer nor its evidence mentions what the request asks for"
    return None


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


# Words that say nothing about what a request is after.
_STOPWORDS = frozenset(
    "the and for are was were what which who whom whose when where why how this that these those "
    "with from into about there their them they you your please tell give find provide extract "
    "answer question text document below above following specified corresponding is".split()
)
_WORD = re.compile(r"\w+")


def _content_words(text: str, keep_digits: bool = False) -> set[str]:
    return {
        word
        for word in _WORD.findall(text.casefold())
        if (keep_digits and any(ch.isdigit() for ch in word)) or (len(word) >= 3 and word not in _STOPWORDS)
    }
