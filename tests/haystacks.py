"""InfiniteBench's pass-key layout, as the integration and live lanes read it."""

from __future__ import annotations

PASS_KEY = "71432"
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n\n"
)


def haystack(repeats: int, depth: float, key: str = PASS_KEY) -> str:
    """Filler lines with the key line at ``depth``, after the task's instruction."""
    lines = [FILLER] * repeats
    lines.insert(int(repeats * depth), key_line(key))
    return TASK + "".join(lines)


def key_line(key: str = PASS_KEY) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key. "
