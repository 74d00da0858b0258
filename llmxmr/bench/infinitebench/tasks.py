"""What llmxmr asks for each InfiniteBench task, and what it scores against.

For every task: a question for map-reduce (``prompts/infinitebench/question/<task>.md``: the
benchmark's instruction without the document, which goes to the chunks), InfiniteBench's own
GPT-4 prompt for the direct baseline (``prompts/infinitebench/direct/<task>.md``; for Math.Calc
its GPT-4 template, without the calculator system prompt and worked example that its GPT-4 run
added, which are specific to that model), and settings
(``configs/infinitebench/<task>.yaml``: the prompt family, output lengths). Both prompts are built
from an example's ``input`` and ``options`` the way InfiniteBench's ``src/eval_utils.py``
``create_prompt`` builds them: options as "A. ..." lines, the function call of Code.Run, the
"the largest number" target of Math.Find.
"""

from __future__ import annotations

import re
from functools import cache
from string import Template
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import ConfigError, UsageError
from ...prompts import ChatMessage, prompt_file
from ...resources import data_dir
from .scorers import check_task

OPTION_LETTERS = "ABCD"
# The variables a question or direct template may use; "context" only in direct templates.
_VARIABLES = frozenset({"input", "options", "func", "func_call", "target", "context"})
_FUNCTION_CALL = re.compile(r"func_[0-9]+\(-?[0-9]+\)")
# Math.Find inputs end "... The largest number of the list is: "; the target is "the largest number".
_MATH_TARGET = re.compile(r"The (.+?) of the list")


class Example(BaseModel):
    """One example as InfiniteBench's JSONL stores it. ``answer`` is always a list."""

    model_config = ConfigDict(extra="ignore")

    id: int | str
    context: str
    input: str = ""
    answer: list[Any]
    options: list[str] = Field(default_factory=list)


class TaskConfig(BaseModel):
    """``configs/infinitebench/<task>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    # Pipeline settings for this task (at least ``task_type``), beneath the user's --config.
    pipeline: dict[str, Any]
    # Reply length of the direct baseline: InfiniteBench's DATA_NAME_TO_MAX_NEW_TOKENS.
    direct_max_tokens: int = Field(ge=1)


@cache
def task_config(task: str) -> TaskConfig:
    path = data_dir("configs") / "infinitebench" / f"{check_task(task)}.yaml"
    try:
        return TaskConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"bad task config {path}: {exc}") from exc


def question_for(task: str, example: Example) -> str:
    """The map-reduce question: the task's instruction with the example's input and options (the
    input stripped: Retrieve.KV's starts with a newline meant to follow the document)."""
    values = _variables(task, example, context="")
    values["input"] = values["input"].strip()
    return _template("question", task).substitute(values).strip()


def direct_messages(task: str, example: Example, context: str) -> list[ChatMessage]:
    """InfiniteBench's GPT-4 messages for this example, with ``context`` as the document."""
    return [
        ChatMessage(role="system", content=_read_prompt("direct", "system")),
        ChatMessage(role="user", content=_template("direct", task).substitute(_variables(task, example, context))),
    ]


def ground_truth(task: str, example: Example) -> Any:
    """The label as InfiniteBench's ``get_answer`` gives it to the scorers: ``[option_text,
    letter]`` for multiple choice, otherwise the answer list."""
    if task not in ("longbook_choice_eng", "code_debug"):
        return example.answer
    if len(example.answer) == 2 and example.answer[1] in OPTION_LETTERS:
        return example.answer
    if len(example.answer) != 1 or example.answer[0] not in example.options:
        raise UsageError(f"{task} example {example.id}: the answer is not one of its options")
    return [example.answer[0], OPTION_LETTERS[example.options.index(example.answer[0])]]


def _variables(task: str, example: Example, context: str) -> dict[str, str]:
    values = {"input": example.input, "context": context, "options": "", "func": "", "func_call": "", "target": ""}
    if task in ("longbook_choice_eng", "code_debug"):
        if len(example.options) != len(OPTION_LETTERS):
            raise UsageError(f"{task} example {example.id}: expected 4 options, got {len(example.options)}")
        values["options"] = "\n".join(
            f"{letter}. {text}" for letter, text in zip(OPTION_LETTERS, example.options, strict=False)
        )
    elif task == "code_run":
        call = _FUNCTION_CALL.search(example.input)
        if call is None:
            raise UsageError(f"code_run example {example.id}: no function call like func_1(3) in its input")
        values["func_call"] = call.group()
        values["func"] = call.group().split("(")[0]
    elif task == "math_find":
        target = _MATH_TARGET.search(example.input)
        if target is None:
            raise UsageError(f"math_find example {example.id}: its input names no target ('The ... of the list')")
        values["target"] = f"the {target.group(1).lower()}"
    return values


@cache
def _template(kind: str, task: str) -> Template:
    text = _read_prompt(kind, check_task(task))
    names = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)} - {None}
    allowed = _VARIABLES if kind == "direct" else _VARIABLES - {"context"}
    if names - allowed:
        raise ConfigError(f"prompts/infinitebench/{kind}/{task}.md: unknown placeholder(s) {sorted(names - allowed)}")
    return Template(text)


def _read_prompt(kind: str, name: str) -> str:
    return prompt_file(f"infinitebench/{kind}/{name}.md")
