"""A model per stage: the client, call budget and settings of each of a run's stages.

``llm`` is every stage's model unless ``stages.<stage>.llm`` sets one of its own
(``PipelineConfig.for_stage``). Stages whose server settings agree share one client and one call
budget: without stage settings, a run has the one client and budget it always had. Each stage's
settings get the profile of its own model (``clients.config_for_client``), so a small map model's
workarounds never reach a strong reduce model, and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

from pydantic import BaseModel

from .budget import concurrency_of
from .clients import config_for_client
from .clients.base import LLMClient
from .config import STAGE_NAMES, PipelineConfig, StageName
from .scheduling import CallBudget

T = TypeVar("T")
# Opens the client a config names: ``clients.make_client``, passed by the caller (tests replace it
# where the caller looks it up).
Opener = Callable[[PipelineConfig], LLMClient]


def connection(config: PipelineConfig) -> tuple[object, ...]:
    """What tells one stage's client from another's: the server, key, model and transport
    settings, and its call budget's. Stages that agree on all of them share a client and a budget.
    Every stage on the embedded model shares it: there is one (``embedded``), loaded once."""
    llm = config.llm
    if llm.base_url is None:
        return (None,)
    key = llm.api_key.get_secret_value() if llm.api_key else None
    return (llm.base_url, key, llm.model, llm.timeout_s, llm.max_retries, llm.concurrency, llm.concurrency_per_worker)


@dataclass(frozen=True)
class PerStage(Generic[T]):
    """A value for each stage; stages may share one (the same object)."""

    map: T
    collapse: T
    reduce: T

    @classmethod
    def every(cls, value: T) -> Self:
        """One value for every stage."""
        return cls(value, value, value)

    def of(self, stage: StageName) -> T:
        value: T = getattr(self, stage)
        return value

    def distinct(self) -> list[tuple[list[StageName], T]]:
        """Each value once (by identity), with the stages that have it, in stage order."""
        groups: dict[int, tuple[list[StageName], T]] = {}
        for stage in STAGE_NAMES:
            value = self.of(stage)
            groups.setdefault(id(value), ([], value))[0].append(stage)
        return list(groups.values())


class StageClients(PerStage[LLMClient]):
    """The client of each stage."""

    @classmethod
    def open(cls, config: PipelineConfig, opener: Opener) -> StageClients:
        """The clients ``config`` names, one per distinct ``connection`` of its stages."""
        opened: dict[tuple[object, ...], LLMClient] = {}
        clients = []
        for stage in STAGE_NAMES:
            stage_config = config.for_stage(stage)
            key = connection(stage_config)
            if key not in opened:
                opened[key] = opener(stage_config)
            clients.append(opened[key])
        return cls(*clients)

    async def aclose(self) -> None:
        for _, client in self.distinct():
            await client.aclose()


class StageBudgets(PerStage[CallBudget]):
    """The call budget of each stage: one per client, so that each server has its own concurrency
    (``every``: a caller's one budget, whatever the clients)."""

    @classmethod
    async def open(cls, config: PipelineConfig, clients: StageClients) -> StageBudgets:
        """A budget per client, of the concurrency its stages' settings give it (``concurrency_of``)."""
        budgets: dict[int, CallBudget] = {}
        for stages, client in clients.distinct():
            budgets[id(client)] = CallBudget(await concurrency_of(config.for_stage(stages[0]), client))
        return cls(*(budgets[id(clients.of(stage))] for stage in STAGE_NAMES))

    def join(self) -> dict[StageName, int]:
        """A run's place in line in each budget (``CallBudget.join``), joined once per budget."""
        places: dict[int, int] = {}
        for _, budget in self.distinct():
            places[id(budget)] = budget.join()
        return {stage: places[id(self.of(stage))] for stage in STAGE_NAMES}


class ModelUse(BaseModel):
    """A model of a run, as results, traces and estimates name it: the stages it served."""

    stages: list[str]
    model: str  # its name: the id its server lists, or the embedded GGUF's path (``CallRecord.model``)
    client: str  # the client's description (``LLMClient.describe``)
    profile: str | None  # the model profile applied to its stages


@dataclass(frozen=True)
class StageModel:
    """One stage's model as a run uses it."""

    client: LLMClient
    config: PipelineConfig  # the stage's settings, with its model's profile
    name: str  # ``client.model_name()``


class StageModels(PerStage[StageModel]):
    """Each stage's model."""

    def uses(self) -> list[ModelUse]:
        """Each model once (a client and its profile), with its stages, in stage order."""
        groups: dict[tuple[int, str | None], ModelUse] = {}
        for stage in STAGE_NAMES:
            model = self.of(stage)
            profile = model.config.model_profile
            use = groups.setdefault(
                (id(model.client), profile),
                ModelUse(stages=[], model=model.name, client=model.client.describe(), profile=profile),
            )
            use.stages.append(stage)
        return list(groups.values())

    def describe(self) -> str:
        """The client's description when one serves every stage (as results always named it),
        else each client with its stages: ``map: A; collapse, reduce: B``."""
        clients = PerStage(*(self.of(stage).client for stage in STAGE_NAMES)).distinct()
        if len(clients) == 1:
            return clients[0][1].describe()
        return "; ".join(f"{', '.join(stages)}: {client.describe()}" for stages, client in clients)

    @property
    def profile(self) -> str | None:
        """The model profile applied, when every stage has the same one (else see ``uses``)."""
        profiles = {self.of(stage).config.model_profile for stage in STAGE_NAMES}
        return profiles.pop() if len(profiles) == 1 else None


async def stage_models(config: PipelineConfig, clients: StageClients) -> StageModels:
    """Each stage's client, with the stage's settings as its model's profile has them."""
    models: dict[tuple[int, int], StageModel] = {}
    chosen = []
    for stage in STAGE_NAMES:
        stage_config, client = config.for_stage(stage), clients.of(stage)
        key = (id(stage_config), id(client))  # a stage without settings of its own is the run's config
        if key not in models:
            models[key] = StageModel(client, await config_for_client(stage_config, client), await client.model_name())
        chosen.append(models[key])
    return StageModels(*chosen)


def short_model_name(model: str) -> str:
    """A model's name as tables show it: a GGUF by its file name, not its whole path."""
    return model.replace("\\", "/").rsplit("/", 1)[-1] if model.lower().endswith(".gguf") else model
