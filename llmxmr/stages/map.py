"""Map: one call per chunk, returning what that chunk says about the question."""

from __future__ import annotations

from ..prompts import ChatMessage, PromptSet


def map_messages(prompts: PromptSet, question: str, chunk_text: str) -> list[ChatMessage]:
    """System message, then instructions and question, then the chunk: a prefix shared by all
    map calls of a run."""
    return prompts.messages("map", question=question, chunk=chunk_text)


def answer_in_text(answer: str, text: str) -> bool:
    """Whether the answer occurs literally in the text (case and runs of whitespace ignored): the
    test a retrieval answer must pass, since the value it asks for is written in the document."""
    return _normalised(answer) in _normalised(text)


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()
