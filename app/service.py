"""The running inference machinery: predictor, decode threads, micro-batcher, limits.

`classify(images)` is what a request handler awaits: admit (or fail fast when full), decode
each image in the decode pool, queue the tensors for the micro-batcher, all under one
deadline. Plain exceptions come out; the HTTP layer maps them to status codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from app.batching import BatchObserver, MicroBatcher
from app.predictor import Predictor
from models.images import ImageError

logger = logging.getLogger(__name__)


class InferenceTimeoutError(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no result within the {timeout_s:g} s request timeout")
        self.timeout_s = timeout_s


@dataclass(frozen=True)
class ServiceLimits:
    max_batch_size: int
    max_batch_wait_s: float
    queue_capacity: int
    request_timeout_s: float
    decode_threads: int

    @property
    def stuck_after_s(self) -> float:
        """A batch running this long is hung, not slow: every request in it has timed out."""
        return 2 * self.request_timeout_s


class InferenceService:
    def __init__(
        self, predictor: Predictor, limits: ServiceLimits, on_batch: BatchObserver | None = None
    ) -> None:
        self.predictor = predictor
        self.limits = limits
        self._decode_pool = ThreadPoolExecutor(limits.decode_threads, "decode")
        self._model_pool = ThreadPoolExecutor(1, "inference")
        self.batcher: MicroBatcher[torch.Tensor, list[float]] = MicroBatcher(
            predictor.predict,
            executor=self._model_pool,
            max_batch_size=limits.max_batch_size,
            max_wait_s=limits.max_batch_wait_s,
            capacity=limits.queue_capacity,
            on_batch=on_batch,
        )

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        # Threads still busy with abandoned work finish on their own; nobody waits for them.
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._model_pool.shutdown(wait=False, cancel_futures=True)

    def problem(self) -> str | None:
        """Why the service cannot answer predictions right now, or None when it can."""
        return self.batcher.problem(self.limits.stuck_after_s)

    async def classify(
        self, images: Sequence[bytes], labels: Sequence[str] | None = None
    ) -> list[list[float]]:
        """Image bytes → probability rows, in order.

        Raises QueueFullError / WorkerUnavailableError before doing any work, ImageError
        (prefixed with the image's label when given) for the first bad image,
        InferenceTimeoutError past the request timeout, BatchFailedError if the model failed.
        """
        with self.batcher.admit(len(images)):
            try:
                async with asyncio.timeout(self.limits.request_timeout_s):
                    tensors = await self._decode_all(images, labels)
                    return await self.batcher.submit(tensors)
            except TimeoutError:
                raise InferenceTimeoutError(self.limits.request_timeout_s) from None

    async def _decode_all(
        self, images: Sequence[bytes], labels: Sequence[str] | None
    ) -> list[torch.Tensor]:
        tasks = [
            asyncio.ensure_future(self._decode(data, labels[i] if labels else None))
            for i, data in enumerate(images)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            # On the first bad image (or a timeout) drop the decodes that have not started.
            for task in tasks:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # a second bad image is not "never retrieved"

    async def _decode(self, data: bytes, label: str | None) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._decode_pool, self.predictor.decode, data)
        except ImageError as exc:
            if label is None:
                raise
            raise type(exc)(f"{label}: {exc}") from None
