"""Map: one call per chunk, returning what that chunk says about the question. Its reply is
checked against the text by the task family (``llmxmr.families``)."""

from __future__ import annotations

import os
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
    """The system message and the map instructions (shared by every map call of the family), then
    the chunk, then the question (see ``prompts``: the template is checked for this layout)."""
    return prompts.messages("map", question=question, chunk=quote_as_data(chunk_text))


def map_prefix(prompts: PromptSet, chunk_text: str | None = None) -> list[ChatMessage]:
    """What the map messages of every question about this chunk begin with (of every map call, with
    no chunk given): the system message and the user message up to where two questions' prompts
    part. Laid out document first, that is the instructions and the chunk, which a prefix cache
    computes once per chunk; question first, the instructions alone."""
    *shared, one = map_messages(prompts, "\x00", "\x02" if chunk_text is None else chunk_text)
    *_, other = map_messages(prompts, "\x01", "\x03" if chunk_text is None else chunk_text)
    end = len(os.path.commonprefix([one.content, other.content]))
    return [*shared, one.model_copy(update={"content": one.content[:end]})]
