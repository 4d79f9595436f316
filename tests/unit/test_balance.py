"""make_balancer: invariances, weights, state round trip, NaN safety, P3 terms, errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.core.balance import BALANCER_NAMES, make_balancer

UNIT_FREE = [name for name in BALANCER_NAMES if name != "static"]


def _stream(seed, steps, k=4, groups=6, n=8):
    """A drifting multi-objective reward stream with per-objective units and spreads."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), n)
    scales = np.array([0.5, 0.01, 2.0, 0.1, 1.0, 3.0])[:k]
    for t in range(steps):
        common = rng.normal(size=groups * n)
        r = rng.normal(size=(k, groups * n)) * scales[:, None]
        r[1] -= 0.7 * scales[1] * common  # objective 1 conflicts with objective 0
        r[0] += 0.7 * scales[0] * common
        r += 0.05 * t * scales[:, None] * np.arange(1, k + 1)[:, None] / k  # uneven progress
        yield r, g


@pytest.mark.parametrize("name", UNIT_FREE)
@pytest.mark.parametrize("a,b", [(1e-3, 5.0), (1e3, -2.0), (7.0, 0.0)])
def test_advantages_and_weights_are_unit_free(name, a, b):
    ref = make_balancer(name, 4, warmup_steps=3)
    scaled = make_balancer(name, 4, warmup_steps=3)
    for r, g in _stream(seed=2, steps=15):
        r2 = r.copy()
        r2[2] = a * r2[2] + b
        adv1, w1, _ = ref.step(r, g)
        adv2, w2, _ = scaled.step(r2, g)
        np.testing.assert_allclose(adv2, adv1, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w2, w1, rtol=1e-6, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), obj=st.integers(0, 3), log_a=st.floats(-3, 3))
def test_apex_is_unit_free_for_any_objective_and_scale(seed, obj, log_a):
    ref, scaled = make_balancer("apex", 4, warmup_steps=2), make_balancer("apex", 4, warmup_steps=2)
    for r, g in _stream(seed=seed, steps=8):
        r2 = r.copy()
        r2[obj] = 10**log_a * r2[obj] - 3.0
        adv1, w1, _ = ref.step(r, g)
        adv2, w2, _ = scaled.step(r2, g)
        np.testing.assert_allclose(adv2, adv1, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w2, w1, rtol=1e-6, atol=1e-9)


def test_static_is_not_unit_free():
    ref, scaled = make_balancer("static", 4), make_balancer("static", 4)
    r, g = next(_stream(seed=0, steps=1))
    r2 = r.copy()
    r2[2] *= 1000
    assert not np.allclose(ref.step(r, g)[0], scaled.step(r2, g)[0])


@pytest.mark.parametrize("name", ["apex", "dwa", "apex-no-need", "apex-no-conflict"])
def test_weights_sum_to_one_respect_the_floor_and_warm_up_returns_base_weights(name):
    base = [0.4, 0.3, 0.2, 0.1]
    bal = make_balancer(name, 4, weights=base, warmup_steps=4, floor=0.05, eta=0.5)
    moved = False
    for t, (r, g) in enumerate(_stream(seed=1, steps=30)):
        _, w, info = bal.step(r, g)
        assert w.sum() == pytest.approx(1.0)
        if t < 4:
            np.testing.assert_allclose(w, base, rtol=1e-12)
            assert info["warming_up"]
        else:
            assert np.all(w >= 0.05 - 1e-12)
            moved |= not np.allclose(w, base, atol=1e-3)
    assert moved, "adaptive weights never left the base weights"


def test_fixed_weight_balancers_use_normalized_base_weights():
    for name in ("static", "stage1", "dsan"):
        bal = make_balancer(name, 3, weights=[2.0, 1.0, 1.0])
        for r, g in _stream(seed=0, steps=3, k=3):
            _, w, _ = bal.step(r, g)
            np.testing.assert_array_equal(w, [0.5, 0.25, 0.25])


@pytest.mark.parametrize("name", BALANCER_NAMES)
def test_state_dict_round_trip_continues_bit_identically(name):
    stream = list(_stream(seed=4, steps=14))
    original = make_balancer(name, 4, warmup_steps=3)
    for r, g in stream[:7]:
        original.step(r, g)
    state = json.loads(json.dumps(original.state_dict(), allow_nan=False))
    restored = make_balancer(name, 4, warmup_steps=3)
    restored.load_state_dict(state)
    for r, g in stream[7:]:
        a1, w1, i1 = original.step(r, g)
        a2, w2, i2 = restored.step(r, g)
        assert np.array_equal(a1, a2) and np.array_equal(w1, w2)
        assert i1["step"] == i2["step"]


def test_load_state_dict_rejects_another_balancer():
    state = make_balancer("apex", 4).state_dict()
    with pytest.raises(ValueError, match="state is for balancer 'apex'"):
        make_balancer("dsan", 4).load_state_dict(state)
    with pytest.raises(ValueError, match="4 objectives"):
        make_balancer("apex", 3).load_state_dict(state)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    name=st.sampled_from(BALANCER_NAMES),
    nan_rate=st.sampled_from([0.0, 0.2, 0.6, 0.95, 1.0]),
    group_size=st.sampled_from([1, 2, 5]),
)
def test_nan_and_inf_rewards_never_produce_nan_advantages(seed, name, nan_rate, group_size):
    rng = np.random.default_rng(seed)
    bal = make_balancer(name, 3, warmup_steps=2)
    for _ in range(5):
        b = 4 * group_size
        r = rng.normal(size=(3, b))
        r[rng.random((3, b)) < nan_rate] = np.nan
        r[0, rng.random(b) < 0.1] = np.inf
        if rng.random() < 0.3:
            r[1] = np.nan  # an objective missing for the whole step
        if rng.random() < 0.3:
            r[2] = 0.7  # every sample scores the same
        adv, w, info = bal.step(r, np.repeat(np.arange(4), group_size))
        assert np.isfinite(adv).all() and np.isfinite(w).all()
        assert w.sum() == pytest.approx(1.0)
        assert info["nonfinite_count"][0] == np.isinf(r[0]).sum()


def test_p3_terms_stay_in_unit_interval():
    bal = make_balancer("apex", 4, warmup_steps=2)
    for r, g in _stream(seed=5, steps=20):
        _, _, info = bal.step(r, g)
        for term in ("learning_potential", "progress_need", "conflict_penalty"):
            assert np.all((info[term] >= 0) & (info[term] <= 1)), term


def _two_objective_run(name, make_rewards, steps=40, **options):
    bal = make_balancer(name, len(make_rewards(np.random.default_rng(0), 0)), **options)
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(8), 8)
    for t in range(steps):
        _, w, info = bal.step(make_rewards(rng, t), g)
    return w, info


def test_learning_potential_lowers_a_saturated_objective():
    def rewards(rng, t):
        spread0 = 1.0 if t < 3 else 1e-3  # objective 0 saturates after warm-up
        return np.vstack([spread0 * rng.normal(size=64), rng.normal(size=64)])

    w_apex, info = _two_objective_run("apex", rewards, warmup_steps=3)
    w_ablate, _ = _two_objective_run("apex-no-potential", rewards, warmup_steps=3)
    assert info["learning_potential"][0] < 0.1
    assert w_apex[0] < 0.2
    assert abs(w_ablate[0] - 0.5) < 0.05


def test_progress_need_raises_the_lagging_objective():
    def rewards(rng, t):
        return np.vstack([rng.normal(size=64) + 0.3 * t, rng.normal(size=64)])

    w_apex, info = _two_objective_run("apex", rewards, warmup_steps=3)
    w_ablate, _ = _two_objective_run("apex-no-need", rewards, warmup_steps=3)
    assert info["progress_need"][1] == 1.0 and info["progress_need"][0] < 0.2
    assert w_apex[1] > 0.75
    assert abs(w_ablate[1] - 0.5) < 0.05


def test_conflict_penalty_lowers_objectives_that_fight():
    def rewards(rng, t):
        x, y = rng.normal(size=64), rng.normal(size=64)
        return np.vstack([x, -x + 0.1 * y, y])  # 0 and 1 conflict; 2 is independent

    w_apex, info = _two_objective_run("apex", rewards, warmup_steps=3)
    w_ablate, _ = _two_objective_run("apex-no-conflict", rewards, warmup_steps=3)
    assert info["conflict_penalty"][0] > 0.3 and info["conflict_penalty"][2] < 0.1
    assert w_apex[2] > w_apex[0] + 0.1
    assert (w_apex[2] - w_apex[0]) - (w_ablate[2] - w_ablate[0]) > 0.1


def test_target_mode_need_follows_the_remaining_gap():
    def rewards(rng, t):
        return np.vstack([rng.normal(size=64) + (0.0 if t < 3 else 1.0), rng.normal(size=64)])

    _, info = _two_objective_run("apex", rewards, warmup_steps=3, targets=[2.0, None])
    # baseline ~0, current ~1, target 2: half of the gap remains
    assert info["progress_need"][0] == pytest.approx(0.5, abs=0.1)


def test_target_mode_need_is_minimal_when_the_baseline_already_meets_the_target():
    def rewards(rng, t):
        return np.vstack([rng.normal(size=64) + 1.0 + 0.05 * t, rng.normal(size=64)])

    _, info = _two_objective_run("apex", rewards, warmup_steps=3, targets=[0.5, None], n_min=0.05)
    assert info["progress_need"][0] == pytest.approx(0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "nope", "num_objectives": 2}, "unknown balancer 'nope'; expected one of"),
        ({"name": "apex", "num_objectives": 0}, "num_objectives must be >= 1"),
        ({"name": "apex", "num_objectives": 2, "weights": [1.0]}, "weights has 1 entries"),
        ({"name": "apex", "num_objectives": 2, "bogus": 1}, "bogus"),
        ({"name": "apex", "num_objectives": 2, "eta": 0}, "eta"),
        ({"name": "apex", "num_objectives": 30}, "floor=0.05 x 30 objectives exceeds 1"),
        ({"name": "apex", "num_objectives": 2, "weights": [-1.0, 1.0]}, "weights must be"),
    ],
)
def test_bad_construction_raises_value_error(kwargs, match):
    name, k = kwargs.pop("name"), kwargs.pop("num_objectives")
    with pytest.raises(ValueError, match=match):
        make_balancer(name, k, **kwargs)


@pytest.mark.parametrize(
    "rewards, groups, match",
    [
        (np.zeros((3, 4)), np.zeros(4, int), "shape \\[num_objectives=2, batch\\]"),
        (np.zeros(4), np.zeros(4, int), "shape \\[num_objectives=2, batch\\]"),
        (np.zeros((2, 4)), np.zeros(5, int), "group_ids must have shape \\[batch=4\\]"),
        (np.zeros((2, 2)), np.array([0.0, np.nan]), "finite integers"),
        (np.zeros((2, 2)), np.array([0.0, np.inf]), "finite integers"),
        (np.zeros((2, 2)), np.array([0.5, 1.0]), "fractional"),
        (np.zeros((2, 2)), np.array(["a", "b"]), "must be integers"),
        (np.zeros((2, 0)), np.zeros(0, int), "at least one sample"),
    ],
)
def test_bad_step_inputs_raise_value_error(rewards, groups, match):
    with pytest.raises(ValueError, match=match):
        make_balancer("apex", 2).step(rewards, groups)


def test_info_holds_every_term_per_objective():
    bal = make_balancer("apex", 3, warmup_steps=1)
    for r, g in _stream(seed=0, steps=3, k=3):
        _, _, info = bal.step(r, g)
    for key in (
        "reward_mean",
        "reward_std",
        "group_std_mean",
        "group_scale",
        "scale_ema",
        "weights",
        "learning_potential",
        "progress_need",
        "conflict_penalty",
        "progress",
        "lambda_target",
    ):
        assert np.shape(info[key]) == (3,), key
    assert np.shape(info["conflict_matrix"]) == (3, 3)
    assert {"advantage_mean", "advantage_std", "advantage_clip_fraction"} <= set(info)


def test_advantage_correlation_shows_variance_hijacking_under_static_only():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(64), 8)
    rewards = rng.normal(size=(3, 512))  # independent objectives: |corr| ~ 0.04 by chance
    rewards[0] *= 1000.0  # the widest spread, e.g. JPEG size in bytes next to 0-1 scores
    static = make_balancer("static", 3).step(rewards, groups)[2]["advantage_correlation"]
    dsan = make_balancer("dsan", 3).step(rewards, groups)[2]["advantage_correlation"]
    assert static[0] > 0.99 and np.all(np.abs(static[1:]) < 0.15)
    assert np.all(dsan > 0.3)  # each objective steers the normalized sum
    flat = rewards.copy()
    flat[2] = 1.0  # no spread at all: no correlation to report
    assert np.isnan(make_balancer("dsan", 3).step(flat, groups)[2]["advantage_correlation"][2])
