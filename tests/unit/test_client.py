"""``RewardClient`` over an in-memory transport: matrix layout, fan-out, retries, failures.

The transport is a plain object (the ``Transport`` protocol), so no Ray, HTTP or gRPC runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.client import RetryPolicy, RewardClient, RewardsUnavailable, ScoreMatrix
from services.errors import InvalidInput, ScoringFailed, ScoringTimeout, Unavailable
from services.protocol import ItemResult, ScoreResponse

IMAGES = [np.full((2, 2, 3), v, dtype=np.uint8) for v in (10, 20, 30)]
PROMPTS = ["a", "b", "c"]
FAST_RETRY = RetryPolicy(max_retries=3, backoff_s=0.001, max_backoff_s=0.002)


def _by_pixel(reward_offset: float) -> Callable:
    """A scorer giving each image its first pixel value plus an offset."""
    return lambda images, prompts: [
        ItemResult(score=float(img[0, 0, 0]) + reward_offset) for img in images
    ]


class FakeTransport:
    """Scores with per-reward functions; a scripted exception is raised instead when queued.

    ``script[reward]`` is a list consumed one entry per call: an exception to raise, or
    ``None`` to call the scorer.
    """

    def __init__(self, scorers: dict[str, Callable], delay_s: float = 0.0):
        self.scorers = scorers
        self.delay_s = delay_s
        self.script: dict[str, list[BaseException | None]] = {}
        self.calls: list[tuple[str, int, list[str] | None, float]] = []
        self.closed = False
        self._lock = threading.Lock()

    def score(self, reward, images, prompts, timeout_s):
        with self._lock:
            self.calls.append((reward, len(images), prompts, timeout_s))
            queued = self.script.get(reward, [])
            outcome = queued.pop(0) if queued else None
        if self.delay_s:
            time.sleep(self.delay_s)
        if outcome is not None:
            raise outcome
        return self.scorers[reward](images, prompts)

    def close(self):
        self.closed = True

    def calls_to(self, reward: str) -> int:
        return sum(1 for call in self.calls if call[0] == reward)


def _client(transport, **kwargs) -> RewardClient:
    kwargs.setdefault("retry", FAST_RETRY)
    return RewardClient(transport, **kwargs)


# --------------------------------------------------------------------------- the matrix


def test_matrix_rows_follow_the_requested_reward_order():
    transport = FakeTransport({"a": _by_pixel(0.0), "b": _by_pixel(1000.0), "c": _by_pixel(0.5)})
    with _client(transport, timeout_s=7.5) as client:
        matrix = client.score(IMAGES, PROMPTS, ["c", "a", "b"])
    assert isinstance(matrix, ScoreMatrix)
    assert matrix.rewards == ["c", "a", "b"]
    assert matrix.scores.shape == (3, 3)
    np.testing.assert_array_equal(
        matrix.scores, [[10.5, 20.5, 30.5], [10, 20, 30], [1010, 1020, 1030]]
    )
    assert matrix.failures == {}
    assert matrix.attempts == {"a": 1, "b": 1, "c": 1}
    assert matrix.errors == {r: [None, None, None] for r in "abc"}
    assert matrix.unscored() == {"a": 0, "b": 0, "c": 0}
    # Every call gets the whole batch, the prompts and the client's timeout.
    assert sorted(transport.calls) == [(r, 3, PROMPTS, 7.5) for r in "abc"]
    assert transport.closed  # the context manager closes the transport


def test_prompts_none_is_passed_through():
    transport = FakeTransport({"a": _by_pixel(0.0)})
    with _client(transport) as client:
        client.score(iter(IMAGES), None, ["a"])  # any iterable of images
    assert transport.calls == [("a", 3, None, 120.0)]


def test_unscored_items_are_nan_and_their_errors_are_kept():
    def partial(images, prompts):
        return [ItemResult(score=1.5), ItemResult(error="image 1: not a PNG"), ItemResult()]

    transport = FakeTransport({"a": partial, "b": _by_pixel(0.0)})
    with _client(transport) as client:
        matrix = client.score(IMAGES, PROMPTS, ["a", "b"])
    assert matrix.scores[0, 0] == 1.5
    assert np.isnan(matrix.scores[0, 1:]).all()
    assert matrix.errors["a"] == [None, "image 1: not a PNG", None]
    assert matrix.unscored() == {"a": 2, "b": 0}
    assert matrix.failures == {}


def test_no_reward_is_an_error():
    with _client(FakeTransport({})) as client, pytest.raises(ValueError, match="reward"):
        client.submit(IMAGES, PROMPTS, [])


def test_submit_returns_a_future_at_once():
    gate = threading.Event()

    def blocked(images, prompts):
        gate.wait(5)
        return [ItemResult(score=2.0) for _ in images]

    with _client(FakeTransport({"a": blocked})) as client:
        start = time.perf_counter()
        future = client.submit(IMAGES, PROMPTS, ["a"])
        assert time.perf_counter() - start < 0.5
        assert isinstance(future, Future)
        assert not future.done()
        gate.set()
        np.testing.assert_array_equal(future.result(timeout=5).scores, [[2.0, 2.0, 2.0]])


def test_rewards_are_scored_concurrently():
    names = ["a", "b", "c", "d"]
    transport = FakeTransport({n: _by_pixel(0.0) for n in names}, delay_s=0.2)
    with _client(transport) as client:
        start = time.perf_counter()
        matrix = client.score(IMAGES, PROMPTS, names)
        elapsed = time.perf_counter() - start
    assert elapsed < 0.6, f"4 calls of 0.2 s took {elapsed:.2f} s: not run in parallel"
    assert not np.isnan(matrix.scores).any()


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("error", [Unavailable("replica lost"), ScoringTimeout("slow")])
def test_retryable_errors_are_retried_then_succeed(error, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("services.client.time.sleep", sleeps.append)
    transport = FakeTransport({"a": _by_pixel(0.0), "b": _by_pixel(0.0)})
    transport.script["a"] = [error, error]
    retry = RetryPolicy(max_retries=3, backoff_s=0.1, max_backoff_s=10.0)
    with _client(transport, retry=retry) as client:
        matrix = client.score(IMAGES, PROMPTS, ["a", "b"])
    assert matrix.attempts == {"a": 3, "b": 1}
    assert transport.calls_to("a") == 3
    assert matrix.failures == {}
    np.testing.assert_array_equal(matrix.scores[0], [10, 20, 30])
    # Exponential backoff with jitter in [0.5, 1) of the base: 0.1 s, then 0.2 s.
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] < 0.1 and 0.1 <= sleeps[1] < 0.2


def test_plain_connection_and_timeout_errors_are_retryable_too():
    transport = FakeTransport({"a": _by_pixel(0.0)})
    transport.script["a"] = [ConnectionError("refused"), TimeoutError("slow")]
    with _client(transport) as client:
        matrix = client.score(IMAGES, PROMPTS, ["a"])
    assert matrix.attempts == {"a": 3}
    assert matrix.failures == {}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("prompt 0: too long"), "invalid_input"),
        (ScoringFailed("model crashed"), "scoring_failed"),
        (RuntimeError("boom"), "scoring_failed"),
    ],
)
def test_non_retryable_errors_fail_at_once(error, code):
    transport = FakeTransport({"a": _by_pixel(0.0), "b": _by_pixel(0.0)})
    transport.script["a"] = [error]
    with _client(transport) as client:
        matrix = client.score(IMAGES, PROMPTS, ["a", "b"])
    assert transport.calls_to("a") == 1
    assert matrix.attempts == {"a": 1, "b": 1}
    assert matrix.failures["a"].startswith(f"{code}: ")
    assert set(matrix.failures) == {"a"}
    assert np.isnan(matrix.scores[0]).all()
    np.testing.assert_array_equal(matrix.scores[1], [10, 20, 30])
    assert "a" not in matrix.errors  # per-item errors exist only for a reward that answered


def test_exhausted_retries_leave_a_nan_row_and_a_failure():
    transport = FakeTransport({"a": _by_pixel(0.0), "b": _by_pixel(0.0)})
    transport.script["a"] = [Unavailable("replica lost")] * 10
    with _client(transport, retry=RetryPolicy(2, 0.001, 0.001)) as client:
        matrix = client.score(IMAGES, PROMPTS, ["a", "b"])
    assert transport.calls_to("a") == 3  # the first try and two retries
    assert matrix.attempts["a"] == 3
    assert matrix.failures == {"a": "unavailable: replica lost"}
    assert np.isnan(matrix.scores[0]).all()
    assert matrix.unscored() == {"a": 3, "b": 0}


def test_strict_mode_raises_rewards_unavailable_naming_the_reward():
    transport = FakeTransport({"a": _by_pixel(0.0), "b": _by_pixel(0.0)})
    transport.script["b"] = [ScoringTimeout("too slow")] * 10
    with _client(transport, retry=RetryPolicy(1, 0.001, 0.001), strict=True) as client:
        future = client.submit(IMAGES, PROMPTS, ["a", "b"])
        with pytest.raises(RewardsUnavailable, match="b: timeout: too slow") as info:
            future.result(timeout=5)
    assert isinstance(info.value, Unavailable) and info.value.retryable
    assert transport.calls_to("b") == 2


def test_strict_mode_without_failures_returns_the_matrix():
    transport = FakeTransport({"a": _by_pixel(0.0)})
    transport.script["a"] = [Unavailable("blip")]
    with _client(transport, strict=True) as client:
        assert client.score(IMAGES, PROMPTS, ["a"]).attempts == {"a": 2}


# --------------------------------------------------------------------------- invariants

_OUTCOME = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["image unreadable", "no text found"]),
)
_REWARD_PLAN = st.one_of(
    st.sampled_from(["invalid", "unavailable", "crash"]),  # the whole call fails
    st.lists(_OUTCOME, min_size=4, max_size=4),  # per-item outcomes
)


@settings(max_examples=60, deadline=None)
@given(plans=st.lists(_REWARD_PLAN, min_size=1, max_size=4))
def test_a_failure_is_never_a_score(plans):
    names = [f"r{k}" for k in range(len(plans))]
    errors = {
        "invalid": InvalidInput("bad"),
        "unavailable": Unavailable("down"),
        "crash": RuntimeError("x"),
    }

    def scorer(plan):
        def score(images, prompts):
            return [
                ItemResult(error=item) if isinstance(item, str) else ItemResult(score=item)
                for item in plan
            ]

        return score

    transport = FakeTransport({})
    for name, plan in zip(names, plans, strict=True):
        if isinstance(plan, str):
            transport.script[name] = [errors[plan]]
        else:
            transport.scorers[name] = scorer(plan)
    images = IMAGES + IMAGES[:1]
    with _client(transport, retry=RetryPolicy(max_retries=0)) as client:
        matrix = client.score(images, None, names)
    assert matrix.scores.shape == (len(names), 4)
    for k, (name, plan) in enumerate(zip(names, plans, strict=True)):
        row = matrix.scores[k]
        if isinstance(plan, str):
            assert np.isnan(row).all()
            assert name in matrix.failures
            continue
        assert name not in matrix.failures
        for i, item in enumerate(plan):
            if isinstance(item, float):
                assert row[i] == item
            else:
                assert math.isnan(row[i])
                assert matrix.errors[name][i] == (item if isinstance(item, str) else None)


# --------------------------------------------------------------------------- RetryPolicy


def test_retry_delay_grows_exponentially_and_is_capped(monkeypatch):
    policy = RetryPolicy(max_retries=10, backoff_s=0.5, max_backoff_s=3.0)
    monkeypatch.setattr("services.client.random.random", lambda: 1.0)  # jitter's top end
    assert [policy.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    monkeypatch.setattr("services.client.random.random", lambda: 0.0)  # jitter's bottom end
    assert [policy.delay(a) for a in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(1, 40),
    backoff=st.floats(0.001, 5.0),
    cap=st.floats(0.001, 60.0),
)
def test_retry_delay_jitter_stays_within_half_and_full_base(attempt, backoff, cap):
    policy = RetryPolicy(backoff_s=backoff, max_backoff_s=cap)
    base = min(cap, backoff * 2 ** (attempt - 1))
    delay = policy.delay(attempt)
    assert 0.5 * base <= delay <= base
    assert delay <= cap


def test_the_matrix_names_each_rewards_model():
    """A transport's ``ScoreResponse.model`` reaches the matrix; a transport that still answers
    with a bare list of results (written before responses named their model) gives None."""

    def named(images, prompts):
        results = [ItemResult(score=1.0) for _ in images]
        return ScoreResponse(reward="named", results=results, model="checkpoint X")

    transport = FakeTransport({"named": named, "bare": _by_pixel(0.0)})
    with _client(transport) as client:
        matrix = client.score(IMAGES, PROMPTS, ["named", "bare"])
    assert matrix.models == {"named": "checkpoint X", "bare": None}
    assert np.isfinite(matrix.scores).all()
