"""Numerical faults through the balancer and the coordinator: NaN/inf rewards, a group where
every sample scores the same, a group with one scorable sample, an objective missing for a
whole step. Each keeps the advantages and the policy update finite and is counted exactly,
per step and cumulatively, in the balancer's info, the checkpointed state and the train
records of ``metrics.jsonl``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.coordinator.actor import Coordinator
from trainer.coordinator.metrics import PER_OBJECTIVE
from trainer.coordinator.run_log import METRICS_FILE, RunLog
from trainer.coordinator.state import CoordinatorState
from trainer.core.balance import BALANCER_NAMES, make_balancer
from trainer.core.faults import CUMULATIVE_KEYS, STEP_KEYS, FaultTotals
from trainer.core.losses import flow_grpo_loss

OBJECTIVES = ["pickscore", "ocr", "aesthetic"]
GROUPS = np.repeat(np.arange(4), 4)  # 4 groups of 4 samples


def _rewards(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, 16)) * np.array([[0.01], [0.5], [1.0]])


def _no_faults() -> dict[str, list[int]]:
    return {key: [0, 0, 0] for key in STEP_KEYS}


def _nan_and_inf(r):
    r[0, [1, 6]] = np.nan
    r[2, 9] = np.inf
    r[2, 13] = -np.inf
    return {"unscorable_count": [2, 0, 0], "nonfinite_count": [0, 0, 2]}


def _all_equal_group(r):
    r[1, 4:8] = 0.3  # group 1 of objective 1: every sample scores the same
    return {"zero_variance_group_count": [0, 1, 0]}


def _one_scorable_sample(r):
    r[2, 0:3] = np.nan  # group 0 of objective 2 keeps only sample 3
    return {"unscorable_count": [0, 0, 3], "single_sample_group_count": [0, 0, 1]}


def _objective_missing(r):
    r[0] = np.nan
    return {"unscorable_count": [16, 0, 0], "objective_missing": [1, 0, 0]}


def _everything_at_once(r):
    r[0] = np.nan
    r[1, 0:4] = -2.0
    r[1, 8:11] = np.inf
    r[2, 12:16] = np.nan
    return {
        "unscorable_count": [16, 0, 4],
        "nonfinite_count": [0, 3, 0],
        "objective_missing": [1, 0, 0],
        "zero_variance_group_count": [0, 1, 0],
        "single_sample_group_count": [0, 1, 0],
    }


CASES = {
    "nan_and_inf": _nan_and_inf,
    "all_equal_group": _all_equal_group,
    "one_scorable_sample": _one_scorable_sample,
    "objective_missing": _objective_missing,
    "everything_at_once": _everything_at_once,
}


def _faulty_batch(case: str, seed: int = 0) -> tuple[np.ndarray, dict[str, list[int]]]:
    r = _rewards(seed)
    expected = {**_no_faults(), **CASES[case](r)}
    return r, expected


def _assert_update_is_finite(advantages: np.ndarray) -> None:
    """The Flow-GRPO loss and its gradient on these advantages are finite."""
    torch.manual_seed(0)
    log_prob = torch.randn(advantages.size, requires_grad=True, dtype=torch.float64)
    old = log_prob.detach() + 0.01 * torch.randn(advantages.size, dtype=torch.float64)
    adv = torch.as_tensor(advantages)
    out = flow_grpo_loss(log_prob, old, adv, clip_range=0.2)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(log_prob.grad).all()


@pytest.mark.parametrize("name", BALANCER_NAMES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_fault_keeps_the_step_finite_and_is_counted_exactly(name, case):
    bal = make_balancer(name, 3, warmup_steps=1)
    bal.step(_rewards(100), GROUPS)  # a clean first step: scales and warm-up are set
    r, expected = _faulty_batch(case)
    adv, weights, info = bal.step(r, GROUPS)
    assert np.isfinite(adv).all() and np.isfinite(weights).all()
    assert weights.sum() == pytest.approx(1.0)
    _assert_update_is_finite(adv)
    for key, want in expected.items():
        assert info[key].tolist() == want, key
    unscored = (~np.isfinite(r)).sum(axis=1)
    assert info["scored_count"].tolist() == (16 - unscored).tolist()
    # the clean first step added nothing, so the totals are this step's counts
    for key in STEP_KEYS:
        assert info[key.removesuffix("_count") + "_cumulative"].tolist() == expected[key], key


def test_a_group_scoring_all_the_same_gives_its_samples_no_advantage_from_that_objective():
    bal = make_balancer("dsan", 3, weights=[0.0, 1.0, 0.0])  # only objective 1 counts
    bal.step(_rewards(100), GROUPS)
    r, _ = _faulty_batch("all_equal_group")
    adv, _, _ = bal.step(r, GROUPS)
    # stage 2 subtracts the batch mean: the flat group's samples all sit at that level
    assert np.ptp(adv[4:8]) < 1e-9 * np.ptp(adv)


def test_totals_add_up_over_steps_and_survive_a_state_round_trip():
    bal = make_balancer("apex", 3, warmup_steps=2)
    want = {key: np.zeros(3, dtype=int) for key in STEP_KEYS}
    for step, case in enumerate(["objective_missing", "nan_and_inf", "objective_missing"]):
        r, expected = _faulty_batch(case, seed=step)
        _, _, info = bal.step(r, GROUPS)
        for key in STEP_KEYS:
            want[key] += expected[key]
    assert info["objective_missing_cumulative"].tolist() == [2, 0, 0]
    for key in STEP_KEYS:
        assert info[key.removesuffix("_count") + "_cumulative"].tolist() == want[key].tolist()

    state = json.loads(json.dumps(bal.state_dict(), allow_nan=False))
    restored = make_balancer("apex", 3, warmup_steps=2)
    restored.load_state_dict(state)
    r, _ = _faulty_batch("objective_missing", seed=9)
    _, _, a = bal.step(r, GROUPS)
    _, _, b = restored.step(r, GROUPS)
    for key in CUMULATIVE_KEYS:
        assert a[key].tolist() == b[key].tolist(), key
    assert b["objective_missing_cumulative"].tolist() == [3, 0, 0]


def test_a_state_from_before_the_totals_loads_with_zero_totals():
    bal = make_balancer("apex", 3)
    rewards, _ = _faulty_batch("objective_missing")
    bal.step(rewards, GROUPS)
    state = bal.state_dict()
    del state["faults"]
    restored = make_balancer("apex", 3)
    restored.load_state_dict(state)
    assert all(v.tolist() == [0, 0, 0] for v in restored.faults.totals.values())
    with pytest.raises(ValueError, match="have 2 entries, not 3"):
        FaultTotals(3).load_state_dict({"unscorable_cumulative": [0, 0]})


def test_the_coordinator_splits_finite_advantages_over_workers_and_counts_the_global_batch():
    state = CoordinatorState(balancer="apex", objectives=OBJECTIVES, num_workers=2)
    r, expected = _faulty_batch("everything_at_once")
    assert state.submit(0, 0, r[:, :8], GROUPS[:8]) is None
    result = state.submit(0, 1, r[:, 8:], GROUPS[8:])
    for rank in (0, 1):
        assert np.isfinite(result.advantages[rank]).all()
    for key, want in expected.items():
        assert result.info[key].tolist() == want, key
    assert state.fault_totals()["nonfinite_cumulative"].tolist() == [0, 3, 0]


def test_the_counts_reach_the_train_record_and_every_one_has_a_gauge(tmp_path):
    import asyncio

    coord = Coordinator(
        balancer="apex",
        objectives=OBJECTIVES,
        num_workers=1,
        run_dir=str(tmp_path),
        balancer_options={"warmup_steps": 1},
    )
    log = RunLog(objectives=OBJECTIVES, run_dir=str(tmp_path), export_metrics=False)

    async def steps():
        for step, case in enumerate(["nan_and_inf", "objective_missing"]):
            r, _ = _faulty_batch(case, seed=step)
            reply = await coord.exchange(step, 0, r, GROUPS)  # NaN and +-inf cross as they are
            log.record(step, "train", {**reply["info"], "loss": 0.1})  # as rank 0 does

    asyncio.run(steps())
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1]
    last = records[-1]
    assert last["unscorable_count"] == [16, 0, 0] and last["objective_missing"] == [1, 0, 0]
    assert last["unscorable_cumulative"] == [18, 0, 0]
    assert last["nonfinite_cumulative"] == [0, 0, 2]
    assert last["objective_missing_cumulative"] == [1, 0, 0]
    assert all(np.isfinite(v) for v in (last["advantage_mean"], last["advantage_std"]))
    assert set(STEP_KEYS) | set(CUMULATIVE_KEYS) | {"scored_count"} <= set(PER_OBJECTIVE)


def test_restoring_a_checkpoint_rewinds_the_totals_and_returns_the_restore_record(tmp_path):
    import asyncio

    coord = Coordinator(
        balancer="dsan",
        objectives=OBJECTIVES,
        num_workers=1,
        run_dir=str(tmp_path),
    )

    async def step(t, case):
        r, _ = _faulty_batch(case, seed=t)
        return await coord.exchange(t, 0, r, GROUPS)  # NaN crosses as NaN

    asyncio.run(step(0, "objective_missing"))
    checkpoint = coord.state_dict()  # taken after step 0, as the trainer's would be
    first = asyncio.run(step(1, "objective_missing"))
    asyncio.run(step(2, "objective_missing"))
    assert coord.state.fault_totals()["objective_missing_cumulative"].tolist() == [3, 0, 0]

    restored = coord.load_state_dict(checkpoint)
    assert restored["step"] == 1 and restored["previous_step"] == 3
    assert restored["recomputed_steps"] == [1, 2]
    assert restored["objective_missing_cumulative"].tolist() == [1, 0, 0]  # for the gauges
    assert coord.state.fault_totals()["objective_missing_cumulative"].tolist() == [1, 0, 0]
    again = asyncio.run(step(1, "objective_missing"))  # the redone step, counted once
    np.testing.assert_array_equal(again["advantages"], first["advantages"])
    np.testing.assert_array_equal(again["weights"], first["weights"])
    assert coord.state.fault_totals()["objective_missing_cumulative"].tolist() == [2, 0, 0]
