"""Coordinator state and the plain Coordinator class (no Ray): lock step, splits, restarts."""

import asyncio
import json

import numpy as np
import pytest

from trainer.coordinator.actor import STATE_FILE, Coordinator
from trainer.coordinator.run_log import METRICS_FILE, RunLog
from trainer.coordinator.state import CoordinatorState
from trainer.core.balance import make_balancer

OBJECTIVES = ["pickscore", "ocr", "aesthetic"]


def _batch(step, n=16, groups=4):
    rng = np.random.default_rng(step)
    rewards = rng.normal(size=(3, n)) * np.array([[0.01], [0.5], [1.0]])
    return rewards, np.repeat(np.arange(groups), n // groups)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_global_batch_equals_one_balancer_over_the_concatenation(workers):
    """Groups may span workers: the split result is the single-process result, sliced."""
    state = CoordinatorState(
        balancer="apex",
        objectives=OBJECTIVES,
        num_workers=workers,
        balancer_options={"warmup_steps": 2},
    )
    reference = make_balancer("apex", 3, warmup_steps=2)
    for step in range(6):
        rewards, groups = _batch(step)
        ref_adv, ref_w, _ = reference.step(rewards, groups)
        shares = np.array_split(np.arange(rewards.shape[1]), workers)  # splits cut groups
        result = None
        for rank in reversed(range(workers)):  # arrival order does not matter
            idx = shares[rank]
            result = state.submit(step, rank, rewards[:, idx], groups[idx])
            if rank:
                assert result is None
        assert result is not None and result.step == step
        got = np.concatenate([result.advantages[r] for r in range(workers)])
        np.testing.assert_allclose(got, ref_adv, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(result.weights, ref_w, rtol=1e-12)


def test_resend_of_a_computed_step_returns_the_same_result_and_skips_nothing():
    state = CoordinatorState(balancer="dsan", objectives=OBJECTIVES, num_workers=1)
    rewards, groups = _batch(0)
    first = state.submit(0, 0, rewards, groups)
    again = state.submit(0, 0, rewards * 100, groups)  # a resend after a restart
    assert again is first and state.step == 1
    with pytest.raises(ValueError, match="collecting step 1"):
        state.submit(3, 0, rewards, groups)


def test_bad_submissions_name_the_problem():
    state = CoordinatorState(balancer="apex", objectives=OBJECTIVES, num_workers=2)
    rewards, groups = _batch(0)
    with pytest.raises(ValueError, match="rank 2 outside 0..1"):
        state.submit(0, 2, rewards, groups)
    with pytest.raises(ValueError, match=r"must be \[3, batch\]"):
        state.submit(0, 0, rewards[:2], groups)
    with pytest.raises(ValueError, match="one group id per sample"):
        state.submit(0, 0, rewards, groups[:3])
    with pytest.raises(ValueError, match="unique"):
        CoordinatorState(balancer="apex", objectives=["a", "a"], num_workers=1)


def test_state_round_trip_continues_bit_identically():
    a = CoordinatorState(
        balancer="apex", objectives=OBJECTIVES, num_workers=1, balancer_options={"warmup_steps": 2}
    )
    for step in range(4):
        a.submit(step, 0, *_batch(step))
    b = CoordinatorState(
        balancer="apex", objectives=OBJECTIVES, num_workers=1, balancer_options={"warmup_steps": 2}
    )
    b.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    assert b.step == 4 and b.result(3) is not None
    for step in range(4, 8):
        ra, rb = a.submit(step, 0, *_batch(step)), b.submit(step, 0, *_batch(step))
        np.testing.assert_array_equal(ra.advantages[0], rb.advantages[0])
        np.testing.assert_array_equal(ra.weights, rb.weights)


def _coordinator(tmp_path, workers=2):
    return Coordinator(
        balancer="apex",
        objectives=OBJECTIVES,
        num_workers=workers,
        run_dir=str(tmp_path),
        balancer_options={"warmup_steps": 1},
        exchange_timeout_s=5,
    )


def _run_log(tmp_path):
    return RunLog(objectives=OBJECTIVES, run_dir=str(tmp_path), export_metrics=False)


def test_exchange_waits_for_every_worker_and_records_metrics(tmp_path):
    async def run():
        coord = _coordinator(tmp_path)
        rewards, groups = _batch(0)
        halves = [slice(0, 8), slice(8, 16)]
        replies = await asyncio.gather(
            *(
                coord.exchange(0, rank, rewards[:, part], groups[part])
                for rank, part in enumerate(halves)
            )
        )
        # rank 0 logs the step with the balancer's terms its reply carried, as the worker does
        _run_log(tmp_path).record(0, "train", {**replies[0]["info"], "loss": 0.5, "kl": np.nan})
        return coord, replies

    coord, replies = asyncio.run(run())
    assert [len(r["advantages"]) for r in replies] == [8, 8]
    assert all(isinstance(r["advantages"], np.ndarray) for r in replies)  # arrays, no lists
    assert "weights" in replies[0]["info"] and replies[1]["info"] == {}  # terms for rank 0
    np.testing.assert_array_equal(replies[0]["weights"], replies[1]["weights"])
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    record = json.loads(lines[0])
    assert record["kind"] == "train" and record["step"] == 0 and record["loss"] == 0.5
    assert record["kl"] is None and len(record["weights"]) == 3
    assert record["objectives"] == OBJECTIVES
    assert json.loads((tmp_path / STATE_FILE).read_text())["step"] == 1


def test_a_restarted_coordinator_continues_from_its_persisted_state(tmp_path):
    async def steps(coord, start, stop):
        out = []
        for step in range(start, stop):
            rewards, groups = _batch(step)
            out.append(await coord.exchange(step, 0, rewards, groups))
        return out

    uninterrupted = asyncio.run(steps(_coordinator(tmp_path / "a", 1), 0, 6))
    first = _coordinator(tmp_path / "b", 1)
    asyncio.run(steps(first, 0, 3))
    restarted = _coordinator(tmp_path / "b", 1)  # a new process reads the state file
    assert restarted.ping() == 3
    resumed = asyncio.run(steps(restarted, 3, 6))
    for want, got in zip(uninterrupted[3:], resumed, strict=True):
        _assert_same_reply(want, got)


def test_a_run_restarted_before_its_first_checkpoint_starts_over(tmp_path):
    """``load_state_dict(None)``: the initial state, as if no step had been balanced."""

    async def steps(coord, stop):
        return [await coord.exchange(t, 0, *_batch(t)) for t in range(stop)]

    coord = _coordinator(tmp_path, 1)
    first = asyncio.run(steps(coord, 2))
    restored = coord.load_state_dict(None)
    assert restored["step"] == 0 and restored["previous_step"] == 2
    assert restored["recomputed_steps"] == [0, 1]
    for want, got in zip(first, asyncio.run(steps(coord, 2)), strict=True):
        _assert_same_reply(want, got)


def test_the_run_log_remembers_the_newest_checkpoint_and_keeps_record_kinds_apart(tmp_path):
    log = _run_log(tmp_path)
    assert log.last_checkpoint() is None
    log.checkpoint_written("/runs/x/checkpoints/epoch_000001")
    assert log.last_checkpoint() == "/runs/x/checkpoints/epoch_000001"
    log.record(3, "train", {"loss": np.float32(0.5), "counts": np.array([1, 2])})
    log.record(4, "eval", {"reward_mean": np.array([0.1, np.nan, 0.3])})
    latest = log.latest_records()
    assert latest["train"]["step"] == 3 and latest["train"]["counts"] == [1, 2]
    assert latest["eval"]["reward_mean"] == [0.1, None, 0.3]  # strict JSON: NaN as null
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in lines] == [("train", 3), ("eval", 4)]


def test_nan_crosses_the_exchange_as_nan_and_equals_the_none_lists_it_replaced(tmp_path):
    """The seam takes the worker's float64 matrix as it is: NaN means unscored, exactly as
    ``None`` did in the nested lists that crossed before (numpy reads ``None`` as NaN)."""
    rewards, groups = _batch(0)
    rewards[1, [0, 5, 9]] = np.nan
    as_lists = [[None if np.isnan(v) else float(v) for v in row] for row in rewards]

    async def one(tmp, r, g):
        return await _coordinator(tmp, 1).exchange(0, 0, r, g)

    from_arrays = asyncio.run(one(tmp_path / "a", rewards, groups))
    from_lists = asyncio.run(one(tmp_path / "b", as_lists, groups.tolist()))
    _assert_same_reply(from_arrays, from_lists)
    assert from_arrays["advantages"].dtype == np.float64
    assert np.all(np.isfinite(from_arrays["advantages"]))  # unscored: no contribution, no NaN


def _assert_same_reply(want, got):
    assert want["step"] == got["step"]
    np.testing.assert_array_equal(want["advantages"], got["advantages"])
    np.testing.assert_array_equal(want["weights"], got["weights"])
