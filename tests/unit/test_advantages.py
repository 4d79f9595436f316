"""Static baseline, DSAN stages 1 and 2, NaN handling and variance hijacking."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.core.advantages import (
    AdaptiveScale,
    plain_group_zscores,
    standardize_and_clip,
    static_advantages,
)
from trainer.core.balance import make_balancer
from trainer.core.groups import group_stats


def _batch(rng, k=4, groups=6, n=8, scales=(1.0, 0.01, 10.0, 0.1)):
    r = rng.normal(size=(k, groups * n)) * np.asarray(scales[:k])[:, None]
    r += rng.normal(size=(k, groups))[:, np.repeat(np.arange(groups), n)]  # group offsets
    return r, np.repeat(np.arange(groups), n)


def test_static_matches_flow_grpo_formula():
    rng = np.random.default_rng(0)
    r, g = _batch(rng)
    w = np.array([0.4, 0.3, 0.2, 0.1])
    adv, raw = static_advantages(r, group_stats(r, g), w, clip=5.0)
    total = w @ r
    group_mean = np.array([total[g == i].mean() for i in g])
    want = (total - group_mean) / (total.std() + 1e-4)
    np.testing.assert_allclose(raw, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(adv, np.clip(want, -5, 5))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    obj=st.integers(0, 3),
    log_a=st.floats(-3, 3),
    b=st.floats(-100, 100),
)
def test_stage1_is_invariant_to_affine_change_of_one_objective(seed, obj, log_a, b):
    rng = np.random.default_rng(seed)
    scale1 = AdaptiveScale(4, kappa=4.0, eps=1e-6, scale_decay=0.9)
    scale2 = AdaptiveScale(4, kappa=4.0, eps=1e-6, scale_decay=0.9)
    for _ in range(4):
        r, g = _batch(rng)
        r2 = r.copy()
        r2[obj] = 10**log_a * r2[obj] + b
        a1, _ = scale1(r, group_stats(r, g))
        a2, _ = scale2(r2, group_stats(r2, g))
        np.testing.assert_allclose(a2, a1, rtol=1e-7, atol=1e-8)
    z1 = plain_group_zscores(r, group_stats(r, g))
    z2 = plain_group_zscores(r2, group_stats(r2, g))
    np.testing.assert_allclose(z2, z1, rtol=1e-7, atol=1e-8)


def test_shrinkage_makes_a_low_spread_group_small():
    scale = AdaptiveScale(1, kappa=4.0, eps=1e-6, scale_decay=0.9)
    g = np.repeat(np.arange(4), 8)
    rng = np.random.default_rng(3)
    r = rng.normal(size=(1, 32))
    r[0, :8] = 0.5 + 1e-4 * rng.normal(size=8)  # group 0: spread 1e-4 of the usual
    ahat, _ = scale(r, group_stats(r, g))
    assert np.abs(ahat[0, :8]).max() < 0.01
    assert np.abs(ahat[0, 8:]).max() > 0.5
    z = plain_group_zscores(r, group_stats(r, g))
    assert np.abs(z[0, :8]).max() > 0.9  # no shrinkage: noise amplified to +-1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), weights=st.lists(st.floats(0.0, 10.0), min_size=4, max_size=4))
def test_stage2_has_zero_mean_and_unit_std_whatever_the_weights(seed, weights):
    w = np.asarray(weights)
    w = w / w.sum() if w.sum() > 0 else np.full(4, 0.25)  # balancers normalize their weights
    rng = np.random.default_rng(seed)
    r, g = _batch(rng)
    r[1] = 0.9 * r[0] + 0.1 * r[1]  # strongly correlated objectives
    ahat, _ = AdaptiveScale(4, kappa=4.0, eps=1e-6, scale_decay=0.9)(r, group_stats(r, g))
    _, standardized = standardize_and_clip(w @ ahat, clip=5.0)
    assert abs(standardized.mean()) < 1e-9
    assert standardized.std() == pytest.approx(1.0, abs=1e-6)


def test_variance_hijacking_static_follows_the_high_spread_objective_dsan_does_not():
    rng = np.random.default_rng(0)
    groups, n = 32, 16
    g = np.repeat(np.arange(groups), n)
    agree_static, agree_dsan = [], []
    static, dsan = make_balancer("static", 4), make_balancer("dsan", 4)
    for _ in range(5):
        ocr = (rng.random(groups * n) < 0.5).astype(float)  # near-binary, spread 0.5
        low = 0.2 + 0.01 * rng.normal(size=(3, groups * n))  # PickScore/26-like spread
        r = np.vstack([ocr, low])
        ocr_centered = ocr - np.array([ocr[g == i].mean() for i in g])
        moving = ocr_centered != 0
        a_static, _, _ = static.step(r, g)
        a_dsan, _, _ = dsan.step(r, g)
        agree_static.append(np.mean(np.sign(a_static[moving]) == np.sign(ocr_centered[moving])))
        agree_dsan.append(np.mean(np.sign(a_dsan[moving]) == np.sign(ocr_centered[moving])))
    assert np.mean(agree_static) > 0.97
    assert np.mean(agree_dsan) < 0.85


def test_unscorable_reward_is_left_out_of_its_group_and_gives_no_contribution():
    rng = np.random.default_rng(1)
    r, g = _batch(rng, k=2, groups=3, n=6, scales=(1.0, 1.0))
    r_nan = r.copy()
    r_nan[0, 2] = np.nan
    stats = group_stats(r_nan, g)
    keep = (g == 0) & (np.arange(g.size) != 2)
    assert stats.count[0, 0] == 5
    assert stats.mean[0, 0] == pytest.approx(r[0, keep].mean())
    assert stats.std[0, 0] == pytest.approx(r[0, keep].std())
    ahat, _ = AdaptiveScale(2, kappa=4.0, eps=1e-6, scale_decay=0.9)(r_nan, stats)
    assert ahat[0, 2] == 0.0 and np.isfinite(ahat).all()
    z = plain_group_zscores(r_nan, stats)
    assert z[0, 2] == 0.0
    adv, raw = static_advantages(r_nan, stats, np.array([0.5, 0.5]))
    centered1 = r[1, 2] - r[1, g == 0].mean()
    total = 0.5 * np.where(np.isnan(r_nan), stats.mean[:, stats.index], r_nan).sum(axis=0)
    assert raw[2] == pytest.approx(0.5 * centered1 / (total.std() + 1e-4))
