"""Settings: types here, values in ``configs/default.yaml``.

Precedence, lowest first: ``configs/default.yaml`` < a preset (the settings a harness gives one of
its tasks, e.g. ``configs/infinitebench/passkey.yaml``) < the profile of the model in use
(``model_profiles``, applied by ``for_model`` once a run knows its model) < the user's YAML
(``--config``) < environment (``LLMXMR_BASE_URL``, ``LLMXMR_API_KEY``, ``LLMXMR_MODEL``) < explicit
arguments (CLI flags).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

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
    # llama.cpp's grammar expansion fails far above this; null: no cap.
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


class _Layers:
    """The layers a config is merged from, kept so that ``for_model`` can put a model profile
    between the task's defaults and what the user set."""

    def __init__(
        self,
        base: dict[str, Any],
        user: dict[str, Any],
        environment: dict[str, Any],
        flags: dict[str, Any],
        path: str | Path | None,
    ) -> None:
        self.base, self.user, self.environment, self.flags, self.path = base, user, environment, flags, path

    def config(self, profile: str | None = None, settings: dict[str, Any] | None = None) -> PipelineConfig:
        """The config these layers make, with the model profile ``profile`` (its ``settings``)
        over the task's defaults when one is given."""
        values = copy.deepcopy(self.base)
        if profile is not None:
            _merge(values, _profile_settings(profile, settings or {}), f"model profile {profile}")
        _merge(values, copy.deepcopy(self.user), str(self.path))
        _merge(values, copy.deepcopy(self.environment), "the environment")
        _merge(values, copy.deepcopy(self.flags), "the command line")
        try:
            config = PipelineConfig.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"invalid setting {where}{self._source(where, profile)}: {first['msg']}") from exc
        config._layers = self
        config._profile = profile
        return config

    def _source(self, dotted: str, profile: str | None) -> str:
        """Where a bad value came from, as far as can be told: a flag, the environment, a model
        profile or the file."""
        if _has_dotted(self.flags, dotted):
            return " (from the command line)"
        variable = next((v for v, keys in ENVIRONMENT.items() if ".".join(keys) == dotted), None)
        if variable and _has_dotted(self.environment, dotted):
            return f" (from {variable})"
        if profile is not None and not _has_dotted(self.user, dotted):
            return f" in model profile {profile}"
        return f" in {self.path}" if self.path else ""


# A profile describes a model that is already chosen, so it cannot choose one.
_NOT_IN_PROFILES = ("model_profiles", "llm.base_url", "llm.model", "llm.api_key", "embedded.model_path")


def _profile_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    for dotted in _NOT_IN_PROFILES:
        if _has_dotted(settings, dotted):
            raise ConfigError(f"invalid setting model_profiles.{name}.{dotted}: a model profile cannot set it")
    return copy.deepcopy(settings)


def _has_dotted(values: dict[str, Any], dotted: str) -> bool:
    *sections, key = dotted.split(".")
    for section in sections:
        values = values.get(section)
        if not isinstance(values, dict):
            return False
    return key in values


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

    # Per model name (matched case-insensitively as part of the name of the model in use), the
    # settings that model needs; see ``for_model``.
    model_profiles: dict[str, dict[str, Any]]
    _layers: _Layers | None = PrivateAttr(default=None)
    _profile: str | None = PrivateAttr(default=None)

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, preset: Mapping[str, Any] | None = None, **overrides: Any
    ) -> PipelineConfig:
        """Defaults, then ``preset``, then the YAML file at ``path``, then the environment, then
        ``overrides`` (dotted keys such as ``llm.base_url`` or ``chunking.chunk_tokens``; None
        means unset). A model profile is checked here but applied by ``for_model``."""
        base = _read_yaml(data_dir("configs") / "default.yaml")
        if preset:
            _merge(base, copy.deepcopy(dict(preset)), "the task's preset")
        environment: dict[str, Any] = {}
        for variable, (section, key) in ENVIRONMENT.items():
            if os.environ.get(variable):
                environment.setdefault(section, {})[key] = os.environ[variable]
        flags: dict[str, Any] = {}
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(flags, dotted, value)
        layers = _Layers(base, _read_yaml(Path(path)) if path is not None else {}, environment, flags, path)
        config = layers.config()
        for name, settings in config.model_profiles.items():
            layers.config(name, settings)  # a bad profile is found now, not once a run meets its model
        return config

    def for_model(self, model_name: str) -> PipelineConfig:
        """This config for the model named ``model_name`` (a GGUF path, or the id a server lists):
        the first profile whose name is part of it applies, over the task's preset and under
        everything the user set; none when none matches."""
        name = model_name.lower()
        profile = next((key for key in self.model_profiles if key.lower() in name), None)
        if profile == self._profile or self._layers is None:
            return self
        return self._layers.config(profile, self.model_profiles[profile]) if profile else self._layers.config()

    @property
    def model_profile(self) -> str | None:
        """The name of the model profile applied (``for_model``), if any."""
        return self._profile

    @property
    def uses_embedded_model(self) -> bool:
        return self.llm.base_url is None


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
        target = target.setdefault(section, {})
    target[key] = value
