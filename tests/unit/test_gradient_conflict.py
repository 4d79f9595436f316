"""The conflict term's gradient mode, pure parts: cosines, schedule, penalty, coordinator seam."""

import json

import numpy as np
import pytest

from common.config_loader import ConfigError
from trainer.config import load_config
from trainer.coordinator.state import CoordinatorState
from trainer.core.balance import make_balancer
from trainer.core.conflict import check_cosine_matrix, gradient_cosines, measures_at
from trainer.core.priorities import conflict_penalty, objective_correlations

OBJECTIVES = ["pickscore", "ocr", "aesthetic"]


def _batch(step, n=16, groups=4):
    rng = np.random.default_rng(step)
    rewards = rng.normal(size=(3, n)) * np.array([[0.01], [0.5], [1.0]])
    return rewards, np.repeat(np.arange(groups), n // groups)


# --- the cosine matrix ----------------------------------------------------------------------


def test_cosines_of_hand_made_gradients():
    e1, e2 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    grads = np.stack([e1, e2, -3 * e1, 0.5 * e1, e1 + e2 / 2])
    cos = gradient_cosines(grads)
    assert cos[0, 1] == 0.0  # orthogonal
    assert cos[0, 2] == -1.0  # opposite, whatever the scale
    assert cos[0, 3] == 1.0  # equal direction, whatever the scale
    assert cos[0, 4] == pytest.approx(1 / np.sqrt(2))
    np.testing.assert_array_equal(cos, cos.T)
    np.testing.assert_array_equal(np.diag(cos), np.ones(5))
    assert np.all(np.abs(cos) <= 1.0)


def test_a_zero_gradient_has_no_direction():
    cos = gradient_cosines(np.array([[1.0, 1.0], [0.0, 0.0], [2.0, -1.0]]))
    assert np.isnan(cos[0, 1]) and np.isnan(cos[1, 2]) and np.isnan(cos[2, 1])
    assert cos[1, 1] == 1.0 and np.isfinite(cos[0, 2])


def test_cosines_stay_in_range_for_nearly_equal_large_vectors():
    v = np.random.default_rng(0).normal(size=10_000) * 1e6
    cos = gradient_cosines(np.stack([v, v * (1 + 1e-15), -v]))
    assert cos[0, 1] <= 1.0 and cos[0, 2] >= -1.0
    check_cosine_matrix(cos, 3)


def test_gradient_cosines_rejects_a_vector():
    with pytest.raises(ValueError, match=r"\[K, P\]"):
        gradient_cosines(np.ones(4))


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (np.eye(2), r"must be \[3, 3\]"),
        (np.full((3, 3), 0.5), "1 on its diagonal"),
        (np.array([[1, 2, 0], [2, 1, 0], [0, 0, 1]]), r"\[-1, 1\]"),
        (np.array([[1, 0.5, 0], [0.2, 1, 0], [0, 0, 1]]), "symmetric"),
        (np.array([[1, np.nan, 0], [0.3, 1, 0], [0, 0, 1]]), "symmetric"),
    ],
)
def test_a_bad_cosine_matrix_is_refused(matrix, match):
    with pytest.raises(ValueError, match=match):
        check_cosine_matrix(matrix, 3)


def test_measuring_schedule():
    assert [s for s in range(10) if measures_at(s, 3)] == [0, 3, 6, 9]
    assert [s for s in range(4) if measures_at(s, 1)] == [0, 1, 2, 3]
    assert not any(measures_at(s, 0) for s in range(10))


# --- the balancer ---------------------------------------------------------------------------


def _conflicting(step):
    """Two objectives that always prefer opposite samples, a third independent one."""
    rng = np.random.default_rng(step)
    x = rng.normal(size=16)
    return np.stack([x, -x + 0.1 * rng.normal(size=16), rng.normal(size=16)]), np.repeat(
        np.arange(4), 4
    )


def test_objective_advantages_are_handed_out_on_measured_steps_only():
    bal = make_balancer("apex", 3, warmup_steps=1, conflict_gradient_every=2)
    for step in range(5):
        _, _, info = bal.step(*_batch(step))
        if step % 2:
            assert "objective_advantages" not in info
            continue
        ahat = info["objective_advantages"]
        assert ahat.shape == (3, 16)
        rewards, _ = _batch(step)
        corr = objective_correlations(ahat, ~np.isnan(rewards))
        np.testing.assert_array_equal(corr, info["conflict_matrix"])  # the proxy's own input


def test_gradient_mode_penalty_reads_the_measured_cosines_held_between_measurements():
    bal = make_balancer(
        "apex", 3, warmup_steps=1, conflict_mode="gradient", conflict_gradient_every=3
    )
    _, w0, info = bal.step(*_conflicting(0))
    # nothing measured yet: no penalty, whatever the proxy says (it shows the conflict)
    assert info["conflict_matrix"][0, 1] < -0.9
    np.testing.assert_array_equal(info["conflict_penalty"], np.zeros(3))
    assert info["conflict_gradient_step"] is None
    measured = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0], [-0.5, 0.0, 1.0]])
    bal.observe_gradient_cosines(0, measured)
    _, w1, info = bal.step(*_conflicting(1))
    first = conflict_penalty(measured, w0)  # the lambda before this step weighs the pairs
    np.testing.assert_allclose(info["conflict_penalty"], first, rtol=1e-15)
    assert first[1] == 0.0 and first[0] > 0  # pickscore/ocr's proxy conflict is ignored
    assert info["conflict_gradient_step"] == 0
    _, _, info = bal.step(*_conflicting(2))  # held, and the same EMA as the proxy's
    want = 0.9 * first + 0.1 * conflict_penalty(measured, w1)
    np.testing.assert_allclose(info["conflict_penalty"], want, rtol=1e-15)


def test_proxy_mode_measurements_change_nothing():
    """Measured cosines under ``proxy`` are for the log: priorities stay bit-identical."""
    plain = make_balancer("apex", 3, warmup_steps=1)
    measuring = make_balancer("apex", 3, warmup_steps=1, conflict_gradient_every=1)
    for step in range(6):
        a = plain.step(*_conflicting(step))
        b = measuring.step(*_conflicting(step))
        measuring.observe_gradient_cosines(step, -np.ones((3, 3)) + 2 * np.eye(3))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2]["conflict_penalty"], b[2]["conflict_penalty"])
    assert plain.state_dict() == measuring.state_dict()


def test_gradient_mode_state_round_trip_continues_bit_identically():
    opts = {"warmup_steps": 1, "conflict_mode": "gradient", "conflict_gradient_every": 2}
    a = make_balancer("apex", 3, **opts)
    cos = np.array([[1.0, -0.3, np.nan], [-0.3, 1.0, 0.2], [np.nan, 0.2, 1.0]])
    for step in range(3):
        a.step(*_conflicting(step))
        a.observe_gradient_cosines(step, cos * (step + 1) / 3 + np.eye(3) * (1 - (step + 1) / 3))
    b = make_balancer("apex", 3, **opts)
    b.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    for step in range(3, 6):
        ra, rb = a.step(*_conflicting(step)), b.step(*_conflicting(step))
        np.testing.assert_array_equal(ra[1], rb[1])
        np.testing.assert_array_equal(ra[2]["conflict_penalty"], rb[2]["conflict_penalty"])
        assert rb[2]["conflict_gradient_step"] == 2


@pytest.mark.parametrize("name", ["static", "stage1", "dsan"])
def test_fixed_weight_balancers_hand_out_their_advantages_and_ignore_cosines(name):
    bal = make_balancer(name, 3, conflict_gradient_every=1)
    _, w, info = bal.step(*_batch(0))
    assert info["objective_advantages"].shape == (3, 16)
    bal.observe_gradient_cosines(0, np.eye(3))
    assert bal.step(*_batch(1))[1].tolist() == w.tolist()


# --- config ----------------------------------------------------------------------------------


def test_defaults_are_the_proxy_without_measurement():
    opts = load_config(None).balancer.options
    assert opts.conflict_mode == "proxy" and opts.conflict_gradient_every == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["balancer.options.conflict_mode=gradient"], "conflict_gradient_every=M"),
        (["balancer.options.conflict_mode=cosine"], "conflict_mode"),
        (["balancer.options.conflict_gradient_every=-1"], "conflict_gradient_every"),
    ],
)
def test_bad_conflict_settings_name_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_gradient_mode_with_an_interval_loads():
    cfg = load_config(
        None,
        ["balancer.options.conflict_mode=gradient", "balancer.options.conflict_gradient_every=10"],
    )
    assert cfg.balancer.options.conflict_gradient_every == 10


# --- the coordinator seam --------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_each_rank_gets_its_slice_of_the_objective_advantages(workers):
    opts = {"warmup_steps": 1, "conflict_gradient_every": 2}
    state = CoordinatorState(
        balancer="apex", objectives=OBJECTIVES, num_workers=workers, balancer_options=opts
    )
    reference = make_balancer("apex", 3, **opts)
    for step in range(3):
        rewards, groups = _batch(step)
        _, _, info = reference.step(rewards, groups)
        shares = np.array_split(np.arange(16), workers)
        for rank in range(workers):
            result = state.submit(step, rank, rewards[:, shares[rank]], groups[shares[rank]])
        replies = [result.for_rank(rank) for rank in range(workers)]
        assert "objective_advantages" not in replies[0]["info"]  # not for metrics.jsonl
        if step % 2:
            assert all(r["objective_advantages"] is None for r in replies)
            with pytest.raises(ValueError, match="not a measured step"):
                state.report_gradient_cosines(step, np.eye(3))
            continue
        got = np.concatenate([r["objective_advantages"] for r in replies], axis=1)
        np.testing.assert_array_equal(got, info["objective_advantages"])
        state.report_gradient_cosines(step, np.eye(3))


def test_cosines_are_reported_for_the_last_step_only_and_survive_a_restart():
    opts = {"warmup_steps": 1, "conflict_mode": "gradient", "conflict_gradient_every": 1}
    state = CoordinatorState(
        balancer="apex", objectives=OBJECTIVES, num_workers=1, balancer_options=opts
    )
    with pytest.raises(ValueError, match="last balanced step is None"):
        state.report_gradient_cosines(0, np.eye(3))
    state.submit(0, 0, *_batch(0))
    state.submit(1, 0, *_batch(1))
    with pytest.raises(ValueError, match="last balanced step is 1"):
        state.report_gradient_cosines(0, np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        state.report_gradient_cosines(1, np.triu(np.full((3, 3), 0.5)) + 0.5 * np.eye(3))
    cos = np.array([[1.0, -0.8, 0.1], [-0.8, 1.0, np.nan], [0.1, np.nan, 1.0]])
    state.report_gradient_cosines(1, cos)
    restored = CoordinatorState(
        balancer="apex", objectives=OBJECTIVES, num_workers=1, balancer_options=opts
    )
    restored.load_state_dict(json.loads(json.dumps(state.state_dict(), allow_nan=False)))
    # a resent exchange after a restart still carries the per-objective advantages
    np.testing.assert_array_equal(
        restored.result(1).for_rank(0)["objective_advantages"],
        state.result(1).for_rank(0)["objective_advantages"],
    )
    restored.report_gradient_cosines(1, cos)  # a resend changes nothing
    a, b = state.submit(2, 0, *_batch(2)), restored.submit(2, 0, *_batch(2))
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.info["conflict_penalty"], b.info["conflict_penalty"])
    assert b.info["conflict_gradient_step"] == 1
