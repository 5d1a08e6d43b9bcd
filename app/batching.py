"""A micro-batcher: concurrent requests' items go through the model in one call.

One asyncio task (the worker) collects queued items into a batch of at most `max_batch_size`
and runs `fn(batch)` in a dedicated executor, so the event loop never runs the model. While a
batch runs, new items queue up, so batches grow with load by themselves. The worker waits up to
`max_wait_s` for more items only while admitted items are still on their way (being decoded);
a lone request is never held back.

Back-pressure is explicit: callers `admit(n)` before doing any work. Past `capacity` admitted
items `QueueFullError` is raised at once, so overload turns into fast rejections, not latency.
Items whose caller gave up (timeout, disconnect) are skipped, and every item is released when
its caller leaves, whatever the reason.

`fn` may put an exception in an item's place in its results: that item alone fails with it
(a bad image in a batch fails its own request, not the others).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    def __init__(self, capacity: int) -> None:
        super().__init__(f"the inference queue is full ({capacity} images in flight)")
        self.capacity = capacity


class WorkerUnavailableError(Exception):
    """The worker is not running: not started, stopped, or crashed."""


class BatchFailedError(Exception):
    """`fn` raised on a batch this item was part of; the cause is logged once by the worker."""


@dataclass(slots=True)
class _Item(Generic[T, R]):
    payload: T
    future: asyncio.Future[R]


BatchObserver = Callable[[int, float], None]  # (batch size, seconds)
DepthObserver = Callable[[int], None]  # items admitted, after each change


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R | Exception]],
        *,
        executor: Executor,
        max_batch_size: int,
        max_wait_s: float,
        capacity: int,
        on_batch: BatchObserver | None = None,
        on_depth: DepthObserver | None = None,
    ) -> None:
        self._fn = fn
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: asyncio.Queue[_Item[T, R]] = asyncio.Queue()
        self._batch: list[_Item[T, R]] = []  # being collected or in the model
        self._admitted = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped_reason = "the inference worker has not started"
        self._crashed: str | None = None
        self._busy_since: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")
            self._task.add_done_callback(self._on_exit)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopped_reason = "the inference worker is stopped (shutting down)"
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._fail_pending(WorkerUnavailableError(self._stopped_reason))

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self._stopped_reason = f"the inference worker crashed ({type(exc).__name__}: {exc})"
        self._crashed = self._stopped_reason
        logger.critical(self._stopped_reason, exc_info=exc)
        self._fail_pending(WorkerUnavailableError(self._stopped_reason))

    def _fail_pending(self, exc: Exception) -> None:
        """Answer every item the worker will never finish, so no caller waits for nothing."""
        pending, self._batch = self._batch, []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(exc)

    # --- state ---------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def admitted(self) -> int:
        """Items admitted and not yet answered: the queue depth that back-pressure counts."""
        return self._admitted

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def problem(self, stuck_after_s: float) -> str | None:
        """Why the worker cannot serve now, or None when it can."""
        if not self.alive:
            return self._stopped_reason
        return self._stuck(stuck_after_s)

    def failure(self, stuck_after_s: float) -> str | None:
        """Like `problem`, but only when the worker crashed or hangs; not when it was never
        started or was stopped on purpose. What a watchdog acts on."""
        if self._crashed is not None:
            return self._crashed
        return self._stuck(stuck_after_s) if self.alive else None

    def _stuck(self, stuck_after_s: float) -> str | None:
        busy = self._busy_since
        if busy is not None and (elapsed := time.monotonic() - busy) > stuck_after_s:
            return f"the inference worker has been stuck on one batch for {elapsed:.1f} s"
        return None

    # --- callers -------------------------------------------------------------------------------
    @contextmanager
    def admit(self, n: int = 1) -> Iterator[None]:
        """Reserve room for `n` items for the duration of the block, or raise at once."""
        if not self.alive:
            raise WorkerUnavailableError(self._stopped_reason)
        if self._admitted + n > self.capacity:
            raise QueueFullError(self.capacity)
        self._set_admitted(self._admitted + n)
        try:
            yield
        finally:
            self._set_admitted(self._admitted - n)

    def _set_admitted(self, admitted: int) -> None:
        self._admitted = admitted
        if self._on_depth is not None:
            self._on_depth(admitted)

    async def submit(self, payloads: Sequence[T]) -> list[R]:
        """Queue the payloads and wait for their results, in order. An item's exception is
        raised (the first in payload order when several failed)."""
        results = await self.submit_all(payloads)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def submit_all(self, payloads: Sequence[T]) -> list[R | BaseException]:
        """Like submit, but each failed item's exception is returned in its place."""
        if not self.alive:
            raise WorkerUnavailableError(self._stopped_reason)
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future()) for p in payloads]
        for item in items:
            self._queue.put_nowait(item)
        try:
            if len(items) == 1:  # /predict: no gather (a future and a callback per item)
                try:
                    return [await items[0].future]
                except Exception as exc:
                    return [exc]
            return list(await asyncio.gather(
                *(item.future for item in items), return_exceptions=True
            ))
        finally:
            # Abandoned items (timeout, disconnect, a sibling's error) are skipped by the worker.
            for item in items:
                item.future.cancel()

    # --- worker --------------------------------------------------------------------------------
    async def _collect(self) -> list[_Item[T, R]]:
        loop = asyncio.get_running_loop()
        batch = self._batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            live = sum(not item.future.done() for item in batch)
            remaining = deadline - loop.time()
            if self._admitted <= live or remaining <= 0:
                break  # nobody else is on the way, or we waited long enough
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._batch = [i for i in await self._collect() if not i.future.done()]
            if not batch:
                continue
            started = time.monotonic()
            self._busy_since = started
            try:
                results = await loop.run_in_executor(
                    self._executor, self._fn, [item.payload for item in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(batch)} inputs gave {len(results)} results")
            except Exception as exc:
                logger.exception("inference failed on a batch of %d", len(batch))
                error = BatchFailedError(f"inference failed ({type(exc).__name__}: {exc})")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finally:
                self._busy_since = None
            predicted = sum(not isinstance(r, Exception) for r in results)
            if self._on_batch is not None and predicted:  # images that reached the model
                self._on_batch(predicted, time.monotonic() - started)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            self._batch = []
