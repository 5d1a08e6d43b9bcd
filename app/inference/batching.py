"""A micro-batcher: concurrent requests' items go through the model in one call.

One asyncio task (the worker) collects queued items into a batch of at most `max_batch_size`
and runs `fn(batch)` in a dedicated executor, so the event loop does not run the model (but
see the idle fast path below). While a batch runs, new items queue up, so batches grow with
load by themselves. The worker waits up to `max_wait_s` for more items only while admitted
items are still on their way (being decoded); a lone request is never held back.

Back-pressure is explicit: callers `admit(n)` before doing any work. Past `capacity` admitted
items `QueueFullError` is raised at once, so overload turns into fast rejections, not latency.
Items whose caller gave up (timeout, disconnect) are skipped, and every item is released when
its caller leaves, whatever the reason.

`fn` may put an exception in an item's place in its results: that item alone fails with it
(a bad image in a batch fails its own request, not the others).

Idle fast path (optional, `inline`): when a caller's single payload is all there is (nothing
else admitted, queued or in the model) and `inline(payload)` says it is cheap, `fn` runs
right away on the caller's thread, the event loop, instead of crossing to the executor and
back. That is a bounded exception to "never block the event loop": the caller decides what
is cheap (the service allows only small images, and only a model whose one-image call was
measured under a budget), and it happens only when this process has no other request to
serve and has had no two at once for `calm_s`. On a 2-core VM the two thread hops cost
about as much as the model call itself: the thread woken on an idle core runs slowly, and a
lone 32×32 PNG took 3.0 ms of CPU through the executor against 2.2 ms on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
        inline: Callable[[T], bool] | None = None,
        calm_s: float = 1.0,
        inline_stuck_s: float = 1.0,
    ) -> None:
        self._fn = fn
        self._inline = inline
        self.calm_s = calm_s
        # A fast-path call holds the event loop: nothing else in this process moves (no 504,
        # no /healthz) until it returns, so it counts as hung far sooner than a batch does.
        self.inline_stuck_s = inline_stuck_s
        self._busy_inline = False
        self._overlap_at = -math.inf  # time.monotonic() when two items were last admitted
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
    def set_inline(self, inline: Callable[[T], bool] | None) -> None:
        """Turn the idle fast path on (with this test of what is cheap) or off, from the next
        request on (a model reload changes what one call costs)."""
        self._inline = inline

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

    @property
    def holding_the_loop(self) -> bool:
        """A fast-path call is running on the event loop (read from another thread)."""
        return self._busy_inline

    def _stuck(self, stuck_after_s: float) -> str | None:
        busy, inline = self._busy_since, self._busy_inline
        if busy is None:
            return None
        elapsed = time.monotonic() - busy
        if inline:
            if elapsed > min(self.inline_stuck_s, stuck_after_s):
                return (f"the event loop has been stuck in one model call for {elapsed:.1f} s "
                        "(idle fast path)")
        elif elapsed > stuck_after_s:
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
        if admitted > 1:
            self._overlap_at = time.monotonic()
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
        if self._inline is not None and self._alone(payloads) and self._inline(payloads[0]):
            # Requests the loop has already read but not yet run would find the loop taken
            # and could not join a batch: under load, every request would run alone, in
            # turn. One turn of the loop lets each of them get as far as admit() first.
            await asyncio.sleep(0)
            if self._alone(payloads):
                return self._call_inline(payloads)
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

    def _alone(self, payloads: Sequence[T]) -> bool:
        """One payload, nothing else admitted, queued, collected or in the model, and no
        two items admitted at once for `calm_s`: under steady load a worker is idle for
        moments between batches, and a request run on the loop then holds up the others'
        parsing (throughput at 32 connections fell 7-25% before this check)."""
        return (len(payloads) == 1 and self._admitted <= 1 and self._queue.empty()
                and not self._batch and self._busy_since is None and self.alive
                and time.monotonic() - self._overlap_at > self.calm_s)

    def _call_inline(self, payloads: Sequence[T]) -> list[R | BaseException]:
        self._busy_inline = True
        started = self._busy_since = time.monotonic()  # watched like a batch (see _stuck)
        try:
            results = self._checked(self._fn(list(payloads)), len(payloads))
        except Exception as exc:
            return [self._batch_failed(exc, len(payloads))]
        finally:
            self._busy_since = None
            self._busy_inline = False
        self._observe(results, started)
        return list(results)

    def _checked(self, results: Sequence[R | Exception], n: int) -> Sequence[R | Exception]:
        if len(results) != n:
            raise RuntimeError(f"{n} inputs gave {len(results)} results")
        return results

    def _batch_failed(self, exc: Exception, n: int) -> BatchFailedError:
        logger.exception("inference failed on a batch of %d", n, exc_info=exc)
        return BatchFailedError(f"inference failed ({type(exc).__name__}: {exc})")

    def _observe(self, results: Sequence[R | Exception], started: float) -> None:
        predicted = sum(not isinstance(r, Exception) for r in results)
        if self._on_batch is not None and predicted:  # images that reached the model
            self._on_batch(predicted, time.monotonic() - started)

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
                results = self._checked(await loop.run_in_executor(
                    self._executor, self._fn, [item.payload for item in batch]
                ), len(batch))
            except Exception as exc:
                error = self._batch_failed(exc, len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                self._batch = []
                continue
            finally:
                self._busy_since = None
            self._observe(results, started)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            self._batch = []
