"""Map: one call per chunk, returning what that chunk says about the question. Its reply is
checked against the text by the task family (``llmxmr.families``)."""

from __future__ import annotations

import re

from ..prompts import ChatMessage, PromptSet


# The tags the map prompts put around a chunk. A document that contains them (this README does)
# must not be able to close the quoted part early and speak as the prompt: inside a chunk, every
# spelling of them (any case, spaces inside the brackets) gets a zero-width space after "<",
# which keeps it readable and makes it another tag.
DOCUMENT_TAGS = ("<document_part>", "</document_part>")
_TAG_IN_TEXT = re.compile(r"<(\s*/?\s*document_part\s*)>", re.IGNORECASE)
_ZERO_WIDTH_SPACE = "\u200b"


def quote_as_data(chunk_text: str) -> str:
    """The chunk as the prompt quotes it: its copies of the delimiting tags defused."""
    return _TAG_IN_TEXT.sub(lambda m: f"<{_ZERO_WIDTH_SPACE}{m.group(1)}>", chunk_text)


def map_messages(prompts: PromptSet, question: str, chunk_text: str) -> list[ChatMessage]:
    """System message, then instructions and question, then the chunk: a prefix shared by all
    map calls of a run."""
    return prompts.messages("map", question=question, chunk=quote_as_data(chunk_text))
