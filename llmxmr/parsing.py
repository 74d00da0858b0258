"""Turn a model's reply into a dict for validation, as leniently as is still unambiguous.

In order: the reply as JSON; JSON in a fenced code block; the first JSON object inside prose; and
for servers without constrained decoding, the paper's labelled text protocol
("Extracted Information: / Rationale: / Answer: / Confidence Score:", English or Chinese labels).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .schemas import NO_INFORMATION_MARK

_FENCED = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_LABELS = {
    "extracted_information": r"extracted\s+(?:information|code)|提取的信息",
    "rationale": r"rationale|reasoning|分析",
    "answer": r"answer|答案",
    "confidence": r"confidence(?:\s+score)?|置信度(?:分数)?",
}
_LABEL_LINE = re.compile(
    r"^[ \t#*]*(?P<label>" + "|".join(f"(?P<{key}>{pattern})" for key, pattern in _LABELS.items()) + r")"
    r"[ \t*]*[:：][ \t*]*",
    re.IGNORECASE | re.MULTILINE,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_reply(text: str) -> dict[str, Any] | None:
    """The fields the reply carries, or None when it carries none we can recognise."""
    for candidate in _json_candidates(text):
        if isinstance(candidate, dict):
            return _normalised_keys(candidate)
    return _text_protocol(text)


def _json_candidates(text: str):
    stripped = text.strip()
    yield from _loads(stripped)
    for block in _FENCED.findall(text):
        yield from _loads(block.strip())
    decoder = json.JSONDecoder(strict=False)
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        yield value
        return


def _loads(text: str):
    # strict=False: raw line breaks inside strings are common (llama.cpp's JSON grammar allows
    # them, and models copy multi-line passages) and unambiguous.
    try:
        yield json.loads(text, strict=False)
    except json.JSONDecodeError:
        return


def _normalised_keys(value: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"[\s-]+", "_", str(key).strip().lower()): item for key, item in value.items()}


def _text_protocol(text: str) -> dict[str, Any] | None:
    matches = list(_LABEL_LINE.finditer(text))
    if not matches:
        return None
    fields: dict[str, Any] = {}
    for match, following in zip(matches, matches[1:] + [None], strict=True):
        key = next(k for k in _LABELS if match.group(k))
        end = following.start() if following else len(text)
        fields.setdefault(key, text[match.end() : end].strip())
    if "confidence" in fields:
        number = _NUMBER.search(fields["confidence"])
        fields["confidence"] = float(number.group()) if number else fields["confidence"]
    if NO_INFORMATION_MARK.lower() in fields.get("answer", "").lower():
        fields["answer"] = None
    return fields
