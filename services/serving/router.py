"""The ingress's serving logic: route requests to reward deployments, shared by HTTP and gRPC.

Requests are checked once here (counts, prompt rules, reward names) and forwarded with their
image payloads untouched; each reward replica decodes its images itself, so decoding scales
with the replicas and one bad image is an error for that image only. Every answer names the
model that scored (the replica's ``model`` field). Ray failures map onto the typed errors of
:mod:`services.errors`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from services.errors import (
    InvalidInput,
    ScoringFailed,
    UnknownReward,
    from_ray_error,
)
from services.images import ImageLimits, check_image_count, validate_prompts
from services.protocol import (
    HealthResponse,
    RewardHealth,
    RewardInfo,
    RewardResult,
    RewardsListResponse,
    ScoreManyResponse,
    ScoreResponse,
)

logger = logging.getLogger(__name__)
_INFO_TIMEOUT_S = 5.0


class RewardRouter:
    """Routes validated requests to reward deployment handles (or anything with their API)."""

    def __init__(
        self,
        handles: Mapping[str, Any],
        needs_prompt: Mapping[str, bool],
        limits: ImageLimits,
        timeout_s: float,
    ):
        self.handles = dict(handles)
        self.needs_prompt = dict(needs_prompt)
        self.limits = limits
        self.timeout_s = timeout_s

    def _handle(self, name: str) -> Any:
        if name not in self.handles:
            served = ", ".join(sorted(self.handles))
            raise UnknownReward(
                f"reward {name!r} is not served here; served rewards: {served}",
                details={"reward": name, "served": sorted(self.handles)},
            )
        return self.handles[name]

    def _check(
        self, names: Sequence[str], images: Sequence[Any], prompts: Sequence[str] | None
    ) -> list[str] | None:
        for name in names:
            self._handle(name)
        check_image_count(len(images), self.limits)
        checked = validate_prompts(prompts, len(images), self.limits)
        if checked is None:
            missing = [n for n in names if self.needs_prompt.get(n, False)]
            if missing:
                raise InvalidInput(
                    f"reward(s) {', '.join(missing)} need one prompt per image; "
                    "the request has none",
                    details={"rewards": missing},
                )
        return checked

    async def _call(
        self, name: str, images: Sequence[Any], prompts: Sequence[str] | None
    ) -> ScoreResponse:
        handle = self._handle(name)
        try:
            raw = await asyncio.wait_for(
                handle.score.remote(list(images), prompts), timeout=self.timeout_s
            )
        except Exception as exc:
            err = from_ray_error(exc)
            if isinstance(err, ScoringFailed):
                logger.exception("reward %r failed", name)
            raise err from None
        reply = ScoreResponse.model_validate(raw)
        if len(reply.results) != len(images):
            raise ScoringFailed(
                f"reward {name!r} returned {len(reply.results)} results for {len(images)} images"
            )
        return ScoreResponse(
            reward=name, results=reply.results, model=reply.model, version=reply.version
        )

    async def score(
        self, name: str, images: Sequence[Any], prompts: Sequence[str] | None = None
    ) -> ScoreResponse:
        """Score a batch with one reward."""
        checked = self._check([name], images, prompts)
        return await self._call(name, images, checked)

    async def score_many(
        self, names: Sequence[str], images: Sequence[Any], prompts: Sequence[str] | None = None
    ) -> ScoreManyResponse:
        """Score a batch with several rewards concurrently; a reward that fails as a whole
        gets ``error`` set and the others still answer."""
        if not names:
            raise InvalidInput("name at least one reward")
        checked = self._check(names, images, prompts)
        outcomes = await asyncio.gather(
            *(self._call(n, images, checked) for n in names), return_exceptions=True
        )
        entries = []
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                err = from_ray_error(outcome)
                entries.append(RewardResult(reward=name, error=f"{err.code}: {err.message}"))
            else:
                entry = RewardResult(
                    reward=name,
                    results=outcome.results,
                    model=outcome.model,
                    version=outcome.version,
                )
                entries.append(entry)
        return ScoreManyResponse(results=entries)

    async def _info(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            info = await asyncio.wait_for(self.handles[name].info.remote(), timeout=_INFO_TIMEOUT_S)
            return info, None
        except Exception as exc:
            err = from_ray_error(exc)
            return None, f"{err.code}: {err.message}"

    async def list_rewards(self) -> RewardsListResponse:
        """Every served reward with its config and readiness."""
        names = sorted(self.handles)
        infos = await asyncio.gather(*(self._info(n) for n in names))
        rewards = []
        for name, (info, _) in zip(names, infos, strict=True):
            info = info or {}
            rewards.append(
                RewardInfo(
                    name=name,
                    needs_prompt=self.needs_prompt.get(name, False),
                    description=info.get("description", ""),
                    model=info.get("model"),
                    version=info.get("version"),
                    config=info.get("config", {}),
                    ready=bool(info.get("ready", False)),
                )
            )
        return RewardsListResponse(rewards=rewards)

    async def health(self) -> HealthResponse:
        """Readiness of every reward (a replica that answers ``info`` has a loaded model)."""
        names = sorted(self.handles)
        infos = await asyncio.gather(*(self._info(n) for n in names))
        entries = [
            RewardHealth(reward=n, ready=bool(info and info.get("ready")), error=error)
            for n, (info, error) in zip(names, infos, strict=True)
        ]
        return HealthResponse(ready=all(e.ready for e in entries), rewards=entries)
