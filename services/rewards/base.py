"""The reward-model contract and the registry every reward file registers into.

A reward model is a plain class: its own pydantic ``Config``, a ``load()`` that runs once per
replica (weights are never loaded at import time), and a batched ``score()`` that returns one
value per image, ``None`` where the image could not be scored (never a made-up 0, which would
corrupt the group baseline). Decoding, batching, metrics and error mapping live elsewhere and
are shared by every reward.

Every reward also says what scores (``model_info()``): a one-line description of the model,
computed from the config alone (before ``load()``), and whether its weights are random. The
``tiny`` variants of the model-based rewards are random-weight models built in code for tests:
their scores mean nothing, so evaluation refuses them unless asked (``services.eval
--allow-random``). The description travels in every score response's ``model`` field.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Image = np.ndarray  # uint8 RGB array of shape [height, width, 3]
RANDOM_WEIGHTS_PREFIX = "random-weight"  # how every random-weight model description begins
UNSCORED = "the reward could not score this image"  # the reason when a reward gives none


@dataclass(frozen=True)
class ModelInfo:
    """What a reward scores with: ``description`` (one line) and whether its weights are random.

    A random-weight description starts with ``RANDOM_WEIGHTS_PREFIX`` and no other does, so a
    caller that only sees the wire's ``model`` string can tell (``is_random_model``).
    """

    description: str
    random_weights: bool = False

    def __post_init__(self) -> None:
        if not self.description:
            raise ValueError("a model description must not be empty")
        if is_random_model(self.description) != self.random_weights:
            raise ValueError(
                f"model description {self.description!r}: it must start with "
                f"{RANDOM_WEIGHTS_PREFIX!r} exactly when the weights are random"
            )


def is_random_model(description: str | None) -> bool:
    """Whether a ``model`` description (as sent on the wire) names random weights."""
    return bool(description) and description.startswith(RANDOM_WEIGHTS_PREFIX)


class RewardConfig(BaseModel):
    """Fields every reward shares; a reward's own ``Config`` subclasses this."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    variant: Literal["tiny", "pretrained"] = Field(
        "tiny", description="tiny: random-weight model of the same architecture built in code"
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu', 'cuda', 'cuda:1'")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(16, ge=1, description="images per forward pass inside score()")
    seed: int = Field(0, description="seed of the tiny variant's random weights")


class RewardModel(ABC):
    """Base class of every reward model; subclasses set ``name`` and ``Config``."""

    name: ClassVar[str]
    Config: ClassVar[type[RewardConfig]] = RewardConfig
    needs_prompt: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, config: RewardConfig):
        self.config = config
        self.loaded = False

    def load(self) -> None:
        """Load weights (or build the tiny variant); called once per replica."""
        self.loaded = True

    @abstractmethod
    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """Score a batch: one float per image, ``None`` where it cannot be scored."""

    @abstractmethod
    def model_info(self) -> ModelInfo:
        """What scores, from the config alone (callable before ``load()``)."""

    def unscored_reason(self, prompt: str | None) -> str:
        """Why ``score()`` gave ``None`` for an image with this prompt; a reward that knows
        more (e.g. OCR: the prompt names no text) says so."""
        return UNSCORED

    def health_check(self) -> None:
        """Raise if the model is broken; the default scores a small probe image."""
        if not self.loaded:
            raise RuntimeError(f"reward {self.name!r} is not loaded")
        probe = np.full((32, 32, 3), 127, dtype=np.uint8)
        out = self.score([probe], ['a photo of a sign that says "OK"'])
        if len(out) != 1 or (out[0] is not None and not np.isfinite(out[0])):
            raise RuntimeError(f"reward {self.name!r} returned {out!r} for the health probe")


_REGISTRY: dict[str, type[RewardModel]] = {}


def register(cls: type[RewardModel]) -> type[RewardModel]:
    """Class decorator: make a reward model available by its ``name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} must set a class attribute 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"reward name {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls


def _import_all() -> None:
    """Import every module of this package so that each registers its reward."""
    import services.rewards as pkg

    for module in pkgutil.iter_modules(pkg.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{module.name}")


def reward_names() -> list[str]:
    """Names of every registered reward, sorted."""
    _import_all()
    return sorted(_REGISTRY)


def import_reward_module(module: str | None) -> None:
    """Import ``module`` so that the rewards it defines register themselves.

    For rewards that live outside this package (the benchmarks' ``simulated_latency`` in
    ``bench/simulated_latency.py``): a deployment names the module in its config, and every
    process that looks the reward up (the driver, each replica) imports it first. ``None`` is
    a no-op; a module that cannot be imported raises ``ImportError``.
    """
    if module:
        importlib.import_module(module)


def get_reward_class(name: str, module: str | None = None) -> type[RewardModel]:
    """The class registered as ``name`` (after importing ``module``, if given); ``KeyError``
    naming the known rewards otherwise."""
    _import_all()
    import_reward_module(module)
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_reward(name: str, params: dict | None = None, module: str | None = None) -> RewardModel:
    """Validate ``params`` against the reward's ``Config`` and build it (not yet loaded).

    A bad parameter raises ``ValueError`` naming ``rewards.<name>.<field>``; ``module`` is
    imported first (see :func:`import_reward_module`).
    """
    cls = get_reward_class(name, module)
    try:
        config = cls.Config(**(params or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"bad params for reward {name!r}: {problems}") from None
    return cls(config)
