"""Prompt templates: one folder per task family under ``prompts/``, one file per stage.

Templates are checked when loaded: every placeholder must be known, and the map prompt must be laid
out document first: the system message (the role and the family's map instructions, the same for
every map call of the family), then the chunk, then the question. Serving engines reuse only a
byte-identical prompt prefix, so every map call shares the instructions, and every question about
one chunk shares the instructions and the chunk: asking several questions of one document costs
about one reading of it. A family may also ship a question-first map template
(``map_question_first.md``), for small models only (``families.workarounds.maps_for_the_model``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError
from .resources import data_dir

TaskFamily = Literal["qa", "choice", "retrieval", "code", "math", "summary", "zh"]
TASK_FAMILIES: tuple[str, ...] = get_args(TaskFamily)
Stage = Literal["map", "collapse", "reduce"]

_RUNTIME_VARIABLES = {
    "map": {"question", "chunk"},
    "collapse": {"question", "partials"},
    "reduce": {"question", "partials"},
}
# What a map template may put after the chunk besides the question: its closing delimiter and a
# short ask. What comes after the chunk is paid for by every question.
MAX_TEMPLATE_AFTER_CHUNK = 200
# Before the chunk: its opening tag.
MAX_TEMPLATE_BEFORE_CHUNK = 40


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class PromptSet(BaseModel):
    """The system message and the three stage templates of one task family."""

    model_config = ConfigDict(frozen=True)

    family: str
    system: str
    map_system: str  # the family's map instructions: every map call's user message begins with them
    map: str
    collapse: str
    reduce: str
    # The family's question-first map template (instructions and question, the chunk, the question
    # again), where it ships one: for small models (see ``families.workarounds``).
    map_question_first: str | None = None

    def messages(self, stage: Stage, **values: str) -> list[ChatMessage]:
        user = Template(getattr(self, stage)).substitute(values)
        if stage == "map":
            user = self.map_head + user
        return [ChatMessage(role="system", content=self.system), ChatMessage(role="user", content=user)]

    @property
    def map_head(self) -> str:
        """What every map call's user message begins with: the family's map instructions. They
        open the user message rather than close the system message: the prefix is as fixed either
        way, and the bundled SmolLM2 follows them there (4 of 6 needles found against 3 of 6)."""
        return f"{self.map_system}\n\n" if self.map_system else ""

    @property
    def question_slots(self) -> int:
        """How many times a map prompt writes the question."""
        return sum((m.group("named") or m.group("braced")) == "question" for m in Template.pattern.finditer(self.map))

    def question_first(self) -> PromptSet:
        """This set with its question-first map template (which holds the instructions itself)."""
        if self.map_question_first is None:
            raise ValueError(f"the {self.family} prompts have no question-first map template")
        return self.model_copy(update={"map": self.map_question_first, "map_system": ""})


def _placeholders(text: str) -> set[str]:
    names = set()
    for match in Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def prompt_file(relative: str) -> str:
    """A prompt file under ``prompts/`` other than a family's stages (harness prompts such as
    ``infinitebench/direct/passkey.md``), stripped."""
    return _read(data_dir("prompts") / relative)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read prompt file {path}: {exc.strerror}") from exc


def _check(path: Path, stage: str, text: str) -> None:
    unknown = _placeholders(text) - _RUNTIME_VARIABLES[stage]
    if unknown:
        raise ConfigError(f"{path}: unknown placeholder(s) {', '.join(sorted(unknown))}")
    missing = _RUNTIME_VARIABLES[stage] - _placeholders(text)
    if missing:
        raise ConfigError(f"{path}: missing placeholder(s) {', '.join(sorted(missing))}")
    if stage == "map":
        _check_document_first(path, text)


def _check_question_first(path: Path, text: str) -> None:
    """A question-first map template asks its question before the chunk as well as after it."""
    if _placeholders(text) != _RUNTIME_VARIABLES["map"]:
        raise ConfigError(f"{path}: the placeholders must be $question and $chunk")
    if "$question" not in text[: text.index("$chunk")] or "$question" not in text[text.index("$chunk") :]:
        raise ConfigError(f"{path}: a question-first map template asks the question before the chunk and after it")


def _check_document_first(path: Path, text: str) -> None:
    """The map template opens with the chunk (only its opening tag before it), and what follows
    the chunk is the question and a short ask: nothing that depends on the question may come
    before the chunk, or no two questions would share its prefix."""
    before = text[: text.index("$chunk")]
    if _placeholders(before) or len(before) > MAX_TEMPLATE_BEFORE_CHUNK:
        raise ConfigError(
            f"{path}: the chunk must come first (the instructions go in map_system.md), then the question"
        )
    after = text[text.index("$chunk") + len("$chunk") :].replace("$question", "")
    if len(after) > MAX_TEMPLATE_AFTER_CHUNK:
        raise ConfigError(f"{path}: only the question and a short ask may follow the chunk")


# Snippets that only one shape of the map reply includes (``nothing_first``: the opening that lets
# a reply say "nothing here" first, ``schemas.NothingFirstMapOutput``); the other shape reads them
# as empty, so its prompts are byte for byte what they were.
_SHAPE_SNIPPETS = ("nothing_first", "nothing_first_zh")


@cache
def load_prompts(family: str, root: Path | None = None, *, nothing_first: bool = False) -> PromptSet:
    """The prompt set of a task family, with the shared snippets filled in; with
    ``nothing_first``, its map instructions ask for the nothing-first reply."""
    root = root or data_dir("prompts")
    if family not in TASK_FAMILIES:
        raise ConfigError(f"unknown task type '{family}'; choose one of: {', '.join(TASK_FAMILIES)}")
    shared = {p.stem: p for p in sorted((root / "shared").glob("*.md")) if p.stem != "system"}
    snippets = {name: _read(path) for name, path in shared.items() if name not in _SHAPE_SNIPPETS}
    for name in _SHAPE_SNIPPETS:
        if nothing_first and name not in shared:
            raise ConfigError(f"{root / 'shared'}: no {name}.md for the nothing-first map reply")
        snippets[name] = f"{_read(shared[name])}\n" if nothing_first else ""
    # A snippet may include others (a family's reply rules include the calibration), one level deep.
    snippets = {name: Template(text).safe_substitute(snippets) for name, text in snippets.items()}
    stages = {}
    for stage in ("map", "collapse", "reduce"):
        path = root / family / f"{stage}.md"
        text = Template(_read(path)).safe_substitute(snippets)
        _check(path, stage, text)
        stages[stage] = text
    instructions = root / family / "map_system.md"
    map_system = Template(_read(instructions)).safe_substitute(snippets)
    if _placeholders(map_system):
        raise ConfigError(
            f"{instructions}: the map instructions are the same for every call; no placeholder may be in them"
        )
    question_first = root / family / "map_question_first.md"
    if question_first.exists():
        stages["map_question_first"] = Template(_read(question_first)).safe_substitute(snippets)
        _check_question_first(question_first, stages["map_question_first"])
    return PromptSet(family=family, system=_read(root / "shared" / "system.md"), map_system=map_system, **stages)
