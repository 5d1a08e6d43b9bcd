"""Image bytes → class probabilities. Knows the model, nothing about HTTP or asyncio.

`decode` runs in the decode thread pool (one image at a time); `predict_payloads` runs in the
inference thread on a whole micro-batch, decoding the small uploads that were queued as bytes
on the way. All are plain blocking functions.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from models.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from models.devices import autocast, inference_precision
from models.images import ImageError
from models.inference import check_tta, tta_logits
from models.preprocess import decode_to_uint8, normalize

SHA_PREFIX = 12  # hex digits of the checkpoint's sha256 shown with every prediction


class Predictor:
    def __init__(
        self, loaded: LoadedModel, *, max_pixels: int, channels_last: bool = True,
        libspng: bool = True, tta: str | None = None, precision: str = "fp32",
    ) -> None:
        # Channels-last (NHWC) lets oneDNN's convolutions and the max-pooling run vectorised
        # without reordering: the tutorial CNN's forward pass took 1.6-2× less CPU per image
        # with it on a 2-core AVX2 box (max_pool2d on NCHW was 30-40% of the forward).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = loaded.model.to(memory_format=self.memory_format)
        self.meta = loaded.meta
        self.sha256 = loaded.sha256
        self.path = loaded.path
        self.device = loaded.device
        self.name = Path(loaded.path).stem
        # The checkpoint's test-time augmentation unless overridden; its temperature was
        # fitted with the checkpoint's own.
        self.tta = check_tta(tta or loaded.meta.tta)
        # bf16 only where the hardware has it (auto): the ResNet-9 ran 1.5× faster per image
        # at batch 32 in bf16 on an AVX512-BF16 core; emulated elsewhere, it would be slower.
        self.precision = inference_precision(self.device, precision)
        self.classes: tuple[str, ...] = tuple(loaded.meta.classes)
        self.max_pixels = max_pixels
        self.libspng = libspng
        # Sent with every prediction; built once.
        self.description = {"name": self.name, "arch": self.meta.arch,
                            "sha256": self.sha256[:SHA_PREFIX]}

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "cpu", max_pixels: int,
        channels_last: bool = True, libspng: bool = True, tta: str | None = None,
        fold_bn: bool = True, precision: str = "fp32",
    ) -> Predictor:
        """Load and warm up; raises CheckpointError naming the file and the reason."""
        predictor = cls(
            load_checkpoint(path, device=device, fold_bn=fold_bn), max_pixels=max_pixels,
            channels_last=channels_last, libspng=libspng, tta=tta, precision=precision,
        )
        predictor.warm_up()
        return predictor

    @property
    def input_size(self) -> int:
        return self.meta.input_size

    def decode(self, data: bytes) -> torch.Tensor:
        """Upload bytes → uint8 (3, S, S); raises models.images.ImageError for bad input."""
        return decode_to_uint8(data, max_pixels=self.max_pixels, size=self.input_size,
                               libspng=self.libspng)

    def predict(self, images: Sequence[torch.Tensor]) -> list[list[float]]:
        """uint8 (3, S, S) images → one probability row per image, softmax(logits / T)."""
        if self.memory_format is torch.channels_last:
            # decode() gives CHW views of HWC arrays: stacking them as HWC is one copy straight
            # into the NHWC layout the network runs in (stacking CHW would copy twice).
            batch = torch.stack([img.permute(1, 2, 0) for img in images]).permute(0, 3, 1, 2)
        else:
            batch = torch.stack(list(images))
        batch = batch.to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast(self.device, self.precision):
            logits = tta_logits(self.model, normalize(batch, self.meta.mean, self.meta.std),
                                self.tta)
            probs = torch.softmax(logits.float() / self.meta.temperature, dim=1)
        return probs.cpu().tolist()

    def predict_payloads(
        self, payloads: Sequence[bytes | torch.Tensor]
    ) -> list[list[float] | ImageError]:
        """The micro-batch function: bytes are decoded here, tensors (from `decode`) are used
        as they are. A bad image's ImageError takes its place in the results; the rest of
        the batch goes through the model."""
        results: list[list[float] | ImageError] = []
        images: list[torch.Tensor] = []
        for payload in payloads:
            if isinstance(payload, bytes):
                try:
                    payload = self.decode(payload)
                except ImageError as exc:
                    results.append(exc)
                    continue
            results.append([])  # filled in below
            images.append(payload)
        rows = iter(self.predict(images) if images else ())
        return [r if isinstance(r, ImageError) else next(rows) for r in results]

    def warm_up(self) -> None:
        """One inference through the real decode path; refuse a model that outputs garbage."""
        buf = io.BytesIO()
        Image.new("RGB", (self.input_size, self.input_size), (128, 64, 32)).save(buf, "PNG")
        [row] = self.predict([self.decode(buf.getvalue())])
        if not all(math.isfinite(p) for p in row) or abs(sum(row) - 1.0) > 1e-3:
            raise CheckpointError(
                self.path, "its weights give non-finite outputs on a test image (NaN or inf)"
            )

    def time_one_image(self, side: int, repeats: int = 7) -> float:
        """Seconds of the fastest of `repeats` `predict_payloads` calls on one side×side PNG
        of noise (the costliest to decode at that size): what one small upload costs, decode
        included. The fastest, not the median: workers time this while starting side by side
        on a shared machine, where noise only ever adds, and a median of 5 on this 2-core VM
        once read 6.7 ms for a model whose calls take 1.9-2.7 ms."""
        noise = torch.randint(0, 256, (side, side, 3), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
        buf = io.BytesIO()
        Image.fromarray(noise.numpy()).save(buf, "PNG")
        data = buf.getvalue()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.predict_payloads([data])
            times.append(time.perf_counter() - started)
        return min(times)

    def describe(self) -> dict[str, str]:
        return dict(self.description)
