"""Prompt templates: one folder per task family under ``prompts/``, one file per stage.

Templates are checked when loaded: every placeholder must be known, and the map template must put
the chunk last so that all map calls of a run share one byte-identical prefix (prefix caching).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError
from .resources import data_dir

TaskFamily = Literal["qa", "choice", "retrieval", "code", "math", "summary", "zh"]
TASK_FAMILIES: tuple[str, ...] = TaskFamily.__args__  # type: ignore[attr-defined]
Stage = Literal["map", "collapse", "reduce"]

_RUNTIME_VARIABLES = {"map": {"question", "chunk"}, "collapse": {"question", "partials"}, "reduce": {"question", "partials"}}
# What a map template may put after the chunk: its closing delimiter and a short reminder of the
# question (small models lose a question stated only before thousands of tokens). All text before
# the chunk is the prefix every map call of a run shares.
MAX_TEMPLATE_AFTER_CHUNK = 200


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class PromptSet(BaseModel):
    """The system message and the three stage templates of one task family."""

    model_config = ConfigDict(frozen=True)

    family: str
    system: str
    map: str
    collapse: str
    reduce: str

    def messages(self, stage: Stage, **values: str) -> list[ChatMessage]:
        template = Template(getattr(self, stage))
        return [
            ChatMessage(role="system", content=self.system),
            ChatMessage(role="user", content=template.substitute(values)),
        ]


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
    if stage == "map" and len(text) - text.index("$chunk") - len("$chunk") > MAX_TEMPLATE_AFTER_CHUNK:
        raise ConfigError(f"{path}: $chunk must come (almost) last so that map prompts share a prefix")


@cache
def load_prompts(family: str, root: Path | None = None) -> PromptSet:
    """The prompt set of a task family, with the shared snippets filled in."""
    root = root or data_dir("prompts")
    if family not in TASK_FAMILIES:
        raise ConfigError(f"unknown task type '{family}'; choose one of: {', '.join(TASK_FAMILIES)}")
    snippets = {p.stem: _read(p) for p in sorted((root / "shared").glob("*.md")) if p.stem != "system"}
    stages = {}
    for stage in ("map", "collapse", "reduce"):
        path = root / family / f"{stage}.md"
        text = Template(_read(path)).safe_substitute(snippets)
        _check(path, stage, text)
        stages[stage] = text
    return PromptSet(family=family, system=_read(root / "shared" / "system.md"), **stages)
