"""Dynamic batching: concurrent requests are gathered into one forward pass, off the event loop.

Each request waits in an asyncio queue. A single worker task takes the first waiting request,
adds whatever else is already queued (and, if `max_wait_ms` > 0, what arrives within that
window), up to `max_batch_size` texts, and runs the model in a worker thread. While one batch
runs, the next one fills up, so under load batches grow by themselves and at concurrency 1 a
request adds no waiting beyond `max_wait_ms`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future


class DynamicBatcher:
    """Gathers concurrent `submit` calls into batches for `infer(texts) -> results`."""

    def __init__(
        self,
        infer: Callable[[list[str]], Sequence[Any]],
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._own_executor = executor is None
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, texts: Sequence[str]) -> list[Any]:
        """Results for `texts`, in order (computed together with other waiting requests)."""
        queue = self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Item(list(texts), future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        pending: _Item | None = None
        while True:
            first = pending or await queue.get()
            pending = None
            batch, size = [first], len(first.texts)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch_size:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if size + len(item.texts) > self.max_batch_size:
                    pending = item  # starts the next batch
                    break
                batch.append(item)
                size += len(item.texts)
            batch = [b for b in batch if not b.future.cancelled()]
            if not batch:
                continue
            texts = [t for b in batch for t in b.texts]
            started = time.perf_counter()
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self.infer, texts)
            except Exception as exc:  # every waiter gets the error; the worker keeps serving
                for b in batch:
                    if not b.future.done():
                        b.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(texts)
            if self.on_batch is not None:
                self.on_batch(len(texts), time.perf_counter() - started)
            offset = 0
            for b in batch:
                n = len(b.texts)
                if not b.future.done():
                    b.future.set_result(list(results[offset : offset + n]))
                offset += n

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        if self._own_executor:
            self._executor.shutdown(wait=False)
