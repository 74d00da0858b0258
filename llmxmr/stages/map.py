"""Map: one call per chunk, returning what that chunk says about the question."""

from __future__ import annotations

from ..prompts import ChatMessage, PromptSet


def map_messages(prompts: PromptSet, question: str, chunk_text: str) -> list[ChatMessage]:
    """System message, then instructions and question, then the chunk: a prefix shared by all
    map calls of a run."""
    return prompts.messages("map", question=question, chunk=chunk_text)
