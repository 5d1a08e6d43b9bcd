"""Every knob of the service, read from the environment once, at startup.

Variables carry the `CNN_SERVE_` prefix (`CNN_SERVE_MAX_BATCH_SIZE=16`); the checkpoint path is
also accepted as plain `MODEL_PATH`. Empty variables count as unset. `load_settings()` turns a
bad value into one sentence naming the variable, so startup can fail with a clear message.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from fastapi import Request
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import DEFAULT_CHECKPOINT
from models.devices import resolve_device
from models.images import PILLOW_PIXEL_CEILING
from models.png import SPNG_MAX_PIXELS

ENV_PREFIX = "CNN_SERVE_"
MiB = 1024 * 1024


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota
    (`docker run --cpus=2` on a 16-core host gives 2, not 16)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            count = min(count or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count or 1)


def _default_decode_threads() -> int:
    return min(4, available_cpus())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, validate_by_name=True, env_ignore_empty=True, frozen=True
    )

    model_path: Path = Field(
        DEFAULT_CHECKPOINT,
        validation_alias=AliasChoices(f"{ENV_PREFIX}MODEL_PATH", "MODEL_PATH"),
        description="checkpoint file to serve",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    # Upload limits. The byte limits are enforced while the body streams in.
    max_upload_bytes: int = Field(10 * MiB, ge=1, description="bytes per uploaded image")
    max_batch_files: int = Field(32, ge=1, le=1024, description="images per /predict/batch")
    max_batch_bytes: int = Field(64 * MiB, ge=1, description="whole /predict/batch body")
    max_pixels: int = Field(
        40_000_000, ge=1, le=PILLOW_PIXEL_CEILING,
        description="width × height per image, checked from the header before decoding",
    )
    # Photo PNGs 1.6× faster, 32×32 ones 2.8× (models/png.py). Off: one decoder fewer
    # parses uploads.
    libspng: bool = Field(
        True, description=f"decode PNGs of up to {SPNG_MAX_PIXELS:,} pixels with libspng "
                          "(the image Pillow would give, EXIF orientation included, faster); "
                          "false: Pillow decodes every image",
    )
    # Micro-batching and back-pressure.
    max_batch_size: int = Field(32, ge=1, le=4096, description="images per forward pass")
    max_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000,
        description="how long a batch waits for more images while others are still decoding",
    )
    queue_capacity: int = Field(
        256, ge=1, description="images admitted at once (decoding, queued or in the model)"
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 503 when full")
    request_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="decode + queue + inference per request; then 504"
    )
    # Slow and broken clients. A client may take this long to send a request's body; past it
    # the request gets 408 and its connection is closed, so a trickling upload (a byte a
    # second) never holds a connection and a half-read body in memory for longer. 30 s lets a
    # 10 MB upload through at ~3 Mbit/s.
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="seconds a client may take to send the request body after its headers; "
                    "then 408 and the connection is closed",
    )
    # Used only by `python -m app` (they configure uvicorn's connections, not the app).
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600,
        description="seconds a connection may take to send a request's line and headers, from "
                    "being opened or from the previous response; then it is closed (uvicorn "
                    "itself never times out a client that trickles its headers)",
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, le=3600,
        description="an idle keep-alive connection is closed after this many seconds (put it "
                    "above the idle timeout of a proxy or load balancer in front)",
    )
    shutdown_timeout_s: float = Field(
        8.0, gt=0, le=3600,
        description="after SIGTERM, how long requests already accepted may take to finish "
                    "before they are cancelled; below Docker's 10 s stop grace period",
    )
    exit_on_worker_failure: bool = Field(
        True, description="when the inference worker crashes, or is stuck on one batch for 2 × "
                          "the request timeout, the server process exits (code 70) so its "
                          "supervisor or the container restarts it; false: /healthz only "
                          "reports it",
    )
    inline_decode_max_bytes: int | None = Field(
        None, ge=0,
        description="uploads up to this size are decoded by the inference thread as part of "
                    "their batch, saving two thread hops; larger ones in the decode threads "
                    "(0: always the decode threads). Default: every upload when each CPU has "
                    "its own worker process, 32 KiB on a GPU or with fewer workers than CPUs",
    )
    # The tutorial CNN's one-image call (128×128 noise PNG, decode included) measured 1.3 ms
    # on a 2-core AVX2 VM, VGG16's 42 ms: the default lets the first through, not the second.
    inline_when_idle_max_ms: float = Field(
        5.0, ge=0, le=1000,
        description="a process with nothing else to do runs a lone small image on its "
                    "event loop, saving two thread hops, if the largest such image was "
                    "measured at startup to take at most this long; 0: never",
    )
    # Threads. Processes are uvicorn's --workers (or WORKERS with `python -m app`).
    decode_threads: int = Field(
        default_factory=_default_decode_threads, ge=1, le=256,
        description="threads decoding images (default: CPUs, at most 4)",
    )
    # One intra-op thread per process: the event loop and decode threads need the other
    # cores, and on a shared 2-core box 2 threads made a batch-1 forward 2.8× slower
    # (5.4 ms vs 1.9 ms). Raise it for big models (vgg16) on CPU, with fewer workers:
    # workers × torch_threads should not exceed the cores.
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per process")
    channels_last: bool = Field(
        True, description="run the network on channels-last (NHWC) tensors; faster on CPU"
    )
    tta: Literal["off", "flip", "multicrop"] | None = Field(
        None, description="test-time augmentation: off; flip (mean of the image's and its "
                          "mirror's logits, 2× the compute); multicrop (flip × one-pixel "
                          "shifts, 6× the compute); default: the checkpoint's own, the one "
                          "its temperature was fitted with",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="the network's arithmetic: fp32; bf16 (autocast); or auto, bf16 "
                            "where the hardware has it natively (CPUs with AVX512-BF16 or AMX, "
                            "CUDA GPUs), else fp32. bf16 moves probabilities by ~0.01",
    )
    fold_batchnorm: bool = Field(
        True, description="fold BatchNorm layers into the convolutions before them at load "
                          "time (same outputs, one op per layer instead of two)",
    )
    gc_freeze: bool = Field(
        True, description="after startup, exempt everything loaded so far from Python's "
                          "garbage collector (gc.freeze); full collections stop stalling "
                          "requests for 100+ ms",
    )
    # Responses, security, logging.
    default_top_k: int = Field(3, ge=1, description="top_k when the query does not say")
    api_key: SecretStr | None = Field(
        None, description="when set, /predict* and /v2/models/…/infer need "
                          "`Authorization: Bearer <key>` or X-API-Key"
    )
    ui: bool = Field(
        True, description="serve a page at / to try the model in a browser (it calls /predict "
                          "and /model from there; with an API key it asks for it); false: / "
                          "is a 404",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # Used only by `python -m app`.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Each worker is a process with its own model, event loop and batcher. The HTTP and
    # multipart work is pure Python under one GIL per process, so one process per core is
    # what used both cores of a 2-core box (see bench/serve.py and the README).
    workers: int | None = Field(
        None, ge=1, le=64,
        description="server processes (default: one per available CPU; 1 on a GPU)",
    )

    # How several workers share the port. wrk's 32 keep-alive connections split 16/16 when
    # dealt, 13/19 … 21/11 hashed by SO_REUSEPORT, 3/29 … 25/7 on one shared socket; the
    # worker with more connections answers later (p99 38 vs 41 ms at 32 connections, median
    # of 7 alternating runs each; README, Performance).
    balance: Literal["deal", "reuseport", "shared"] = Field(
        "deal", description="with several workers: `deal` (the supervisor accepts each "
                            "connection and hands it to the workers in turn), `reuseport` (an "
                            "SO_REUSEPORT socket per worker, connections hashed by the kernel) "
                            "or `shared` (uvicorn's --workers: one socket, first to wake wins)",
    )

    @property
    def worker_count(self) -> int:
        """`workers`, or its default: one process per CPU, or a single one that owns the GPU."""
        if self.workers is not None:
            return self.workers
        return available_cpus() if resolve_device(self.device).type == "cpu" else 1

    @property
    def inline_decode_bytes(self) -> int:
        """`inline_decode_max_bytes`, or its default. With a worker process per CPU, decode
        threads add no parallelism that the other workers do not already use, only two
        thread hops per request: decoding in the inference thread served a 456×336 photo
        PNG at 1.14× and a 1600×1200 JPEG at 1.15× the req/s (docs/performance.md). A GPU
        process, or one with cores to spare, decodes beside the model instead."""
        if self.inline_decode_max_bytes is not None:
            return self.inline_decode_max_bytes
        core_each = (resolve_device(self.device).type == "cpu"
                     and self.worker_count >= available_cpus())
        return self.max_upload_bytes if core_each else 32 * 1024

    @field_validator("device")
    @classmethod
    def _device_exists(cls, value: str) -> str:
        resolve_device(value)  # ValueError naming the choices, or saying what is missing
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.api_key is not None and len(self.api_key.get_secret_value().strip()) < 8:
            raise ValueError("api_key must be at least 8 characters (leave it unset for none)")
        if self.max_batch_bytes < self.max_upload_bytes:
            raise ValueError(
                "max_batch_bytes must be at least max_upload_bytes "
                f"({self.max_batch_bytes} < {self.max_upload_bytes})"
            )
        return self


class SettingsError(ValueError):
    """The environment holds a value the service cannot run with."""


def _env_name(field: str) -> str:
    return "MODEL_PATH" if field == "model_path" else f"{ENV_PREFIX}{field.upper()}"


def load_settings() -> Settings:
    """Settings from the environment, or a SettingsError with one line per bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            where = _env_name(loc[0]) if loc else "settings"
            got = f" (got {err['input']!r})" if loc and not isinstance(err["input"], dict) else ""
            problems.append(f"{where}: {err['msg']}{got}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def unknown_variables() -> list[str]:
    """CNN_SERVE_* variables that match no setting: most likely typos."""
    known = {_env_name(name) for name in Settings.model_fields} | {f"{ENV_PREFIX}MODEL_PATH"}
    return sorted(
        name for name in os.environ if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known
    )


class NotStartedError(RuntimeError):
    """A request arrived before the lifespan read the settings (or after shutdown)."""


async def get_settings(request: Request) -> Settings:
    """FastAPI dependency: the settings the running app was started with. (`async` so that
    FastAPI calls it inline; a plain `def` dependency costs a thread-pool hop per request.)"""
    settings: Settings | None = request.app.state.settings
    if settings is None:
        raise NotStartedError("the service has not started")
    return settings
