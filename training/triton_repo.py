"""A Triton Inference Server model repository for one exported ONNX model:

    DIR/<name>/config.pbtxt   backend onnxruntime, the tensors (dims without the batch
                              dimension), max_batch_size and dynamic batching
    DIR/<name>/labels.txt     the class names, one a line: the `label_filename` of the
                              probabilities output, for Triton's classification extension
    DIR/<name>/1/model.onnx   version 1

The folder is built under a hidden name beside its final place and renamed into place
(training/staging.py), so a Triton polling DIR never sees half a model, and a failed write
leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.staging import WriteError, discard, stage_folder

LABELS = "labels.txt"
VERSION = "1"
# What a model's folder may be called: Triton takes it as the model name in URLs.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton's name: TYPE_UINT8, TYPE_FP32, …
    dims: tuple[int, ...]  # without the batch dimension
    label_filename: str | None = None


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} cannot name a Triton model: use letters, digits, '_', '.' "
                         "and '-', starting with a letter or digit")
    return name


def _tensor(t: Tensor) -> str:
    lines = [f'    name: "{t.name}"', f"    data_type: {t.data_type}",
             f"    dims: [ {', '.join(map(str, t.dims))} ]"]
    if t.label_filename:
        lines.append(f'    label_filename: "{t.label_filename}"')
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_pbtxt(
    name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor], *, max_batch_size: int,
    max_queue_delay_us: int,
) -> str:
    """The model configuration, in protobuf text format."""
    return "\n".join([
        f'name: "{check_name(name)}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        "input [\n" + ",\n".join(map(_tensor, inputs)) + "\n]",
        "output [\n" + ",\n".join(map(_tensor, outputs)) + "\n]",
        "",
    ])


def stage_repository(folder: Path, config: str, model: bytes, classes: Sequence[str]) -> Path:
    """The model's folder (to be `folder`), written under a temporary name beside it;
    training.staging.commit moves it into place. Raises WriteError; nothing is left then."""
    staged = stage_folder(folder)
    try:
        (staged / "config.pbtxt").write_text(config, encoding="utf-8")
        (staged / LABELS).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        (staged / VERSION).mkdir()
        (staged / VERSION / "model.onnx").write_bytes(model)
    except BaseException as exc:
        discard(staged)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {folder}: {exc.strerror or exc}") from None
        raise
    return staged
