"""The running inference machinery: predictor, decode threads, micro-batcher, limits.

`classify(images)` is what a request handler awaits: admit (or fail fast when full), queue
each image for the micro-batcher, all under one deadline. Uploads up to
`inline_decode_max_bytes` are queued as bytes and decoded by the inference thread as part of
their batch: that saves the round trip through the decode pool, two thread wake-ups per
request. With a worker process per CPU that is every upload (the other workers already use
the other cores); on a GPU, large uploads decode in the pool, beside the model, and are queued
as tensors. Plain exceptions come out; the HTTP layer maps them to status codes.

Idle fast path: when a request with one small image (bytes, at most INLINE_MAX_SIDE² pixels
by its header) finds this process with nothing else to do, the event loop runs its decode
and model call itself, no thread hops (app/inference/batching.py says why that pays). Only a model
whose one-image call, measured at startup on the costliest such image, takes at most
`inline_when_idle_max_s` gets it; that bounds how long the loop can be held. Under load
(two requests at once within the last second) everything goes through the micro-batcher.

Model reload (`swap`, app/reload.py): the predictor is read once per batch, so a batch that
started on the old model finishes on it and the next one runs on the new one. Read
`service.predictor` when a request needs it, never keep it longer; `classify_with_models`
says which model computed each row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch

from app.inference.batching import BatchObserver, DepthObserver, MicroBatcher
from app.inference.predictor import Predictor
from models.images import ImageError, header_pixels

logger = logging.getLogger(__name__)

# The largest image the idle fast path takes, a side in pixels: a 128×128 PNG of noise (the
# worst case) decodes in ~0.6 ms here, a CIFAR-sized 32×32 one in ~0.1 ms.
INLINE_MAX_SIDE = 128


class InferenceTimeoutError(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no result within the {timeout_s:g} s request timeout")
        self.timeout_s = timeout_s


class Scored(NamedTuple):
    probabilities: list[float]
    predictor: Predictor  # the model that computed them (a reload may swap it at any time)


@dataclass(frozen=True)
class ServiceLimits:
    max_batch_size: int
    max_batch_wait_s: float
    queue_capacity: int
    request_timeout_s: float
    decode_threads: int
    inline_decode_max_bytes: int = 0
    inline_when_idle_max_s: float = 0.0  # 0: no idle fast path

    @property
    def stuck_after_s(self) -> float:
        """A batch running this long is hung, not slow: every request in it has timed out."""
        return 2 * self.request_timeout_s


class InferenceService:
    def __init__(
        self, predictor: Predictor, limits: ServiceLimits, on_batch: BatchObserver | None = None,
        on_depth: DepthObserver | None = None, one_image_s: float | None = None,
    ) -> None:
        """`one_image_s`: what one INLINE_MAX_SIDE² upload costs this predictor
        (`Predictor.time_one_image`); the idle fast path is on when it is within
        `limits.inline_when_idle_max_s`, off when unmeasured."""
        self._predictor = predictor
        self.limits = limits
        self.inline_when_idle = self._fast_enough(one_image_s)
        self._decode_pool = ThreadPoolExecutor(limits.decode_threads, "decode")
        self._model_pool = ThreadPoolExecutor(1, "inference")
        self.batcher: MicroBatcher[bytes | torch.Tensor, Scored] = MicroBatcher(
            self._predict,
            executor=self._model_pool,
            max_batch_size=limits.max_batch_size,
            max_wait_s=limits.max_batch_wait_s,
            capacity=limits.queue_capacity,
            on_batch=on_batch,
            on_depth=on_depth,
            inline=self._cheap if self.inline_when_idle else None,
        )

    @property
    def predictor(self) -> Predictor:
        """The model serving now; `swap` replaces it."""
        return self._predictor

    def swap(self, predictor: Predictor, one_image_s: float | None) -> Predictor:
        """Serve `predictor` from the next batch on; returns the one it replaces. Batches
        already in the model finish on the old one. Call it on the event loop, with the new
        predictor loaded and warmed up (`one_image_s` as for __init__, for the new model)."""
        old, self._predictor = self._predictor, predictor
        self.inline_when_idle = self._fast_enough(one_image_s)
        self.batcher.set_inline(self._cheap if self.inline_when_idle else None)
        return old

    def _fast_enough(self, one_image_s: float | None) -> bool:
        return one_image_s is not None and one_image_s <= self.limits.inline_when_idle_max_s

    def _predict(self, payloads: list[bytes | torch.Tensor]) -> list[Scored | ImageError]:
        """The micro-batch function: the whole batch on the predictor of the moment."""
        predictor = self._predictor  # read once: a swap during the batch does not split it
        return [row if isinstance(row, ImageError) else Scored(row, predictor)
                for row in predictor.predict_payloads(payloads)]

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

    def failure(self) -> str | None:
        """Why the inference worker is dead or hung (not merely stopped), or None."""
        return self.batcher.failure(self.limits.stuck_after_s)

    async def classify(
        self, images: Sequence[bytes | torch.Tensor], labels: Sequence[str] | None = None
    ) -> list[list[float]]:
        """Image bytes (or pixels already decoded: uint8 (3, S, S), as `Predictor.decode`
        gives) → probability rows, in order.

        Raises QueueFullError / WorkerUnavailableError before doing any work, ImageError
        (prefixed with the image's label when given) for the first bad image,
        InferenceTimeoutError past the request timeout, BatchFailedError if the model failed.
        """
        return [s.probabilities for s in await self.classify_with_models(images, labels)]

    async def classify_with_models(
        self, images: Sequence[bytes | torch.Tensor], labels: Sequence[str] | None = None
    ) -> list[Scored]:
        """Like `classify`, each row with the predictor that computed it: across a reload,
        the images of one request may even go through different models."""
        with self.batcher.admit(len(images)):
            try:
                async with asyncio.timeout(self.limits.request_timeout_s):
                    payloads = await self._decode_large(images, labels)
                    results = await self.batcher.submit_all(payloads)
            except TimeoutError:
                raise InferenceTimeoutError(self.limits.request_timeout_s) from None
        for i, result in enumerate(results):
            if isinstance(result, ImageError) and labels:  # decoded in the inference thread
                raise type(result)(f"{labels[i]}: {result}") from None
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    @staticmethod
    def _cheap(payload: bytes | torch.Tensor) -> bool:
        """Small enough for the idle fast path: still bytes (a small upload), few pixels."""
        if not isinstance(payload, bytes):
            return False
        pixels = header_pixels(payload)
        return pixels is not None and pixels <= INLINE_MAX_SIDE * INLINE_MAX_SIDE

    def _inline(self, data: bytes | torch.Tensor) -> bool:
        """Left for the inference thread: small uploads, and pixels (nothing to decode)."""
        return not isinstance(data, bytes) or len(data) <= self.limits.inline_decode_max_bytes

    async def _decode_large(
        self, images: Sequence[bytes | torch.Tensor], labels: Sequence[str] | None
    ) -> list[bytes | torch.Tensor]:
        """Large uploads → tensors via the decode pool; small ones stay bytes."""
        if all(self._inline(data) for data in images):
            return list(images)
        tasks = [
            asyncio.ensure_future(self._decode(data, labels[i] if labels else None))
            for i, data in enumerate(images) if not self._inline(data)
        ]
        try:
            decoded = iter(await asyncio.gather(*tasks))
            return [data if self._inline(data) else next(decoded) for data in images]
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
