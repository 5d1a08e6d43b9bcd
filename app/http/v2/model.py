"""The served classifier as the Open Inference Protocol sees it: its name, version and tensors,
and the mapping between those tensors and what the inference service takes and gives.

Inputs (a request sends exactly one):
- `image`, BYTES, shape [N] or [N, 1]: encoded images (PNG, JPEG, …). In the binary tensor
  data extension each element is the file's bytes; in JSON, where a BYTES element is a string,
  it is the file in standard base64 (tritonclient refuses bytes that are not UTF-8 in JSON).
- `pixels`, UINT8 (0 … 255) or FP32 (0.0 … 1.0, rounded to the nearest 1/255), shape
  [N, 3, S, S]: RGB pixels before the model's normalisation, S the checkpoint's input size.
  No resizing: a client that sends pixels has already prepared them.
Outputs: `probabilities` FP32 [N, C] (the calibrated softmax(logits / T) that /predict gives),
`class` BYTES [N] (the most probable class's name).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np
import torch

from app.http.v2.codec import (
    BYTES,
    NUMERIC,
    InferRequest,
    InputTensor,
    OutputTensor,
    ProtocolError,
    RequestedOutput,
    bytes_elements,
    numeric_array,
)
from app.inference.predictor import SHA_PREFIX, Predictor
from app.settings import Settings

PLATFORM = "pytorch"
IMAGE, PIXELS = "image", "pixels"
PROBABILITIES, CLASS = "probabilities", "class"
OUTPUTS = (PROBABILITIES, CLASS)


class TooLargeError(ProtocolError):
    """Over a byte or count limit: a 413."""


class ModelNotFoundError(LookupError):
    """No such model, or not this version of it: a 404."""


def version_of(predictor: Predictor) -> str:
    """The version reported everywhere: the checkpoint sha256's first 12 hex digits, as in
    /predict and /healthz."""
    return predictor.sha256[:SHA_PREFIX]


def check_model(predictor: Predictor, name: str, version: str | None) -> None:
    """Raises ModelNotFoundError unless `name` (and `version`: the full sha256 or its
    12-digit prefix) is the served model."""
    if name != predictor.name:
        raise ModelNotFoundError(f"no model named {name!r}; this server serves "
                                 f"{predictor.name!r}")
    if version is not None and version.lower() not in (predictor.sha256, version_of(predictor)):
        raise ModelNotFoundError(f"model {name!r} has no version {version!r}; it has "
                                 f"{version_of(predictor)!r} (the checkpoint's sha256)")


def metadata(predictor: Predictor) -> dict[str, object]:
    size = predictor.input_size
    return {
        "name": predictor.name,
        "versions": [version_of(predictor)],
        "platform": PLATFORM,
        "inputs": [
            {"name": IMAGE, "datatype": BYTES, "shape": [-1]},
            {"name": PIXELS, "datatype": "UINT8", "shape": [-1, 3, size, size]},
        ],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(predictor.classes)]},
            {"name": CLASS, "datatype": BYTES, "shape": [-1]},
        ],
    }


def requested_outputs(request: InferRequest) -> list[RequestedOutput]:
    """The outputs to send, in order: those asked for, or all of them."""
    if not request.outputs:  # absent or empty
        return [RequestedOutput(name, request.binary_output) for name in OUTPUTS]
    names = [output.name for output in request.outputs]
    for name in names:
        if name not in OUTPUTS:
            raise ProtocolError(f"unknown output {name!r}; this model's outputs are "
                                f"{', '.join(map(repr, OUTPUTS))}")
        if names.count(name) > 1:
            raise ProtocolError(f"output {name!r} is requested more than once")
    return request.outputs


def _count(tensor: InputTensor, settings: Settings) -> int:
    n = tensor.shape[0]
    if n == 0:
        raise ProtocolError(f"input {tensor.name!r} holds no images")
    if n > settings.max_batch_files:
        raise TooLargeError(f"{n} images in one request; the limit is "
                            f"{settings.max_batch_files}")
    return n


def _images(tensor: InputTensor, settings: Settings) -> list[bytes]:
    if tensor.datatype != BYTES or len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in (
        (), (1,)
    ):
        raise ProtocolError(f"input {IMAGE!r} must be BYTES of shape [N] or [N, 1] (encoded "
                            f"images); got {tensor.datatype} {list(tensor.shape)}")
    _count(tensor, settings)
    images = bytes_elements(tensor)
    if tensor.raw is None:  # JSON: base64 text
        try:
            images = [base64.b64decode(text, validate=True) for text in images]
        except binascii.Error:
            raise ProtocolError(f"input {IMAGE!r}: in JSON each image must be base64 text; "
                                "or send the raw bytes with the binary tensor data "
                                "extension") from None
    limit = settings.max_upload_bytes
    for i, data in enumerate(images):
        if len(data) > limit:
            raise TooLargeError(f"{IMAGE}[{i}] is {len(data):,} bytes, over the {limit:,}-byte "
                                "limit per image; send a smaller image")
    return images


def _pixels(tensor: InputTensor, settings: Settings, size: int) -> list[torch.Tensor]:
    if tensor.datatype not in NUMERIC or len(tensor.shape) != 4 or tensor.shape[1:] != (
        3, size, size
    ):
        raise ProtocolError(f"input {PIXELS!r} must be UINT8 or FP32 of shape [N, 3, {size}, "
                            f"{size}] (RGB, the model's input size); got {tensor.datatype} "
                            f"{list(tensor.shape)}")
    _count(tensor, settings)
    values = numeric_array(tensor)
    if tensor.datatype == "FP32":
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise ProtocolError(f"input {PIXELS!r}: FP32 pixels must be 0.0 … 1.0")
        values = np.rint(values * 255)
    batch = torch.from_numpy(np.array(values, dtype=np.uint8))  # a copy: frombuffer's is read-only
    return list(batch.unbind(0))


def payloads(
    request: InferRequest, predictor: Predictor, settings: Settings
) -> tuple[Sequence[bytes | torch.Tensor], list[str]]:
    """What the service classifies (image bytes or uint8 (3, S, S) pixels), with labels that
    name each image in error messages."""
    if len(request.inputs) != 1:
        raise ProtocolError(f"send exactly one input, {IMAGE!r} or {PIXELS!r}; got "
                            f"{len(request.inputs)}")
    [tensor] = request.inputs
    if tensor.name == IMAGE:
        items: Sequence[bytes | torch.Tensor] = _images(tensor, settings)
    elif tensor.name == PIXELS:
        items = _pixels(tensor, settings, predictor.input_size)
    else:
        raise ProtocolError(f"unknown input {tensor.name!r}; this model takes {IMAGE!r} (BYTES, "
                            f"encoded images) or {PIXELS!r} (UINT8 or FP32 pixels)")
    return items, [f"{tensor.name}[{i}]" for i in range(len(items))]


def best_classes(rows: Sequence[Sequence[float]], classes: Sequence[str]) -> list[str]:
    """Each row's most probable class (the first, on a tie), as /predict picks it."""
    return [classes[max(range(len(row)), key=row.__getitem__)] for row in rows]


def outputs(
    wanted: Sequence[RequestedOutput], rows: Sequence[Sequence[float]], best: Sequence[str]
) -> list[OutputTensor]:
    n, built = len(rows), []
    for output in wanted:
        if output.name == PROBABILITIES:
            flat = [p for row in rows for p in row]
            width = len(rows[0]) if rows else 0
            built.append(OutputTensor(PROBABILITIES, "FP32", (n, width), flat, output.binary))
        else:
            built.append(OutputTensor(CLASS, BYTES, (n,), list(best), output.binary))
    return built
