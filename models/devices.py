"""Device names as users type them: auto, cpu, cuda, cuda:N, mps."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec: str) -> torch.device:
    """'auto' → CUDA when present, else Apple MPS when present, else CPU.

    An explicit device that is not there is an error, not a silent CPU fallback.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {spec!r} asked for, but Apple MPS is not available here")
        return device
    raise ValueError(f"unsupported device {spec!r}; use {DEVICE_CHOICES}")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown CPU" where there is none."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown CPU"


# The instruction sets that decide how fast training and serving run on a CPU.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of SPEED_FLAGS the CPU reports (empty where /proc/cpuinfo is not there)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("flags", "Features"):
                present = set(value.split())
                return [f for f in SPEED_FLAGS if f in present]
    except OSError:
        pass
    return []


def cpu_has_fast_bf16() -> bool:
    """bf16 only pays off on CPUs with native bf16 dot products (AVX512-BF16 or AMX).

    Elsewhere (plain AVX2, for one) PyTorch emulates it and a step runs ~10× slower than fp32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def inference_precision(device: torch.device, requested: str) -> str:
    """`auto` → bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU
    with AVX512-BF16 or AMX), else fp32; `fp32` and `bf16` as asked."""
    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {requested!r}; choose one of: auto, fp32, bf16")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The mixed-precision context for a precision name: none for fp32, else torch.autocast
    in bf16 or fp16. Training, the service and the benchmarks all enter it the same way."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
