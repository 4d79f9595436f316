"""The ``colorfulness`` reward on hand-made images whose Hasler-Süsstrunk M is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.rewards.base import build_reward


@pytest.fixture(scope="module")
def reward():
    model = build_reward("colorfulness")
    model.load()
    return model


def _uniform(rgb, size=16) -> np.ndarray:
    return np.full((size, size, 3), rgb, dtype=np.uint8)


@pytest.mark.parametrize("level", [0, 1, 127, 255])
def test_grey_scores_exactly_zero(reward, level):
    assert reward.score([_uniform((level, level, level))], [None]) == [0.0]


def test_uniform_colour_is_the_mean_term_only(reward):
    # rg = 200 - 50 = 150, yb = (200 + 50) / 2 - 10 = 115, no spread
    assert reward.score([_uniform((200, 50, 10))], [None])[0] == pytest.approx(
        0.3 * math.sqrt(150**2 + 115**2), abs=1e-9
    )
    # pure red: rg = 255, yb = 127.5
    assert reward.score([_uniform((255, 0, 0))], [None])[0] == pytest.approx(
        0.3 * math.sqrt(255**2 + 127.5**2), abs=1e-9
    )


def test_half_red_half_green(reward):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, :4, 0] = 255
    image[:, 4:, 1] = 255
    # rg is +255 or -255: mean 0, std 255; yb is 127.5 everywhere: mean 127.5, std 0
    expected = math.sqrt(255**2 + 0**2) + 0.3 * math.sqrt(0**2 + 127.5**2)
    assert expected == 293.25
    assert reward.score([image], [None])[0] == pytest.approx(expected, abs=1e-9)


def test_more_saturation_scores_higher(reward):
    rng = np.random.default_rng(0)
    colourful = rng.integers(0, 256, (32, 32, 3)).astype(np.float64)
    grey = colourful.mean(axis=-1, keepdims=True)
    blends = [
        np.round(grey + s * (colourful - grey)).astype(np.uint8) for s in np.linspace(0, 1, 6)
    ]
    scores = reward.score(blends, [None] * len(blends))
    assert scores[0] < 1.0  # rounding leaves a trace of colour, no more
    assert all(a < b for a, b in zip(scores, scores[1:], strict=False))


def test_scale_divides_and_batches_are_independent(reward):
    images = [_uniform((200, 50, 10)), _uniform((9, 9, 9)), _uniform((0, 0, 255), size=3)]
    raw = reward.score(images, [None, "ignored", None])
    scaled = build_reward("colorfulness", {"scale": 100})
    scaled.load()
    np.testing.assert_allclose(scaled.score(images, [None] * 3), np.array(raw) / 100)
    assert [reward.score([im], [None])[0] for im in images] == raw


def test_empty_image_is_not_scored(reward):
    assert reward.score([np.zeros((0, 4, 3), dtype=np.uint8)], [None]) == [None]


def test_mismatch_and_bad_params_raise(reward):
    with pytest.raises(ValueError, match="prompts"):
        reward.score([_uniform((1, 2, 3))], [None, None])
    with pytest.raises(ValueError, match=r"colorfulness\.scale"):
        build_reward("colorfulness", {"scale": 0})
    assert not reward.needs_prompt
    reward.health_check()
