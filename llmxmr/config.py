"""Settings: types here, values in ``configs/default.yaml``.

Precedence, lowest first: ``configs/default.yaml`` < a preset (the settings a harness gives one of
its tasks, e.g. ``configs/infinitebench/passkey.yaml``) < the user's YAML (``--config``) < environment
(``LLMXMR_BASE_URL``, ``LLMXMR_API_KEY``, ``LLMXMR_MODEL``) < explicit arguments (CLI flags).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError
from .llama_safety import ExtraBuffers
from .prompts import TaskFamily
from .resources import data_dir

ENVIRONMENT = {"LLMXMR_BASE_URL": ("llm", "base_url"), "LLMXMR_API_KEY": ("llm", "api_key"), "LLMXMR_MODEL": ("llm", "model")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMSettings(_Section):
    base_url: str | None
    api_key: SecretStr | None
    model: str | None
    concurrency: int | None = Field(ge=1)
    concurrency_per_worker: int = Field(ge=1)
    max_string_chars: int | None = Field(ge=1, le=1000)
    map_question_first: bool
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    temperature: float = Field(ge=0)
    context_window: int | None = Field(ge=1)
    tokenizer: str
    cache: str | None
    cache_sampled: bool


class EmbeddedSettings(_Section):
    model_path: str | None
    n_ctx: int = Field(ge=256)
    threads: int | None = Field(ge=1)
    chunk_tokens: int | None = Field(ge=1)
    # llama.cpp's grammar expansion fails far above this; null: no cap.
    max_string_chars: int | None = Field(ge=1, le=1000)
    map_question_first: bool
    extra_buffers: ExtraBuffers
    state_cache_mb: int = Field(ge=0)


class ChunkingSettings(_Section):
    chunk_tokens: int | None = Field(ge=1)
    question_tokens: int = Field(ge=0)
    overlap_tokens: int = Field(ge=0)
    min_fill: float = Field(ge=0, le=1)
    safety_margin: float = Field(ge=0, lt=1)


class GenerationSettings(_Section):
    map_max_tokens: int = Field(ge=16)
    collapse_max_tokens: int = Field(ge=16)
    reduce_max_tokens: int = Field(ge=16)
    validation_attempts: int = Field(ge=1)


# What an answer none of whose quotes is found in the text counts for (configs/default.yaml).
GroundingMode = Literal["off", "cap", "strict"]


class GroundingSettings(_Section):
    mode: GroundingMode
    fuzzy_threshold: float = Field(ge=50, le=100)
    unsupported_confidence: float = Field(ge=0, le=5)


class PipelineConfig(_Section):
    task_type: TaskFamily
    on_chunk_error: Literal["skip", "fail"]
    scheduler: Literal["streaming", "barrier"]
    max_document_mb: float = Field(gt=0)
    llm: LLMSettings
    embedded: EmbeddedSettings
    chunking: ChunkingSettings
    grounding: GroundingSettings
    generation: GenerationSettings

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, preset: Mapping[str, Any] | None = None, **overrides: Any
    ) -> PipelineConfig:
        """Defaults, then ``preset``, then the YAML file at ``path``, then the environment, then
        ``overrides`` (dotted keys such as ``llm.base_url`` or ``chunking.chunk_tokens``; None
        means unset)."""
        values = _read_yaml(data_dir("configs") / "default.yaml")
        if preset:
            _merge(values, copy.deepcopy(dict(preset)), "the task's preset")
        if path is not None:
            _merge(values, _read_yaml(Path(path)), str(path))
        for variable, (section, key) in ENVIRONMENT.items():
            if os.environ.get(variable):
                values[section][key] = os.environ[variable]
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(values, dotted, value)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"invalid setting {where}{_source(where, path, overrides)}: {first['msg']}") from exc

    @property
    def uses_embedded_model(self) -> bool:
        return self.llm.base_url is None

    @property
    def map_question_first(self) -> bool:
        """Whether map prompts ask the question before the chunk too, where the family has such a
        template (``families.workarounds.maps_for_the_model``)."""
        return self.embedded.map_question_first if self.uses_embedded_model else self.llm.map_question_first

    @property
    def chunk_token_cap(self) -> int | None:
        if self.chunking.chunk_tokens is not None:
            return self.chunking.chunk_tokens
        return self.embedded.chunk_tokens if self.uses_embedded_model else None


def _source(dotted: str, path: str | Path | None, overrides: dict[str, Any]) -> str:
    """Where a bad value came from, as far as can be told: a flag, the environment, or the file."""
    if overrides.get(dotted) is not None:
        return " (from the command line)"
    variable = next((v for v, keys in ENVIRONMENT.items() if ".".join(keys) == dotted), None)
    if variable and os.environ.get(variable):
        return f" (from {variable})"
    return f" in {path}" if path else ""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must be a mapping of settings")
    return loaded


def _merge(base: dict[str, Any], update: dict[str, Any], source: str) -> None:
    for key, value in update.items():
        if isinstance(base.get(key), dict):
            if not isinstance(value, dict):
                raise ConfigError(f"invalid setting {key} in {source}: expected a mapping")
            _merge(base[key], value, source)
        else:
            base[key] = value


def _set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, key = dotted.split(".")
    target = values
    for section in sections:
        target = target[section]
    target[key] = value
