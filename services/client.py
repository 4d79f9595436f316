"""``RewardClient``: score images with several rewards at once, over any transport.

One client, three transports (Serve handles in the cluster, HTTP and gRPC outside), one
result type. It fans out to every requested reward concurrently, gives each call a timeout,
retries with exponential backoff only what may succeed on retry (an unavailable replica, a
timeout), and never turns a failure into a score: what could not be scored is NaN in the
matrix, with the reason kept next to it, and so is the model that scored each reward.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from services.errors import RewardServiceError, Unavailable, as_service_error
from services.protocol import ItemResult, ScoreResponse
from services.transports import GrpcTransport, HandleTransport, HttpTransport, Transport

logger = logging.getLogger(__name__)


class RewardsUnavailable(Unavailable):
    """A reward failed as a whole after every retry (raised in strict mode)."""


@dataclass
class ScoreMatrix:
    """Scores of a batch: ``scores[k, i]`` for reward ``rewards[k]``, NaN = not scored."""

    rewards: list[str]
    scores: np.ndarray
    errors: dict[str, list[str | None]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # reward -> why it failed wholesale
    attempts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0  # from submit until every reward answered
    models: dict[str, str | None] = field(default_factory=dict)  # reward -> what scored it

    def unscored(self) -> dict[str, int]:
        """Number of images without a score, per reward."""
        return {r: int(np.isnan(self.scores[k]).sum()) for k, r in enumerate(self.rewards)}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and jitter, for retryable errors only."""

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


def _as_response(reward: str, reply: ScoreResponse | Sequence[ItemResult]) -> ScoreResponse:
    """A transport's answer as a ``ScoreResponse``; a bare list of results (a transport written
    before responses named their model) has no model."""
    if isinstance(reply, ScoreResponse):
        return reply
    return ScoreResponse(reward=reward, results=list(reply))


class RewardClient:
    """Score batches with several rewards concurrently; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        strict: bool = False,
        max_concurrency: int = 16,
    ):
        self.transport = transport
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.strict = strict
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="reward")

    @classmethod
    def in_cluster(cls, app_name: str = "rewards", **kwargs) -> RewardClient:
        """Client over Serve deployment handles (trainer workers, the driver)."""
        return cls(HandleTransport(app_name), **kwargs)

    @classmethod
    def over_http(
        cls,
        url: str,
        token: str | None = None,
        image_format: str = "raw",
        body_format: str = "protobuf",
        **kwargs,
    ) -> RewardClient:
        """Client over the HTTP ingress, e.g. ``http://127.0.0.1:8000``; images travel as
        ``raw`` pixels (default) or ``png`` files, in a ``protobuf`` (default) or ``json`` body."""
        return cls(HttpTransport(url, token, image_format, body_format), **kwargs)

    @classmethod
    def over_grpc(
        cls,
        target: str,
        token: str | None = None,
        app_name: str = "rewards",
        image_format: str = "raw",
        **kwargs,
    ) -> RewardClient:
        """Client over Serve's gRPC proxy, e.g. ``127.0.0.1:9000``; images as in ``over_http``."""
        return cls(GrpcTransport(target, token, app_name, image_format), **kwargs)

    def submit(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str] | None,
        rewards: Sequence[str],
    ) -> Future[ScoreMatrix]:
        """Start scoring and return at once; ``.result()`` gives the ``ScoreMatrix``.

        Lets a trainer sample the next micro-batch while this one is being scored.
        """
        if not rewards:
            raise ValueError("name at least one reward")
        images = list(images)
        prompts = list(prompts) if prompts is not None else None
        started = time.perf_counter()
        calls = {r: self._pool.submit(self._call_with_retry, r, images, prompts) for r in rewards}
        return self._pool.submit(self._collect, list(rewards), len(images), calls, started)

    def score(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str] | None,
        rewards: Sequence[str],
    ) -> ScoreMatrix:
        """Blocking version of :meth:`submit`."""
        return self.submit(images, prompts, rewards).result()

    def _call_with_retry(
        self, reward: str, images: list[np.ndarray], prompts: list[str] | None
    ) -> tuple[ScoreResponse, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self.transport.score(reward, images, prompts, self.timeout_s)
                return _as_response(reward, reply), attempt
            except Exception as exc:
                err = exc if isinstance(exc, RewardServiceError) else as_service_error(exc)
                if not err.retryable or attempt > self.retry.max_retries:
                    err.details.setdefault("attempts", attempt)
                    raise err from exc
                delay = self.retry.delay(attempt)
                logger.warning(
                    "reward %r: %s (attempt %d), retrying in %.2fs", reward, err, attempt, delay
                )
                time.sleep(delay)

    def _collect(
        self, rewards: list[str], n_images: int, calls: dict[str, Future], started: float
    ) -> ScoreMatrix:
        scores = np.full((len(rewards), n_images), np.nan)
        matrix = ScoreMatrix(rewards=rewards, scores=scores)
        for k, reward in enumerate(rewards):
            try:
                reply, attempts = calls[reward].result()
            except RewardServiceError as err:
                matrix.failures[reward] = f"{err.code}: {err.message}"
                matrix.attempts[reward] = int(err.details.get("attempts", 1))
                continue
            matrix.attempts[reward] = attempts
            matrix.models[reward] = reply.model
            results = reply.results
            matrix.errors[reward] = [item.error for item in results]
            for i, item in enumerate(results):
                if item.score is not None:
                    scores[k, i] = item.score
        matrix.elapsed_s = time.perf_counter() - started
        if matrix.failures and self.strict:
            detail = "; ".join(f"{r}: {why}" for r, why in matrix.failures.items())
            raise RewardsUnavailable(f"rewards failed after retries: {detail}")
        return matrix

    def close(self) -> None:
        """Stop the worker threads and close the transport."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.transport.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
