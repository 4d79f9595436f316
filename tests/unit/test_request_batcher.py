"""RequestBatcher (services/serving/batcher.py) and the deployment that uses it: no Ray.

A fake batch function records every call and can be held open (an ``asyncio.Event``), so
the tests control exactly when a "model call" is in flight and what arrives meanwhile.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.rewards.base import ModelInfo, RewardConfig, RewardModel
from services.serving.batcher import BatcherStopped, BatchSizeMismatch, RequestBatcher
from services.serving.deployment import RewardDeployment


class FakeModel:
    """Doubles every item; records each batch; can hold a call open or fail a chosen call."""

    def __init__(self):
        self.calls: list[list[int]] = []
        self.call_times: list[float] = []  # loop time at which each call started
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail_on: dict[int, Exception] = {}  # call index -> exception to raise
        self.short_on: set[int] = set()  # call indices that return one result too few

    async def __call__(self, items: list[int]) -> list[int]:
        index = len(self.calls)
        self.calls.append(list(items))
        self.call_times.append(asyncio.get_running_loop().time())
        self.started.set()
        await self.release.wait()
        if index in self.fail_on:
            raise self.fail_on[index]
        results = [2 * x for x in items]
        return results[:-1] if index in self.short_on else results


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_one_request_is_one_call_with_results_in_order():
    async def main():
        model = FakeModel()
        batcher = RequestBatcher(model, max_batch_size=32)
        assert await batcher.submit([3, 1, 2]) == [6, 2, 4]
        assert await batcher.submit([]) == []
        return model, batcher

    model, batcher = run(main())
    assert model.calls == [[3, 1, 2]]
    assert (batcher.stats.batches, batcher.stats.images) == (1, 3)
    assert batcher.stats.max_batch_size_seen == 3 and batcher.queued == 0


def test_a_large_request_is_split_at_max_size_and_reassembled():
    async def main():
        model = FakeModel()
        batcher = RequestBatcher(model, max_batch_size=4)
        return model, batcher, await batcher.submit(list(range(10)))

    model, batcher, results = run(main())
    assert [len(c) for c in model.calls] == [4, 4, 2]
    assert sum(model.calls, []) == list(range(10))
    assert results == [2 * x for x in range(10)]
    assert batcher.stats.max_batch_size_seen == 4 and batcher.stats.batches == 3


def test_requests_arriving_during_a_call_share_the_next_one():
    """Natural batching: no wait when idle, coalescing while the model is busy."""

    async def main():
        model = FakeModel()
        model.release.clear()
        lengths: list[int] = []
        batcher = RequestBatcher(model, max_batch_size=8, on_queue_length=lengths.append)
        first = asyncio.create_task(batcher.submit([100]))
        await model.started.wait()  # the first request runs alone, at once (wait 0)
        later = [asyncio.create_task(batcher.submit([i, i + 1, i + 2])) for i in (0, 10, 20)]
        while batcher.queued < 9:
            await asyncio.sleep(0)
        queued_during_call = batcher.queued
        model.release.set()
        results = await asyncio.gather(first, *later)
        return model, results, queued_during_call, lengths

    model, results, queued, lengths = run(main())
    assert queued == 9
    # 3 requests of 3 with max 8: the third is split, its tail runs in a call of its own
    assert model.calls == [[100], [0, 1, 2, 10, 11, 12, 20, 21], [22]]
    assert results == [[200], [0, 2, 4], [20, 22, 24], [40, 42, 44]]
    assert lengths[-1] == 0 and max(lengths) == 9


def test_a_wait_timeout_lets_a_batch_fill_and_a_full_batch_goes_at_once():
    async def main():
        model = FakeModel()
        patient = RequestBatcher(model, max_batch_size=4, batch_wait_timeout_s=5.0)
        loop = asyncio.get_running_loop()

        async def late(items, delay):
            await asyncio.sleep(delay)
            return await patient.submit(items)

        start = loop.time()
        results = await asyncio.gather(late([1], 0), late([2, 3], 0.02), late([4], 0.04))
        filled_after = model.call_times[0] - start
        brief = RequestBatcher(model, max_batch_size=4, batch_wait_timeout_s=0.1)
        start = loop.time()
        alone = await brief.submit([5])
        return model, results, filled_after, model.call_times[1] - start, alone

    model, results, filled_after, lone_waited, alone = run(main())
    assert model.calls == [[1, 2, 3, 4], [5]]  # three requests waited for each other
    assert results == [[2], [4, 6], [8]] and alone == [10]
    assert 0.035 <= filled_after < 2.5  # went when full, long before the 5 s timeout
    assert lone_waited >= 0.095  # a lone request waits out the timeout for company


def test_a_model_exception_reaches_only_its_batch_and_the_next_batch_works():
    async def main():
        model = FakeModel()
        model.release.clear()
        model.fail_on[1] = ValueError("boom")
        batcher = RequestBatcher(model, max_batch_size=4)
        first = asyncio.create_task(batcher.submit([1]))
        await model.started.wait()
        # queued during call 0: call 1 = [2, 3, 4, 5] fails; call 2 = [6, 7] (b's tail, c) works
        a = asyncio.create_task(batcher.submit([2, 3]))
        b = asyncio.create_task(batcher.submit([4, 5, 6]))
        c = asyncio.create_task(batcher.submit([7]))
        await asyncio.sleep(0)
        model.release.set()
        results = await asyncio.gather(first, a, b, c)
        after = await batcher.submit([8, 9])
        return model, results, after

    model, (first, a, b, c), after = run(main())
    assert model.calls == [[1], [2, 3, 4, 5], [6, 7], [8, 9]]
    assert first == [2]
    assert all(isinstance(r, ValueError) and str(r) == "boom" for r in a)
    assert isinstance(b[0], ValueError) and isinstance(b[1], ValueError) and b[2] == 12
    assert c == [14]
    assert after == [16, 18]


def test_a_wrong_result_count_fails_that_batch_with_a_clear_error():
    async def main():
        model = FakeModel()
        model.short_on.add(0)
        batcher = RequestBatcher(model, max_batch_size=8)
        return await batcher.submit([1, 2, 3]), await batcher.submit([4])

    bad, good = run(main())
    assert all(isinstance(r, BatchSizeMismatch) for r in bad)
    assert str(bad[0]) == "model returned 2 scores for 3 images"
    assert good == [8]


def test_a_cancelled_caller_leaves_the_queue_and_the_others_are_served():
    async def main():
        model = FakeModel()
        model.release.clear()
        lengths: list[int] = []
        batcher = RequestBatcher(model, max_batch_size=4, on_queue_length=lengths.append)
        in_flight = asyncio.create_task(batcher.submit([1, 2]))
        await model.started.wait()
        doomed = asyncio.create_task(batcher.submit([3, 4, 5]))
        kept = asyncio.create_task(batcher.submit([6]))
        while batcher.queued < 4:
            await asyncio.sleep(0)
        doomed.cancel()
        await asyncio.sleep(0)
        queued_after_cancel = batcher.queued
        in_flight.cancel()  # its items are in the model call: the answer is dropped
        await asyncio.sleep(0)
        model.release.set()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        with pytest.raises(asyncio.CancelledError):
            await in_flight
        return model, await kept, queued_after_cancel, batcher

    model, kept, queued_after_cancel, batcher = run(main())
    assert queued_after_cancel == 1
    assert model.calls == [[1, 2], [6]]
    assert kept == [12]
    assert batcher.queued == 0


def test_a_caller_cancelled_after_part_of_its_request_ran_drops_the_rest():
    async def main():
        model = FakeModel()
        model.release.clear()
        batcher = RequestBatcher(model, max_batch_size=2)
        split = asyncio.create_task(batcher.submit([1, 2, 3, 4, 5]))
        await model.started.wait()  # [1, 2] in flight, [3, 4, 5] queued
        split.cancel()
        await asyncio.sleep(0)
        queued = batcher.queued
        model.release.set()
        with pytest.raises(asyncio.CancelledError):
            await split
        return model, queued, await batcher.submit([9])

    model, queued, after = run(main())
    assert queued == 0
    assert model.calls == [[1, 2], [9]]
    assert after == [18]


def test_stopping_the_drain_task_answers_every_waiting_caller():
    async def main():
        model = FakeModel()
        model.release.clear()
        batcher = RequestBatcher(model, max_batch_size=2)
        waiting = [asyncio.create_task(batcher.submit([i])) for i in range(3)]
        await model.started.wait()
        batcher._worker.cancel()  # what a replica shutdown does to the loop's tasks
        results = await asyncio.gather(*waiting, return_exceptions=True)
        model.release.set()
        return results, await batcher.submit([7]), batcher.queued

    results, after, queued = run(main())
    assert all(isinstance(r, BatcherStopped) for r in results)
    assert after == [14] and queued == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        RequestBatcher(FakeModel(), max_batch_size=0)
    with pytest.raises(ValueError, match="batch_wait_timeout_s"):
        RequestBatcher(FakeModel(), max_batch_size=1, batch_wait_timeout_s=-1)


class Brightness(RewardModel):
    """Mean pixel / 255; fails a call that contains a pure-black image (no Ray, no weights)."""

    name = "brightness_test"
    needs_prompt = False

    def __init__(self):
        super().__init__(RewardConfig())
        self.calls: list[int] = []

    def model_info(self) -> ModelInfo:
        return ModelInfo("test brightness (no model)")

    def score(self, images, prompts):
        self.calls.append(len(images))
        if any(int(np.asarray(image).max()) == 0 for image in images):
            raise RuntimeError("black image")
        return [float(np.asarray(image).mean()) / 255 for image in images]


def _image(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, dtype=np.uint8)


def test_the_deployment_batches_whole_requests_and_maps_errors_per_image():
    """RewardDeployment without Ray: one model call per gathered batch, errors where due."""
    model = Brightness()
    deployment = RewardDeployment({"reward": "colorfulness", "max_batch_size": 4}, model=model)
    assert deployment.config.batch_wait_timeout_s == 0.0  # the documented default

    async def main():
        good = [_image(51)] * 6
        mixed = [_image(255), np.zeros((8, 8, 5), np.uint8), _image(102)]  # arrays: no thread
        return await asyncio.gather(deployment.score(good), deployment.score(mixed))

    good, mixed = asyncio.run(main())
    assert [r["score"] for r in good["results"]] == [pytest.approx(0.2)] * 6
    assert mixed["results"][0]["score"] == pytest.approx(1.0)
    assert mixed["results"][1]["score"] is None and "shape" in mixed["results"][1]["error"]
    assert mixed["results"][2]["score"] == pytest.approx(0.4)
    assert model.calls == [4, 4]  # 6 + 2 decodable images in two calls of at most 4
    assert deployment.batch_stats() == {"batches": 2, "images": 8, "max_batch_size_seen": 4}

    failed = asyncio.run(deployment.score([_image(0), _image(255)]))
    assert [r["score"] for r in failed["results"]] == [None, None]
    assert "failed: black image" in failed["results"][0]["error"]
    after = asyncio.run(deployment.score([_image(255)]))  # the replica keeps serving
    assert after["results"][0]["score"] == pytest.approx(1.0)
    assert deployment.batch_stats()["batches"] == 4
