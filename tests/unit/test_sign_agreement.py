"""sign_agreement: which objective decides the advantage's sign (the hijacking share)."""

import numpy as np
import pytest

from trainer.core.balance import make_balancer, sign_agreement
from trainer.core.groups import group_stats

NAN = np.nan


def test_hand_made_batch():
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    rewards = np.array(
        [
            [0.0, 100.0, 200.0, 300.0, 50.0, 50.0, 50.0, 50.0],  # group 1 has no spread
            [0.4, 0.3, 0.2, 0.1, 1.0, 2.0, 3.0, NAN],  # opposes objective 0 in group 0
            [7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0],  # no spread anywhere
        ]
    )
    adv = np.array([-1.0, -0.5, 0.5, 1.0, 0.0, 1.0, 1.0, 2.0])
    share = sign_agreement(adv, rewards, group_stats(rewards, groups))
    # objective 0: group 0 only, all four signs agree
    assert share[0] == 1.0
    # objective 1: group 0 disagrees 4 times; group 1: sample 4 (deviation -1, advantage 0)
    # disagrees, sample 5 sits on the mean (left out), sample 6 agrees, sample 7 is unscored
    assert share[1] == pytest.approx(1 / 6)
    assert np.isnan(share[2])


def test_static_is_hijacked_by_the_widest_reward_and_dsan_is_not():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(64), 8)
    rewards = rng.normal(size=(4, 512))  # four independent objectives
    rewards[0] *= 1000.0  # the widest spread, e.g. colourfulness next to 0-1 scores
    static = make_balancer("static", 4).step(rewards, groups)[2]["sign_agreement"]
    dsan = make_balancer("dsan", 4).step(rewards, groups)[2]["sign_agreement"]
    assert static[0] > 0.99  # the widest reward alone sets the sign
    assert np.all(np.abs(static[1:] - 0.5) < 0.1)  # the others are a coin flip
    # every objective counts: P(sign of a sum of 4 iid normals = sign of one) = 2/3
    assert np.all(np.abs(dsan - 2 / 3) < 0.07)


def test_the_share_does_not_depend_on_the_advantages_scale():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(4), 6)
    rewards = rng.normal(size=(2, 24))
    adv = rng.normal(size=24)
    stats = group_stats(rewards, groups)
    np.testing.assert_array_equal(
        sign_agreement(adv, rewards, stats), sign_agreement(3.0 * adv, rewards, stats)
    )
    flipped = sign_agreement(-adv, rewards, stats)
    np.testing.assert_allclose(flipped, 1.0 - sign_agreement(adv, rewards, stats))
