"""Dynamic batching: concurrent requests are gathered into one forward pass, off the event loop.

Each request waits in an asyncio queue. A single worker task takes the first waiting request,
adds whatever else is already queued, up to `max_batch_size` texts, and runs the model in a
worker thread. While one batch runs, the next one fills up, so under load batches grow by
themselves.

Waiting for more: the worker only waits (at most `max_wait_ms`) when the batch in hand is
smaller than the previous one, i.e. when the recent load says more requests are on their way
(the callers of the last batch sending their next request). At concurrency 1 the previous batch
held one text, so a lone request never waits; under load the wait closes the gap between "the
last batch's answers went out" and "their next requests came in" and keeps batches full.

A request larger than `max_batch_size` is cut into chunks, so no forward pass ever exceeds
`max_batch_size` texts and single requests interleave with the chunks of a big batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nfl_mlops.settings import Settings

log = logging.getLogger(__name__)
_SETTINGS = Settings.model_fields  # the defaults live in the settings, once


def prefer_passive_openmp() -> bool:
    """Make torch's OpenMP threads sleep instead of spin between operations (serving processes).

    libgomp's default spin-wait keeps the intra-op threads burning the cores between operations:
    they take CPU from the event loop that parses requests, and when the cores are shared with
    other processes a forward pass can get 10-20x slower (measured in bench/README.md).
    `OMP_WAIT_POLICY=PASSIVE` avoids both. OpenMP reads it once, when torch is first imported,
    so this only works before that; an explicit OMP_WAIT_POLICY is left alone. Returns whether
    the setting is in force.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


class BatcherClosed(RuntimeError):
    """The batcher was closed; the request was not run."""


class Overloaded(RuntimeError):
    """The request was shed: too much is already waiting for the model, or it waited too long. The API
    answers 503 with `Retry-After` (a fast refusal a load balancer can retry elsewhere, instead of a
    latency that grows without bound)."""

    retry_after_s = 1

    def __init__(self, message: str, reason: str = "queue_full") -> None:
        super().__init__(message)
        self.reason = (
            reason  # queue_full | queue_wait | spool_full: the `reason` label of nfl_mlops_shed_total
        )


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    at: float = 0.0  # time.monotonic() when queued


_STOP = _Item([], None)  # type: ignore[arg-type]  # the sentinel that close() queues


class DynamicBatcher:
    """Gathers concurrent `submit` calls into batches for `infer(texts) -> results` (one per text).

    Args:
        infer: called in `executor` with at most `max_batch_size` texts; returns one result per text.
        max_batch_size: most texts per `infer` call.
        max_wait_ms: the longest the worker holds a batch open for more requests (see module doc).
        on_batch: called with (texts in the batch, seconds in `infer`) after each successful batch.
        executor: where `infer` runs; shared by several batchers so forwards never overlap.
        max_queued: most texts waiting (not yet in a batch); a request that would exceed it is refused
            at once with `Overloaded` (a request to an empty queue is always taken).
        max_queue_wait_s: a request that waited longer for its batch gets `Overloaded` instead of a
            forward pass (its client has likely given up; the model's time goes to fresher requests), and
            one whose expected wait (the texts ahead of it at the recent throughput) is longer is refused
            at once, so admitted requests' latency stays near this bound however high the load.
    """

    def __init__(
        self,
        infer: Callable[[list[str]], Sequence[Any]],
        max_batch_size: int = _SETTINGS["max_batch_size"].default,
        max_wait_ms: float = _SETTINGS["max_wait_ms"].default,
        on_batch: Callable[[int, float], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
        max_queued: int = _SETTINGS["max_queued_texts"].default,
        max_queue_wait_s: float = _SETTINGS["max_queue_wait_s"].default,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.max_queue_wait_s = max_queue_wait_s
        self.waiting = 0  # texts queued, not yet taken into a batch
        self.shed = 0  # requests refused or expired with Overloaded
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._own_executor = executor is None
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._expected = 1  # texts in the last batch: how many more the load suggests are coming
        self._rate = 0.0  # texts per second of recent loaded forward passes (moving average); 0 = unknown
        self._rate_floor = max(2, max_batch_size // 4)  # smallest batch whose speed says what a backlog costs
        self.batches = 0
        self.items = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def expected_wait_s(self, more: int = 0) -> float:
        """Seconds the texts waiting now (plus `more`) need at the recent throughput under load (0 while
        unknown). The throughput comes from batches of at least `_rate_floor` texts after the first forward:
        the first is cold (lazy initialisation, seconds long), and a batch of one is far slower per text than
        the full batches a backlog is served in, so either would refuse requests the model has time for."""
        return (self.waiting + more) / self._rate if self._rate else 0.0

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")
        return self._queue

    async def submit(self, texts: Sequence[str]) -> list[Any]:
        """Results for `texts`, in order (computed together with other waiting requests).

        Raises whatever `infer` raised for the batch these texts were in, or `BatcherClosed`.
        """
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        texts = list(texts)
        if not texts:
            return []
        if self.waiting and self.waiting + len(texts) > self.max_queued:
            self.shed += 1
            raise Overloaded(
                f"overloaded: {self.waiting} texts already wait for the model (limit {self.max_queued}); "
                f"retry in {Overloaded.retry_after_s} s"
            )
        expected = self.expected_wait_s(len(texts))
        if self.waiting and expected > self.max_queue_wait_s:  # it would expire in the queue: refuse it now
            self.shed += 1
            raise Overloaded(
                f"overloaded: about {expected:.1f} s of work waits for the model (limit "
                f"{self.max_queue_wait_s:g} s); retry in {Overloaded.retry_after_s} s",
                reason="expected_wait",
            )
        queue = self._ensure_worker()
        loop = asyncio.get_running_loop()
        step = self.max_batch_size
        now = time.monotonic()
        items = [_Item(texts[i : i + step], loop.create_future(), now) for i in range(0, len(texts), step)]
        for item in items:
            queue.put_nowait(item)
        self.waiting += len(texts)
        if len(items) == 1:
            return await items[0].future
        try:
            parts = await asyncio.gather(*(i.future for i in items))
        finally:  # one chunk failed or the caller went away: the other chunks need not run
            for i in items:
                if not i.future.done():
                    i.future.cancel()
        return [r for part in parts for r in part]

    def _take(self, queue: asyncio.Queue, batch: list[_Item], size: int) -> tuple[int, _Item | None, bool]:
        """Move queued items into `batch` without waiting; returns (size, overflow item, stop seen)."""
        while size < self.max_batch_size:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is _STOP:
                return size, None, True
            self.waiting -= len(item.texts)
            if item.future.done():  # cancelled while queued
                continue
            if size + len(item.texts) > self.max_batch_size:
                return size, item, False  # starts the next batch
            batch.append(item)
            size += len(item.texts)
        return size, None, False

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        pending: _Item | None = None
        stopping = False
        while True:
            if pending is not None:
                first, pending = pending, None
            elif stopping:
                return
            else:
                first = await queue.get()
                if first is _STOP:
                    return
                self.waiting -= len(first.texts)
                if first.future.done():
                    continue
            batch, size = [first], len(first.texts)
            size, pending, stop = self._take(queue, batch, size)
            stopping = stopping or stop
            # hold the batch open only when the last batch says more requests are on their way
            target = min(self._expected, self.max_batch_size)
            if self.max_wait > 0 and pending is None and not stopping and size < target:
                deadline = time.monotonic() + self.max_wait
                while size < target and pending is None and not stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    self.waiting -= len(item.texts)
                    if item.future.done():
                        continue
                    if size + len(item.texts) > self.max_batch_size:
                        pending = item
                        break
                    batch.append(item)
                    size += len(item.texts)
                    size, pending, stop = self._take(queue, batch, size)
                    stopping = stopping or stop
            batch = [b for b in batch if not b.future.done() and not self._expired(b)]
            if not batch:
                continue
            await self._run_batch(batch)

    def _expired(self, item: _Item) -> bool:
        """Fail an item that waited longer than `max_queue_wait_s` with `Overloaded` (True when it did)."""
        waited = time.monotonic() - item.at
        if waited <= self.max_queue_wait_s:
            return False
        self.shed += 1
        item.future.set_exception(
            Overloaded(
                f"overloaded: the request waited {waited:.1f} s for the model (limit {self.max_queue_wait_s:g} s); "
                f"retry in {Overloaded.retry_after_s} s",
                reason="queue_wait",
            )
        )
        return True

    async def _run_batch(self, batch: list[_Item]) -> None:
        texts = [t for b in batch for t in b.texts]
        self._expected = len(texts)
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.infer, texts)
            if len(results) != len(texts):
                raise RuntimeError(f"infer returned {len(results)} results for {len(texts)} texts")
        except Exception as exc:  # every waiter gets the error; the worker keeps serving
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(exc)
            return
        except asyncio.CancelledError:  # the worker itself is being cancelled: fail the batch, re-raise
            for b in batch:
                if not b.future.done():
                    b.future.set_exception(BatcherClosed("the batcher was cancelled during inference"))
            raise
        elapsed = time.perf_counter() - started
        if elapsed > 0 and self.batches and len(texts) >= min(self._rate_floor, self.max_batch_size):
            rate = len(texts) / elapsed
            self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
        self.batches += 1
        self.items += len(texts)
        offset = 0
        for b in batch:
            n = len(b.texts)
            if not b.future.done():
                b.future.set_result(list(results[offset : offset + n]))
            offset += n
        if self.on_batch is not None:
            try:
                self.on_batch(len(texts), elapsed)
            except Exception:  # a metrics hook must never stop the batcher
                log.exception("on_batch hook failed")

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking requests, answer every request already queued, then stop the worker.

        After `timeout` seconds the worker is cancelled and whatever is still waiting gets
        `BatcherClosed`; nothing is left hanging.
        """
        self._closed = True
        worker, queue = self._worker, self._queue
        if worker is not None and queue is not None and not worker.done():
            queue.put_nowait(_STOP)
            try:
                await asyncio.wait_for(asyncio.shield(worker), timeout)
            except TimeoutError:
                worker.cancel()
            except Exception:
                log.exception("dynamic batcher worker failed")
            if not worker.done():
                try:
                    await worker
                except (asyncio.CancelledError, Exception):
                    pass
        self._worker = None
        if queue is not None:  # a worker that died or was cancelled leaves its queue: fail it
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is not _STOP:
                    self.waiting -= len(item.texts)
                if item is not _STOP and not item.future.done():
                    item.future.set_exception(BatcherClosed("the batcher closed before this request ran"))
        if self._own_executor:
            self._executor.shutdown(wait=False)
