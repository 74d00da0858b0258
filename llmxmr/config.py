"""Settings: types here, values in ``configs/default.yaml``.

Precedence, lowest first: ``configs/default.yaml`` < the profile of the model in use
(``model_profiles``, applied by ``for_model`` once a run knows its model) < a preset (the settings
a harness gives one of its tasks, e.g. ``configs/infinitebench/passkey.yaml``) < the user's YAML
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
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from .errors import ConfigError
from .llama_safety import ExtraBuffers
from .prompts import TaskFamily
from .resources import data_dir

ENVIRONMENT = {
    "LLMXMR_BASE_URL": ("llm", "base_url"),
    "LLMXMR_API_KEY": ("llm", "api_key"),
    "LLMXMR_MODEL": ("llm", "model"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The shape of a map reply (``llm.map_reply``; ``schemas.NothingFirstMapOutput``).
MapReplyShape = Literal["extract-first", "nothing-first"]


# ``llm.base_url`` (and a stage's) naming the in-process llama.cpp model, as null does in ``llm``.
EMBEDDED = "embedded"


class LLMSettings(_Section):
    base_url: str | None
    api_key: SecretStr | None
    model: str | None
    concurrency: int | None = Field(ge=1)
    concurrency_per_worker: int = Field(ge=1)
    # llama.cpp's grammar expansion fails far above this; null: no cap.
    max_string_chars: int | None = Field(ge=1, le=1000)
    map_question_first: bool
    map_reply: MapReplyShape
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    temperature: float = Field(ge=0)
    context_window: int | None = Field(ge=1)
    tokenizer: str
    cache: str | None
    cache_sampled: bool
    # The model profile to apply (a name in ``model_profiles``); null: the one its name matches.
    profile: str | None

    @field_validator("base_url", mode="before")
    @classmethod
    def _embedded(cls, value: Any) -> Any:
        """``embedded`` names the in-process model, as null does."""
        return None if value == EMBEDDED else value


# The stages a model may be set for (``stages``).
StageName = Literal["map", "collapse", "reduce"]
STAGE_NAMES: tuple[StageName, ...] = ("map", "collapse", "reduce")


class StageLLMSettings(_Section):
    """A stage's own model (``stages.<stage>.llm``): any setting of ``llm`` but the reply cache's,
    each unset (null) following ``llm``'s. ``base_url: embedded`` is the in-process model."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    profile: str | None = None
    concurrency: int | None = Field(default=None, ge=1)
    concurrency_per_worker: int | None = Field(default=None, ge=1)
    context_window: int | None = Field(default=None, ge=1)
    tokenizer: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    max_string_chars: int | None = Field(default=None, ge=1, le=1000)
    map_question_first: bool | None = None
    map_reply: MapReplyShape | None = None

    def given(self) -> dict[str, Any]:
        """The settings this stage sets itself."""
        return {key: value for key, value in self if value is not None}


class StageSettings(_Section):
    llm: StageLLMSettings

    @field_validator("llm", mode="before")
    @classmethod
    def _none_set(cls, value: Any) -> Any:
        """null sets nothing, as an empty mapping does."""
        return {} if value is None else value


class StagesSettings(_Section):
    map: StageSettings
    collapse: StageSettings
    reduce: StageSettings


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
    # Least confidence (0-5) of a supported final answer for the result to count as answered.
    min_confidence: float = Field(ge=0, le=5)


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
    stages: StagesSettings

    # Per model name (matched case-insensitively as part of the name of the model in use), the
    # settings that model needs; see ``for_model``. null removes a profile.
    model_profiles: dict[str, dict[str, Any] | None]
    # Set by ``load``: the dotted keys a preset, the user's YAML, the environment or a flag set,
    # and the values of configs/default.yaml: a profile changes only what is still at its default.
    _explicit: frozenset[str] = PrivateAttr(default=frozenset())
    _defaults: dict[str, Any] = PrivateAttr(default_factory=dict)
    _profile: str | None = PrivateAttr(default=None)
    _unprofiled: PipelineConfig | None = PrivateAttr(default=None)

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, preset: Mapping[str, Any] | None = None, **overrides: Any
    ) -> PipelineConfig:
        """Defaults, then ``preset``, then the YAML file at ``path``, then the environment, then
        ``overrides`` (dotted keys such as ``llm.base_url`` or ``chunking.chunk_tokens``; None
        means unset). The model profiles are checked here and applied by ``for_model``."""
        defaults = _read_yaml(data_dir("configs") / "default.yaml")
        user = _read_yaml(Path(path)) if path is not None else {}
        environment: dict[str, Any] = {}
        for variable, (section, key) in ENVIRONMENT.items():
            if os.environ.get(variable):
                environment.setdefault(section, {})[key] = os.environ[variable]
        flags: dict[str, Any] = {}
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(flags, dotted, value)
        values = copy.deepcopy(defaults)
        for layer, source in (
            (dict(preset or {}), "the task's preset"),
            (user, str(path)),
            (environment, "the environment"),
            (flags, "the command line"),
        ):
            _merge(values, copy.deepcopy(layer), source)
        try:
            config = cls.model_validate(values)
        except ValidationError as exc:
            where = _first_error(exc)
            raise ConfigError(
                f"invalid setting {where}{_source(where, path, environment, flags)}: {_message(exc)}"
            ) from exc
        config._explicit = frozenset(
            key for layer in (preset or {}, user, environment, flags) for key in _dotted_keys(layer)
        )
        config._defaults = {key: _get_dotted(defaults, key) for key in _dotted_keys(defaults)}
        for name in config.model_profiles:
            config._with_profile(name)  # a bad profile is found now, not once a run meets its model
        for stage in STAGE_NAMES:
            own = config._stage_llm(stage)
            named = own.get("profile", config.llm.profile)
            if named is not None and config.model_profiles.get(named) is None:
                where = f"stages.{config._stage_source(stage)}.llm" if "profile" in own else "llm"
                known = ", ".join(name for name, settings in config.model_profiles.items() if settings is not None)
                raise ConfigError(f"invalid setting {where}.profile: no model profile {named!r} (known: {known})")
        return config

    def for_stage(self, stage: StageName) -> PipelineConfig:
        """This config as ``stage`` runs it: ``llm`` with the stage's own settings over it
        (``stages.<stage>.llm``; collapse takes reduce's unless it sets some of its own). Itself
        when the stage sets none, so a run without stage settings is the run it always was. The
        model profile is applied afterwards, by ``for_model``, to each stage's own model."""
        base = self._unprofiled or self
        own = base._stage_llm(stage)
        if not own:
            return base
        llm = LLMSettings.model_validate({**base.llm.model_dump(), **own})
        config = base.model_copy(update={"llm": llm})
        config._explicit = base._explicit | {f"llm.{key}" for key in own}
        return config

    def _stage_source(self, stage: StageName) -> StageName:
        """The stage whose settings ``stage`` takes: its own, but collapse's are reduce's unless it
        sets some."""
        return "reduce" if stage == "collapse" and not self.stages.collapse.llm.given() else stage

    def _stage_llm(self, stage: StageName) -> dict[str, Any]:
        own: dict[str, Any] = getattr(self.stages, self._stage_source(stage)).llm.given()
        return own

    def for_model(self, model_name: str) -> PipelineConfig:
        """This config for the model named ``model_name`` (a GGUF path, or the id a server lists),
        with the profile ``llm.profile`` names, else the one whose name is the longest part of it;
        without one when none matches. A profile changes only settings still at their defaults
        (configs/default.yaml): what a harness's preset, the user's YAML, the environment, a flag
        or code set stays."""
        name = model_name.lower()
        matching = [
            key for key, settings in self.model_profiles.items() if settings is not None and key.lower() in name
        ]
        profile = self.llm.profile or max(matching, key=len, default=None)
        if profile == self._profile:
            return self
        unprofiled = self._unprofiled or self
        return unprofiled if profile is None else unprofiled._with_profile(profile)

    @property
    def model_profile(self) -> str | None:
        """The name of the model profile applied (``for_model``), if any."""
        return self._profile

    def _with_profile(self, name: str) -> PipelineConfig:
        settings = self.model_profiles[name] or {}
        values = self.model_dump()
        for dotted in _dotted_keys(settings):
            if not dotted.startswith(_PROFILE_KEYS):
                allowed = ", ".join(f"{key}*" if key.endswith(".") else key for key in _PROFILE_KEYS)
                raise ConfigError(
                    f"invalid setting model_profiles.{name}.{dotted}: a model profile sets only {allowed}"
                )
            if dotted not in self._explicit and _get_dotted(values, dotted) == self._defaults.get(dotted):
                _set_dotted(values, dotted, _get_dotted(settings, dotted))
        try:
            config = type(self).model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"invalid setting {_first_error(exc)} in model profile {name}: {_message(exc)}") from exc
        config._explicit, config._defaults = self._explicit, self._defaults
        config._profile, config._unprofiled = name, self
        return config

    @property
    def uses_embedded_model(self) -> bool:
        return self.llm.base_url is None


# What a profile may set: the settings a run reads once it knows its model. (The client, the call
# budget and the task family are chosen before that.)
_PROFILE_KEYS = (
    "chunking.",
    "generation.",
    "grounding.",
    "llm.max_string_chars",
    "llm.map_question_first",
    "llm.map_reply",
    "llm.temperature",
)


def _source(dotted: str, path: str | Path | None, environment: dict[str, Any], flags: dict[str, Any]) -> str:
    """Where a bad value came from, as far as can be told: a flag, the environment, or the file."""
    if dotted in _dotted_keys(flags):
        return " (from the command line)"
    variable = next((v for v, keys in ENVIRONMENT.items() if ".".join(keys) == dotted), None)
    if variable and dotted in _dotted_keys(environment):
        return f" (from {variable})"
    return f" in {path}" if path else ""


def _first_error(exc: ValidationError) -> str:
    return ".".join(str(part) for part in exc.errors()[0]["loc"])


def _message(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"])


def _dotted_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of the leaves of nested settings; ``model_profiles`` is one leaf."""
    keys: list[str] = []
    for key, value in values.items():
        if isinstance(value, Mapping) and key != "model_profiles":
            keys += _dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _get_dotted(values: Mapping[str, Any], dotted: str) -> Any:
    found: Any = values
    for part in dotted.split("."):
        found = found.get(part) if isinstance(found, Mapping) else None
    return found


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
        if isinstance(base.get(key), dict) and value is not None:  # null replaces a mapping (a profile)
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
