"""The trainer's ``reward_service.on_failure`` policy over a real ``RewardClient``.

The client talks to an in-memory transport (a plain object with ``score``/``close``), so no
Ray runs; tests/integration/test_training_faults.py drives the same code through Serve.
A reward that fails as a whole either fails the step naming it, or is waited for and
rescored; it never gets a score it did not compute, and every retry and wait is counted.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.client import RetryPolicy, RewardClient
from services.errors import ScoringTimeout
from services.protocol import ItemResult
from trainer.config import RewardServiceConfig
from trainer.loop import rollout_phase
from trainer.loop.rollout_phase import RewardFailure, ScoringTally, wait_for_scores

REWARDS = ["fast", "slow"]


class FlakyTransport:
    """Scores an image by its first pixel (+100 for ``slow``); ``slow`` times out on its
    first ``timeouts`` calls."""

    def __init__(self, timeouts: int):
        self.timeouts = timeouts
        self.calls = {name: 0 for name in REWARDS}

    def score(self, reward, images, prompts, timeout_s):
        self.calls[reward] += 1
        if reward == "slow" and self.calls[reward] <= self.timeouts:
            raise ScoringTimeout("the reward did not answer within the timeout")
        offset = 100.0 if reward == "slow" else 0.0
        return [ItemResult(score=float(img[0, 0, 0]) + offset) for img in images]

    def close(self):
        pass


def _pending(client: RewardClient):
    batches = [[np.full((2, 2, 3), v, np.uint8) for v in values] for values in ([1, 2], [3, 4])]
    return [(client.submit(images, ["p"] * 2, REWARDS), images, ["p"] * 2) for images in batches]


def _client(transport, retries: int = 1) -> RewardClient:
    retry = RetryPolicy(max_retries=retries, backoff_s=0.001, max_backoff_s=0.001)
    return RewardClient(transport, retry=retry)


def test_fail_names_the_failed_reward_and_scores_nothing():
    transport = FlakyTransport(timeouts=100)
    tally = ScoringTally(REWARDS)
    with _client(transport) as client, pytest.raises(RewardFailure) as info:
        wait_for_scores(client, _pending(client), REWARDS, RewardServiceConfig(), tally)
    assert "slow: timeout" in str(info.value) and "fast" not in str(info.value)
    assert tally.retries.tolist() == [0, 2] and tally.waits.tolist() == [0, 0]


def test_wait_rescores_every_failed_batch_together_until_the_reward_answers(monkeypatch):
    monkeypatch.setattr(rollout_phase, "WAIT_POLL_S", 0.01)
    transport = FlakyTransport(timeouts=4)  # both batches: first try and its retry time out
    tally = ScoringTally(REWARDS)
    cfg = RewardServiceConfig(on_failure="wait", wait_timeout_s=30)
    with _client(transport) as client:
        matrices = wait_for_scores(client, _pending(client), REWARDS, cfg, tally)
    scores = np.concatenate([m.scores for m in matrices], axis=1)
    np.testing.assert_array_equal(scores, [[1, 2, 3, 4], [101, 102, 103, 104]])
    assert all(not m.failures for m in matrices)
    assert tally.waits.tolist() == [0, 1]  # one round for both failed batches
    assert tally.retries.tolist() == [0, 2] and transport.calls == {"fast": 2, "slow": 6}


def test_wait_gives_up_loudly_after_wait_timeout(monkeypatch):
    monkeypatch.setattr(rollout_phase, "WAIT_POLL_S", 0.01)
    cfg = RewardServiceConfig(on_failure="wait", wait_timeout_s=0.05)
    client = _client(FlakyTransport(timeouts=10_000), retries=0)
    with client, pytest.raises(RewardFailure, match=r"after waiting 0.05 s .*slow: timeout"):
        wait_for_scores(client, _pending(client), REWARDS, cfg)
