"""Request-level dynamic batching for a reward replica, in place of ``@serve.batch``.

``@serve.batch`` queues *one call per item*: a 16-image request becomes 16 queued coroutines,
16 futures and a gather, and every batch that is not full waits ``batch_wait_timeout_s`` even
when a whole request already arrived at once. :class:`RequestBatcher` queues *requests*: a
caller submits its whole list of items and gets one outcome per item back, in order. One
background task drains the queue, one model call per batch of at most ``max_batch_size``
items; a request larger than that is split across consecutive batches and reassembled, and
several small requests share a batch.

With the default ``batch_wait_timeout_s=0`` an idle batcher runs a request at once. Batching
then comes from load itself: while a model call is in flight, requests that arrive queue up
and go together in the next call, so the batch grows exactly when the model is the
bottleneck and no request ever waits for company that is not coming. A positive timeout
restores Serve's behaviour (wait up to that long for a batch to fill) for models whose
per-call cost is so high that a fuller first batch is worth the latency.

Failure isolation: a model exception, or a result list of the wrong length, becomes the
outcome of every item *of that batch* only (other batches, and the rest of a split request,
are unaffected); the batcher keeps serving. A caller cancelled while waiting takes its
unbatched items out of the queue; results of items already in a model call are dropped. If
the draining task itself is cancelled (replica shutdown), every waiting caller gets an error
instead of waiting forever. Plain asyncio, no Ray: unit tests drive it directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[Any]], Awaitable[Sequence[Any]]]


class BatchSizeMismatch(RuntimeError):
    """The batch function returned another number of results than it was given items."""


class BatcherStopped(RuntimeError):
    """The draining task ended (replica shutdown) before this item was scored."""


@dataclass
class BatchStats:
    """How the batcher has grouped its work so far (``batch_stats()`` of a deployment)."""

    batches: int = 0
    images: int = 0
    max_batch_size_seen: int = 0


@dataclass(eq=False)
class _Request:
    """One caller's items, the outcomes gathered so far and the future it awaits."""

    items: list[Any]
    future: asyncio.Future
    results: list[Any] = field(init=False)
    next: int = 0  # first item not yet taken into a batch
    unanswered: int = field(init=False)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)
        self.unanswered = len(self.items)


class RequestBatcher(Generic[T, R]):
    """Gathers whole requests into model calls of at most ``max_batch_size`` items.

    ``batch_fn(items) -> results`` is awaited once per batch and must return one result per
    item, in order (run a blocking model in an executor inside it, so that requests keep
    arriving meanwhile). ``on_queue_length(n)`` is told the number of queued items whenever it
    changes (the replica's queue-length gauge).
    """

    def __init__(
        self,
        batch_fn: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float = 0.0,
        on_queue_length: Callable[[int], None] | None = None,
        name: str = "batcher",
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_wait_timeout_s < 0:
            raise ValueError(f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s}")
        self._batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._on_queue_length = on_queue_length
        self._name = name
        self._queue: deque[_Request] = deque()
        self._queued = 0
        self._worker: asyncio.Task | None = None
        self._arrived: asyncio.Event | None = None
        self.stats = BatchStats()

    @property
    def queued(self) -> int:
        """Items submitted and not yet taken into a model call."""
        return self._queued

    async def submit(self, items: Sequence[T]) -> list[R | BaseException]:
        """Score ``items`` in as few batches as the queue allows; one outcome per item.

        An outcome is the batch function's result for that item, or the exception that
        failed its batch (:class:`BatchSizeMismatch` for a wrong result count). Only
        cancellation of the caller itself raises.
        """
        if not items:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(list(items), loop.create_future())
        self._queue.append(request)
        self._set_queued(self._queued + len(request.items))
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._worker = loop.create_task(self._drain(), name=f"{self._name}-drain")
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    def _set_queued(self, n: int) -> None:
        self._queued = n
        if self._on_queue_length is not None:
            self._on_queue_length(n)

    def _withdraw(self, request: _Request) -> None:
        """Take a cancelled caller's unbatched items out of the queue."""
        try:
            self._queue.remove(request)
        except ValueError:
            return  # every item already taken into a batch
        self._set_queued(self._queued - (len(request.items) - request.next))

    async def _drain(self) -> None:
        """Run batches until the queue is empty; the next ``submit`` starts a new drain."""
        self._arrived = asyncio.Event()
        in_flight: list[tuple[_Request, int, int]] = []
        try:
            while self._queue:
                await self._gather_time()
                if not self._queue:  # every queued caller was cancelled meanwhile
                    break
                in_flight, batch = self._take()
                outcomes = await self._run(batch)
                self._answer(in_flight, outcomes)
                in_flight = []
        except BaseException as exc:  # cancelled or broken: nobody may wait forever
            stopped = BatcherStopped(f"{self._name} stopped before scoring: {exc!r}")
            for request, start, stop in in_flight:
                request.results[start:stop] = [stopped] * (stop - start)
            for request in [*(r for r, _, _ in in_flight), *self._queue]:
                if not request.future.done():
                    request.future.set_exception(stopped)
            self._queue.clear()
            self._set_queued(0)
            raise
        finally:
            self._arrived = None

    async def _gather_time(self) -> None:
        """Let already-scheduled submissions join; wait for a fuller batch if configured."""
        if self.batch_wait_timeout_s <= 0:
            await asyncio.sleep(0)  # callbacks that are ready now queue their requests first
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait_timeout_s
        while self._queued < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> tuple[list[tuple[_Request, int, int]], list[T]]:
        """Up to ``max_batch_size`` items from the head of the queue, splitting a request."""
        parts: list[tuple[_Request, int, int]] = []
        batch: list[T] = []
        while self._queue and len(batch) < self.max_batch_size:
            request = self._queue[0]
            stop = min(len(request.items), request.next + self.max_batch_size - len(batch))
            parts.append((request, request.next, stop))
            batch.extend(request.items[request.next : stop])
            request.next = stop
            if stop == len(request.items):
                self._queue.popleft()
        self._set_queued(self._queued - len(batch))
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.max_batch_size_seen = max(self.stats.max_batch_size_seen, len(batch))
        return parts, batch

    async def _run(self, batch: list[T]) -> list[R | BaseException]:
        """One call of the batch function; its failure becomes every item's outcome."""
        try:
            results = list(await self._batch_fn(batch))
        except Exception as exc:
            logger.exception("%s: a batch of %d failed", self._name, len(batch))
            return [exc] * len(batch)
        if len(results) != len(batch):
            error = BatchSizeMismatch(
                f"model returned {len(results)} scores for {len(batch)} images"
            )
            logger.error("%s: %s", self._name, error)
            return [error] * len(batch)
        return results

    @staticmethod
    def _answer(parts: list[tuple[_Request, int, int]], outcomes: list[Any]) -> None:
        """Put each outcome in its request's slot; answer requests that are complete."""
        offset = 0
        for request, start, stop in parts:
            request.results[start:stop] = outcomes[offset : offset + stop - start]
            offset += stop - start
            request.unanswered -= stop - start
            if request.unanswered == 0 and not request.future.done():
                request.future.set_result(request.results)
