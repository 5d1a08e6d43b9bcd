"""MicroBatcher on its own: batching, back-pressure, abandoned items, failures, shutdown.

A threading.Event holds the "model" so each test decides exactly what is queued when.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pytest

from app.inference.batching import (
    BatchFailedError,
    MicroBatcher,
    QueueFullError,
    WorkerUnavailableError,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the batcher is written for asyncio, as uvicorn runs it


class Model:
    """Doubles its inputs; records batch sizes; can be held closed or made to fail."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: list[int] = []  # where each batch ran
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.error: Exception | None = None

    def __call__(self, batch: list[int]) -> list[int]:
        self.sizes.append(len(batch))
        self.threads.append(threading.get_ident())
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        if self.error is not None:
            raise self.error
        return [2 * x for x in batch]


@asynccontextmanager
async def running(
    model: Model, **kwargs: object
) -> AsyncIterator[MicroBatcher[int, int]]:
    options: dict = dict(max_batch_size=8, max_wait_s=0.0, capacity=100)
    options.update(kwargs)
    with ThreadPoolExecutor(1) as pool:
        batcher: MicroBatcher[int, int] = MicroBatcher(model, executor=pool, **options)
        batcher.start()
        try:
            yield batcher
        finally:
            model.gate.set()
            await batcher.stop()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def admitted_submit(batcher: MicroBatcher[int, int], values: list[int]) -> list[int]:
    with batcher.admit(len(values)):
        return await batcher.submit(values)


async def test_results_come_back_in_order() -> None:
    async with running(Model()) as batcher:
        assert await admitted_submit(batcher, [1, 2, 3]) == [2, 4, 6]


async def test_requests_queued_while_the_model_runs_form_one_batch() -> None:
    model = Model()
    async with running(model) as batcher:
        model.gate.clear()
        first = asyncio.ensure_future(admitted_submit(batcher, [0]))
        await until(model.entered.is_set)
        rest = [asyncio.ensure_future(admitted_submit(batcher, [i])) for i in range(1, 6)]
        await until(lambda: batcher.queued == 5)
        model.gate.set()
        assert await first == [0]
        assert [r[0] for r in await asyncio.gather(*rest)] == [2, 4, 6, 8, 10]
    assert model.sizes == [1, 5]


async def test_batches_never_exceed_max_batch_size() -> None:
    model = Model()
    async with running(model, max_batch_size=4) as batcher:
        assert await admitted_submit(batcher, list(range(10))) == [2 * i for i in range(10)]
    assert model.sizes == [4, 4, 2]


async def test_worker_waits_for_admitted_items_still_on_their_way() -> None:
    model = Model()
    async with running(model, max_wait_s=5.0) as batcher:
        with batcher.admit(2):  # two admitted: one queued now, one "still decoding"
            first = asyncio.ensure_future(batcher.submit([1]))
            await asyncio.sleep(0.05)
            assert model.sizes == []  # held back: another admitted item is coming
            second = asyncio.ensure_future(batcher.submit([2]))
            assert await first == [2] and await second == [4]
    assert model.sizes == [2]


async def test_lone_request_is_not_held_back_by_max_wait() -> None:
    model = Model()
    async with running(model, max_wait_s=60.0) as batcher:
        async with asyncio.timeout(10):  # would hang for a minute if it waited
            assert await admitted_submit(batcher, [7]) == [14]


async def test_admit_past_capacity_fails_at_once_and_frees_on_exit() -> None:
    async with running(Model(), capacity=3) as batcher:
        with batcher.admit(2):
            with pytest.raises(QueueFullError, match="3 images in flight"), batcher.admit(2):
                pass
            assert batcher.admitted == 2
        assert batcher.admitted == 0
        with batcher.admit(3):
            pass


async def test_abandoned_items_are_skipped_and_release_their_slots() -> None:
    model = Model()
    async with running(model) as batcher:
        model.gate.clear()
        first = asyncio.ensure_future(admitted_submit(batcher, [1]))
        await until(model.entered.is_set)
        quitter = asyncio.ensure_future(admitted_submit(batcher, [99]))
        await until(lambda: batcher.queued == 1)
        quitter.cancel()  # a timeout or a disconnect does exactly this
        await asyncio.gather(quitter, return_exceptions=True)
        assert batcher.admitted == 1
        model.gate.set()
        assert await first == [2]
        assert await admitted_submit(batcher, [3]) == [6]
    assert model.sizes == [1, 1]  # 99 never reached the model
    assert batcher.admitted == 0


async def test_model_error_fails_that_batch_and_the_worker_goes_on() -> None:
    model = Model()
    async with running(model) as batcher:
        model.error = RuntimeError("CUDA exploded")
        with pytest.raises(BatchFailedError, match="CUDA exploded"):
            await admitted_submit(batcher, [1, 2])
        model.error = None
        assert await admitted_submit(batcher, [5]) == [10]
        assert batcher.alive


async def test_crashed_worker_fails_pending_items_and_reports_why() -> None:
    def broken_observer(size: int, seconds: float) -> None:
        raise ValueError("bug in a metrics hook")

    model = Model()
    async with running(model, on_batch=broken_observer) as batcher:
        with pytest.raises(WorkerUnavailableError, match="crashed"):
            await admitted_submit(batcher, [1])
        assert not batcher.alive
        assert "bug in a metrics hook" in (batcher.problem(stuck_after_s=60) or "")
        with pytest.raises(WorkerUnavailableError):
            batcher.admit(1).__enter__()


async def test_stop_answers_queued_and_running_items() -> None:
    model = Model()
    async with running(model) as batcher:
        model.gate.clear()
        running_item = asyncio.ensure_future(admitted_submit(batcher, [1]))
        await until(model.entered.is_set)
        queued_item = asyncio.ensure_future(admitted_submit(batcher, [2]))
        await until(lambda: batcher.queued == 1)
        await batcher.stop()
        for item in (running_item, queued_item):
            with pytest.raises(WorkerUnavailableError, match="shutting down"):
                await item
        assert batcher.problem(stuck_after_s=60) is not None


async def test_problem_reports_a_worker_stuck_on_one_batch() -> None:
    model = Model()
    async with running(model) as batcher:
        assert batcher.problem(stuck_after_s=0.05) is None
        model.gate.clear()
        item = asyncio.ensure_future(admitted_submit(batcher, [1]))
        await until(model.entered.is_set)
        await until(lambda: batcher.problem(stuck_after_s=0.05) is not None)
        assert "stuck on one batch" in (batcher.problem(stuck_after_s=0.05) or "")
        model.gate.set()
        assert await item == [2]
        assert batcher.problem(stuck_after_s=0.05) is None


async def test_submit_before_start_is_refused() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            Model(), executor=pool, max_batch_size=1, max_wait_s=0, capacity=1
        )
        with pytest.raises(WorkerUnavailableError, match="not started"):
            await batcher.submit([1])


class PicksyModel(Model):
    """Like Model, but answers negative inputs with an exception in their place."""

    def __call__(self, batch: list[int]) -> list[int | Exception]:  # type: ignore[override]
        doubled = super().__call__(batch)
        return [ValueError(f"bad {x}") if x < 0 else y for x, y in zip(batch, doubled, strict=True)]


async def test_an_exception_in_an_items_place_fails_only_that_item() -> None:
    model = PicksyModel()
    async with running(model) as batcher:
        model.gate.clear()
        with batcher.admit(3):
            good = asyncio.ensure_future(batcher.submit([1]))
            await until(model.entered.is_set)
            bad = asyncio.ensure_future(batcher.submit([-2]))
            other = asyncio.ensure_future(batcher.submit([3]))
            await until(lambda: batcher.queued == 2)
            model.gate.set()
            assert await good == [2] and await other == [6]
            with pytest.raises(ValueError, match="bad -2"):
                await bad
    assert model.sizes == [1, 2]  # the bad item shared its batch


async def test_submit_raises_the_first_failure_in_payload_order() -> None:
    async with running(PicksyModel()) as batcher:
        with batcher.admit(4), pytest.raises(ValueError, match="bad -1"):
            await batcher.submit([5, -1, 7, -3])


async def test_submit_all_returns_each_failure_in_its_place() -> None:
    async with running(PicksyModel()) as batcher:
        with batcher.admit(3):
            results = await batcher.submit_all([5, -1, 7])
    assert results[0] == 10 and results[2] == 14
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -1"
    assert batcher.admitted == 0


async def test_batches_where_every_item_failed_are_not_observed() -> None:
    observed: list[int] = []
    model = PicksyModel()
    async with running(model, on_batch=lambda n, s: observed.append(n)) as batcher:
        with batcher.admit(3):
            await batcher.submit_all([-1, -2])
            await batcher.submit_all([4, -5])
    assert model.sizes == [2, 2] and observed == [1]


async def test_failure_reports_a_crash_or_a_hang_but_not_a_stop() -> None:
    model = Model()
    async with running(model) as batcher:
        assert batcher.failure(stuck_after_s=0.05) is None
        model.gate.clear()
        item = asyncio.ensure_future(admitted_submit(batcher, [1]))
        await until(lambda: batcher.failure(stuck_after_s=0.05) is not None)
        assert "stuck on one batch" in (batcher.failure(stuck_after_s=0.05) or "")
        model.gate.set()
        assert await item == [2]
        await batcher.stop()
        assert batcher.failure(stuck_after_s=0.05) is None  # stopped on purpose
        assert batcher.problem(stuck_after_s=0.05) is not None  # but not serving


async def test_failure_reports_a_crashed_worker() -> None:
    def broken_observer(size: int, seconds: float) -> None:
        raise ValueError("bug in a metrics hook")

    async with running(Model(), on_batch=broken_observer) as batcher:
        with pytest.raises(WorkerUnavailableError):
            await admitted_submit(batcher, [1])
        assert "crashed" in (batcher.failure(stuck_after_s=60) or "")


# --- idle fast path --------------------------------------------------------------------------
def small(x: int) -> bool:
    return x < 100


async def test_a_lone_cheap_item_runs_on_the_event_loop_thread() -> None:
    model = Model()
    batches: list[int] = []
    async with running(model, inline=small, on_batch=lambda n, s: batches.append(n)) as batcher:
        assert await admitted_submit(batcher, [7]) == [14]
        assert model.threads == [threading.get_ident()]  # no hop to the executor
        assert batches == [1]  # observed like any batch


async def test_items_the_caller_calls_costly_go_through_the_executor() -> None:
    model = Model()
    async with running(model, inline=small) as batcher:
        assert await admitted_submit(batcher, [500]) == [1000]
        assert await admitted_submit(batcher, [1, 2]) == [2, 4]  # several: always batched
    assert threading.get_ident() not in model.threads and model.sizes == [1, 2]


async def test_without_inline_even_a_lone_item_goes_through_the_executor() -> None:
    model = Model()
    async with running(model) as batcher:
        assert await admitted_submit(batcher, [7]) == [14]
    assert model.threads != [threading.get_ident()]


async def test_while_another_request_is_in_flight_a_cheap_item_is_batched() -> None:
    model = Model()
    async with running(model, inline=small) as batcher:
        model.gate.clear()
        first = asyncio.ensure_future(admitted_submit(batcher, [500]))  # costly: executor
        await until(model.entered.is_set)
        second = asyncio.ensure_future(admitted_submit(batcher, [1]))
        await until(lambda: batcher.queued == 1)  # queued behind it, not run on the loop
        model.gate.set()
        assert await first == [1000] and await second == [2]
    assert model.sizes == [1, 1] and threading.get_ident() not in model.threads


async def test_requests_that_arrive_together_are_batched_not_run_in_turn_on_the_loop() -> None:
    # As when the loop reads several connections at once: the second request's task has
    # not run yet when the first checks whether it is alone.
    model = Model()
    async with running(model, inline=small) as batcher:
        first = asyncio.ensure_future(admitted_submit(batcher, [1]))
        second = asyncio.ensure_future(admitted_submit(batcher, [2]))
        assert await first == [2] and await second == [4]
    assert model.sizes == [2] and threading.get_ident() not in model.threads


@pytest.mark.parametrize(("calm_s", "loop"), [(60.0, False), (0.0, True)])
async def test_after_two_requests_overlapped_the_fast_path_waits_for_calm(
    calm_s: float, loop: bool,
) -> None:
    model = Model()
    async with running(model, inline=small, calm_s=calm_s) as batcher:
        await asyncio.gather(admitted_submit(batcher, [1]), admitted_submit(batcher, [2]))
        assert await admitted_submit(batcher, [3]) == [6]  # alone, right after the overlap
    assert model.sizes == [2, 1]
    assert (model.threads[-1] == threading.get_ident()) is loop


async def test_an_admitted_item_still_on_its_way_keeps_the_fast_path_off() -> None:
    model = Model()
    async with running(model, inline=small) as batcher:
        with batcher.admit(2):  # another image of this request is still decoding
            first = asyncio.ensure_future(batcher.submit([1]))
            second = asyncio.ensure_future(batcher.submit([2]))
            assert await first == [2] and await second == [4]
    assert threading.get_ident() not in model.threads


async def test_a_failing_model_on_the_fast_path_fails_only_that_request() -> None:
    model = Model()
    model.error = RuntimeError("boom")
    async with running(model, inline=small) as batcher:
        with pytest.raises(BatchFailedError, match="RuntimeError: boom"):
            await admitted_submit(batcher, [7])
        model.error = None
        assert batcher.alive and await admitted_submit(batcher, [8]) == [16]


async def test_a_model_call_on_the_fast_path_counts_as_busy_for_the_watchdog() -> None:
    seen: list[str | None] = []

    def fn(batch: list[int]) -> list[int]:
        seen.append(batcher.failure(stuck_after_s=-1.0))  # "stuck" as soon as it is busy
        return batch

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(fn, executor=pool, max_batch_size=8, max_wait_s=0.0,
                               capacity=10, inline=small)
        batcher.start()
        try:
            assert await admitted_submit(batcher, [3]) == [3]
            assert batcher.failure(stuck_after_s=-1.0) is None  # and idle again after
        finally:
            await batcher.stop()
    assert seen and "event loop has been stuck in one model call" in (seen[0] or "")


async def test_a_fast_path_call_holding_the_loop_is_stuck_after_inline_stuck_s() -> None:
    release = threading.Event()
    seen: list[tuple[str | None, bool]] = []

    def watch() -> None:  # a watchdog's view, from its own thread while the loop is held
        while not (reason := batcher.failure(stuck_after_s=3600.0)):
            pass
        seen.append((reason, batcher.holding_the_loop))
        release.set()

    def fn(batch: list[int]) -> list[int]:
        threading.Thread(target=watch, daemon=True).start()
        assert release.wait(10), "the hold was never reported"
        return batch

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(fn, executor=pool, max_batch_size=8, max_wait_s=0.0,
                               capacity=10, inline=small, inline_stuck_s=0.05)
        batcher.start()
        try:
            assert await admitted_submit(batcher, [3]) == [3]
            assert not batcher.holding_the_loop and batcher.failure(3600.0) is None
        finally:
            await batcher.stop()
    [(reason, held)] = seen
    assert held and reason is not None and "event loop has been stuck" in reason
