"""Questions for one document, as a user writes them: ``--question`` flags, or a file of them."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UsageError


class Question(BaseModel):
    """One question, with the id it was given (its line number when it was given none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | int
    question: str


def read_questions(path: Path) -> list[Question]:
    """A file of questions: one per line, or JSONL lines ``{"id", "question"}``. Blank lines are
    skipped; every problem is one line naming the file and line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    questions = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        question = (
            _parsed(line, number, path) if line.lstrip().startswith("{") else Question(id=number, question=line.strip())
        )
        if not question.question.strip():
            raise UsageError(f"{path}:{number}: the question is empty")
        questions.append(question)
    if not questions:
        raise UsageError(f"{path} holds no questions")
    ids = [str(q.id) for q in questions]
    repeated = next((i for i in ids if ids.count(i) > 1), None)
    if repeated is not None:
        raise UsageError(f"{path}: id {repeated!r} appears twice")
    return questions


def _parsed(line: str, number: int, path: Path) -> Question:
    try:
        return Question.model_validate(json.loads(line))
    except (ValueError, ValidationError) as exc:
        raise UsageError(
            f'{path}:{number}: not a question line ({{"id": ..., "question": ...}}): {exc}'.splitlines()[0]
        ) from exc
