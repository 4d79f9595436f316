"""One reward model as a Serve deployment: a plain class, batched across all its callers.

``build_app`` applies ``serve.deployment`` to this class, so a unit test can construct it
without Ray. Every entry point (handles from the trainer, the HTTP and gRPC ingress) ends in
``score``, which validates and decodes each image on its own (one bad image is an error for
that image only), then submits the good ones, as one request, to a
:class:`~services.serving.batcher.RequestBatcher` that runs one model call per gathered batch
(docs/serving.md, "Dynamic batching", says why not ``@serve.batch``). Its answer
has the shape of a ``ScoreResponse``: the reward, the model that scored (``model_info``) and
one result per image, with the reward's own reason where it could not score one, and the
``version`` (:func:`config_fingerprint`) that tells an old replica from a new one during a
rolling upgrade.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from services.config import RewardDeploymentConfig
from services.errors import InvalidInput, RewardServiceError
from services.images import ImageLimits, check_image_count, decode_image, validate_prompts
from services.metrics import RewardMetrics
from services.rewards.base import UNSCORED, RewardModel, build_reward
from services.serving.batcher import RequestBatcher

logger = logging.getLogger(__name__)


def config_fingerprint(reward: str, config: dict[str, Any]) -> str:
    """12 hex digits naming a reward and its whole resolved config (defaults included).

    Equal configs give equal versions on every replica and every node; any changed
    parameter gives another, so each answer names the configuration that scored it.
    """
    canonical = json.dumps({"reward": reward, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class RewardDeployment:
    """Serves one reward model; ``score`` returns ``{"reward", "model", "results"}`` with one
    ``{"score", "error"}`` dict per image."""

    def __init__(
        self,
        config: dict[str, Any],
        limits: dict[str, Any] | None = None,
        model: RewardModel | None = None,
    ):
        self.config = RewardDeploymentConfig.model_validate(config)
        self.limits = ImageLimits.model_validate(limits or {})
        self.model = model or build_reward(
            self.config.reward, self.config.params, self.config.module
        )
        if not self.model.loaded:
            self.model.load()
        self.metrics = RewardMetrics(self.config.reward)
        self.model_description = self.model.model_info().description
        self.version = config_fingerprint(
            self.config.reward, self.model.config.model_dump(mode="json")
        )
        # The model runs off the event loop so that new requests keep joining the queue.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-model")
        self._decoders = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reward-decode")
        self._batcher: RequestBatcher[tuple[np.ndarray, str | None], Any] = RequestBatcher(
            self._score_batch,
            max_batch_size=self.config.max_batch_size,
            batch_wait_timeout_s=self.config.batch_wait_timeout_s,
            on_queue_length=self.metrics.set_queue_length,
            name=f"reward {self.config.reward!r}",
        )

    async def score(
        self,
        images: Sequence[np.ndarray | bytes | str],
        prompts: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Score a request; request-level problems raise, per-image problems become errors."""
        start = time.perf_counter()
        images = list(images)
        check_image_count(len(images), self.limits)
        checked_prompts = validate_prompts(prompts, len(images), self.limits)
        if checked_prompts is None and self.model.needs_prompt:
            raise InvalidInput(
                f"reward {self.config.reward!r} needs one prompt per image; the request has none"
            )
        results: list[dict[str, Any]] = [{"score": None, "error": None} for _ in images]
        decoded = await self._decode_all(images)
        items, positions = [], []
        for i, array in enumerate(decoded):
            if isinstance(array, RewardServiceError):
                results[i]["error"] = str(array)
                continue
            prompt = checked_prompts[i] if checked_prompts is not None else None
            items.append((array, prompt))
            positions.append(i)
        self.metrics.count_error("invalid_input", len(images) - len(items))
        outcomes = await self._batcher.submit(items)
        failed = sum(isinstance(outcome, BaseException) for outcome in outcomes)
        self.metrics.count_error("model_error", failed)
        for i, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results[i]["error"] = f"reward {self.config.reward!r} failed: {outcome}"
            elif outcome is None:
                prompt = checked_prompts[i] if checked_prompts is not None else None
                results[i]["error"] = self._unscored_reason(prompt)
            elif not math.isfinite(outcome):
                results[i]["error"] = f"the reward returned a non-finite score ({outcome})"
            else:
                results[i]["score"] = float(outcome)
        self.metrics.observe_request(time.perf_counter() - start)
        reward = self.config.deployment_name
        return {
            "reward": reward,
            "model": self.model_description,
            "version": self.version,
            "results": results,
        }

    def _unscored_reason(self, prompt: str | None) -> str:
        """The reward's reason for a ``None``; a failing explanation must not fail the request."""
        try:
            return self.model.unscored_reason(prompt)
        except Exception:
            logger.exception("reward %r: unscored_reason failed", self.config.reward)
            return UNSCORED

    async def _decode_all(self, images: list[Any]) -> list[Any]:
        """Every image as an RGB array, or the error that names why it is unusable.

        Arrays (the handle path) are only checked, inline: a thread hop would cost more. Files
        and raw pixels decode in threads (Pillow and base64 release the GIL), so other requests
        keep joining the batch queue meanwhile.
        """
        if all(isinstance(item, np.ndarray) for item in images):
            return [self._decode(item, i) for i, item in enumerate(images)]
        loop = asyncio.get_running_loop()
        return await asyncio.gather(
            *(
                loop.run_in_executor(self._decoders, self._decode, item, i)
                for i, item in enumerate(images)
            )
        )

    def _decode(self, item: np.ndarray | bytes | str, index: int) -> Any:
        try:
            return decode_image(item, index, self.limits)
        except RewardServiceError as exc:
            return exc

    async def _score_batch(self, items: list[tuple[np.ndarray, str | None]]) -> list[Any]:
        """One model call for a batch the batcher gathered from any callers.

        Exceptions and a wrong score count are the batcher's to map onto that batch's items.
        """
        arrays = [item[0] for item in items]
        prompts = [item[1] for item in items]
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._executor, self.model.score, arrays, prompts)
        if len(scores) == len(items):
            self.metrics.observe_batch(scores)
        return scores

    def info(self) -> dict[str, Any]:
        """Name, whether prompts are needed, the reward's config and readiness."""
        return {
            "name": self.config.deployment_name,
            "reward": self.config.reward,
            "needs_prompt": self.model.needs_prompt,
            "description": self.model.description,
            "model": self.model_description,
            "version": self.version,
            "config": self.model.config.model_dump(mode="json"),
            "ready": self.model.loaded,
        }

    def batch_stats(self) -> dict[str, int]:
        """How dynamic batching has grouped this replica's work so far."""
        stats = self._batcher.stats
        return {
            "batches": stats.batches,
            "images": stats.images,
            "max_batch_size_seen": stats.max_batch_size_seen,
        }

    def check_health(self) -> None:
        """Serve calls this periodically; raising makes Serve replace the replica."""
        self.model.health_check()
