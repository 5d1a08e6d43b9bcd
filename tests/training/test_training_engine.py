"""How the trainer picks its precision: bf16 only where the hardware runs it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.engine import choose_precision, cpu_has_fast_bf16

CPU = torch.device("cpu")


def _cpu_features(monkeypatch: pytest.MonkeyPatch, *, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16")],
)
def test_auto_on_cpu_uses_bf16_only_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expected: str
) -> None:
    _cpu_features(monkeypatch, avx512_bf16=avx512_bf16, amx=amx)
    assert choose_precision(CPU, "auto") == expected


def test_auto_on_cuda_prefers_bf16_and_falls_back_to_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision(cuda, "auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_precision(cuda, "auto") == "fp16"


def test_an_explicit_precision_is_kept_even_without_native_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _cpu_features(monkeypatch, avx512_bf16=False, amx=False)
    assert choose_precision(CPU, "bf16") == "bf16"
    assert choose_precision(CPU, "fp32") == "fp32"


def test_fp16_on_cpu_and_unknown_precisions_are_refused() -> None:
    with pytest.raises(ValueError, match="on CPU use bf16 or fp32"):
        choose_precision(CPU, "fp16")
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        choose_precision(CPU, "int8")


def test_native_bf16_detection_agrees_with_the_kernel_cpu_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    assert cpu_has_fast_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)
