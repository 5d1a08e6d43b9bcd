"""Helpers shared by the service tests: checkpoints, images, a gate on the model, polling."""

from __future__ import annotations

import functools
import io
import math
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from app.settings import Settings
from models.architectures import build_model
from models.checkpoint import CheckpointMeta, save_checkpoint
from models.classes import CIFAR10_CLASSES

ACCEPTED_TEXT = "PNG, JPEG, WebP, GIF, BMP or TIFF"


def make_meta(**overrides: object) -> CheckpointMeta:
    fields: dict = dict(
        arch="tutorial_cnn", classes=list(CIFAR10_CLASSES), input_size=32,
        mean=[0.5, 0.4, 0.3], std=[0.25, 0.25, 0.25], temperature=1.7,
        metrics={"val_accuracy": 0.5}, epochs=3, data={"dataset": "test"},
        training={"lr": 0.01}, created_at="2025-01-02T03:04:05+00:00",
    )
    fields.update(overrides)
    return CheckpointMeta(**fields)


def save_random_checkpoint(path: Path, seed: int = 0, **meta: object) -> Path:
    torch.manual_seed(seed)
    m = make_meta(**meta)
    save_checkpoint(path, build_model(m.arch, len(m.classes)), m)
    return path


def save_fixed_checkpoint(path: Path, temperature: float = 2.0) -> Path:
    """All weights zero, last bias = T·ln(1…10): logits ignore the image and
    softmax(logits / T) = (i + 1) / 55 exactly."""
    model = build_model("tutorial_cnn", 10)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model[8].bias.copy_(temperature * torch.log(torch.arange(1, 11, dtype=torch.float)))
    save_checkpoint(path, model, make_meta(temperature=temperature))
    return path


FIXED_PROBABILITIES = [(i + 1) / 55 for i in range(10)]


def settings_for(model_path: Path, **overrides: object) -> Settings:
    # No watchdog: in-process apps (TestClient) hold the worker stuck on purpose, and its
    # remedy is to SIGTERM the process, which here is pytest.
    # tests/app/inference/test_app_watchdog.py covers it, and a real server subprocess shows
    # the exit.
    # No idle fast path either: most tests hold the model in the inference thread to line
    # requests up behind it, and a lone request run on the event loop would hold the loop
    # instead. tests/app/inference/test_app_idle_fast_path.py turns it on.
    base: dict = dict(model_path=model_path, device="cpu", decode_threads=2, torch_threads=1,
                      exit_on_worker_failure=False, inline_when_idle_max_ms=0)
    base.update(overrides)
    return Settings(**base)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png(size: tuple[int, int] = (40, 30), color: tuple[int, ...] = (200, 30, 60)) -> bytes:
    return encode(Image.new("RGB", size, color), "PNG")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height, with almost no pixel data behind it."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@functools.cache
def png_bomb(width: int = 8000, height: int = 8000) -> bytes:
    """A real greyscale PNG of width×height zeros: tens of kilobytes that decode to
    width·height bytes."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    rows = b"\x00" * ((width + 1) * 500)  # 500 rows of (filter byte + pixels)
    blocks, rest = divmod(height, 500)
    idat = b"".join(packer.compress(rows) for _ in range(blocks))
    idat += packer.compress(rows[: (width + 1) * rest]) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def softmax_sum(probabilities: dict[str, float]) -> float:
    return math.fsum(probabilities.values())


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll until `condition()` holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.005)


class ModelGate:
    """A forward pre-hook that records batch sizes and the thread each forward pass ran
    on and, while closed, holds the model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        self.threads: list[str] = []  # thread names
        self._open = threading.Event()
        self._open.set()
        self.entered = threading.Event()
        self.fail_with: Exception | None = None
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.sizes.append(int(args[0].shape[0]))
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        if not self._open.wait(30):
            raise RuntimeError("test gate never opened")
        if self.fail_with is not None:
            raise self.fail_with

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def remove(self) -> None:
        self.open()
        self._handle.remove()
