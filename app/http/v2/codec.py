"""Open Inference Protocol (KServe V2) tensors over REST: the inference request and response
bodies, as JSON and with the binary tensor data extension.

Knows the protocol, not the model. A body is a JSON header, optionally followed by binary
tensor data; the `Inference-Header-Content-Length` header says where the JSON ends. A tensor's
binary data is little-endian and row-major; a BYTES element is a 4-byte little-endian length
and then its bytes. In JSON a tensor's `data` is flat or nested in row-major order, and a BYTES
element is a string (its UTF-8 bytes).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

HEADER_LENGTH = "Inference-Header-Content-Length"
BYTES = "BYTES"
NUMERIC = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}  # what this service takes
_LENGTH = struct.Struct("<I")


class ProtocolError(ValueError):
    """A request body the protocol (or this service's part of it) does not allow: a 400."""


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None  # from JSON
    raw: bytes | None = None  # from the binary section

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool  # `binary_data_output`: the default for outputs that do not say


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # FP32 or BYTES
    shape: tuple[int, ...]
    values: Sequence[float] | Sequence[str]  # flat, row-major
    binary: bool


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], key: str, what: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(f"{what}: parameter {key!r} must be true or false")
    return value


def _no_shared_memory(parameters: dict[str, Any], what: str) -> None:
    if any(key.startswith("shared_memory_") for key in parameters):
        raise ProtocolError(f"{what}: shared memory is not supported; send the data in the body")


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise ProtocolError(f"{what}: 'shape' must be a list of non-negative integers")
    return tuple(value)


def _input(entry: Any, index: int) -> tuple[InputTensor, int | None]:
    """One `$request_input`, and its binary_data_size when its data is in the binary part."""
    entry = _object(entry, f"inputs[{index}]")
    name = entry.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{index}]: 'name' must be a string")
    what = f"input {name!r}"
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise ProtocolError(f"{what}: 'datatype' must be a string such as \"BYTES\"")
    parameters = _object(entry.get("parameters") or {}, f"{what}: 'parameters'")
    _no_shared_memory(parameters, what)
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ProtocolError(f"{what}: 'binary_data_size' must be a non-negative integer")
    if (size is None) == ("data" not in entry):
        raise ProtocolError(f"{what}: give either 'data' or the binary_data_size parameter "
                            "(binary tensor data extension), not both or neither")
    tensor = InputTensor(name, datatype, _shape(entry.get("shape"), what), entry.get("data"))
    return tensor, size


def _output(entry: Any, index: int, default: bool) -> RequestedOutput:
    entry = _object(entry, f"outputs[{index}]")
    name = entry.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"outputs[{index}]: 'name' must be a string")
    what = f"output {name!r}"
    parameters = _object(entry.get("parameters") or {}, f"{what}: 'parameters'")
    _no_shared_memory(parameters, what)
    if parameters.get("classification"):
        raise ProtocolError(f"{what}: the classification extension is not supported; ask for "
                            "the 'class' output instead")
    binary = _flag(parameters, "binary_data", what)
    return RequestedOutput(name, default if binary is None else binary)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The inference request in `body`; binary input data is attached to its tensor."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {header_length!r}; it must be the length "
                                f"in bytes of the JSON header, at most the body's {len(body)}")
        header, binary = body[:int(header_length)], body[int(header_length):]
    try:
        content = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        hint = "" if header_length else f" (binary tensor data needs the {HEADER_LENGTH} header)"
        raise ProtocolError(f"the inference request is not valid JSON: {exc}{hint}") from None
    content = _object(content, "the inference request")
    request_id = content.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = _object(content.get("parameters") or {}, "'parameters'")
    binary_output = bool(_flag(parameters, "binary_data_output", "the request"))
    entries = content.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    inputs, offset = [], 0
    for index, entry in enumerate(entries):
        tensor, size = _input(entry, index)
        if size is not None:
            if offset + size > len(binary):
                raise ProtocolError(f"input {tensor.name!r}: binary_data_size {size} runs past "
                                    f"the {len(binary)} bytes of binary data after the header")
            tensor = InputTensor(tensor.name, tensor.datatype, tensor.shape,
                                 raw=binary[offset:offset + size])
            offset += size
        inputs.append(tensor)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data after the header "
                            "belong to no input (binary_data_size too small?)")
    outputs = content.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise ProtocolError("'outputs' must be a list")
        outputs = [_output(entry, i, binary_output) for i, entry in enumerate(outputs)]
    return InferRequest(request_id, inputs, outputs, binary_output)


def _check_count(tensor: InputTensor, count: int) -> None:
    if count != tensor.size:
        raise ProtocolError(f"input {tensor.name!r}: shape {list(tensor.shape)} holds "
                            f"{tensor.size} elements, the data {count}")


def bytes_elements(tensor: InputTensor) -> list[bytes]:
    """A BYTES tensor's elements, row-major: the binary ones as sent, JSON strings as UTF-8."""
    if tensor.raw is None:
        data = tensor.data
        while isinstance(data, list) and data and isinstance(data[0], list):  # nested → flat
            data = [item for row in data for item in (row if isinstance(row, list) else [row])]
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise ProtocolError(f"input {tensor.name!r}: BYTES data in JSON must be strings")
        _check_count(tensor, len(data))
        return [item.encode() for item in data]
    raw, elements, at = tensor.raw, [], 0
    while at < len(raw):
        if at + _LENGTH.size > len(raw):
            raise ProtocolError(f"input {tensor.name!r}: the binary BYTES data ends inside an "
                                "element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, at)
        at += _LENGTH.size
        if at + length > len(raw):
            raise ProtocolError(f"input {tensor.name!r}: element {len(elements)} claims "
                                f"{length} bytes, {len(raw) - at} are left")
        elements.append(raw[at:at + length])
        at += length
    _check_count(tensor, len(elements))
    return elements


def numeric_array(tensor: InputTensor) -> np.ndarray:
    """A UINT8 or FP32 tensor as an array of its shape: uint8, or float32."""
    dtype = NUMERIC[tensor.datatype]
    if tensor.raw is not None:
        if len(tensor.raw) != tensor.size * dtype.itemsize:
            raise ProtocolError(f"input {tensor.name!r}: shape {list(tensor.shape)} of "
                                f"{tensor.datatype} is {tensor.size * dtype.itemsize} bytes, "
                                f"binary_data_size says {len(tensor.raw)}")
        return np.frombuffer(tensor.raw, dtype).reshape(tensor.shape)
    try:
        values = np.asarray(tensor.data)
    except ValueError:
        values = np.asarray(None)  # ragged nesting
    integral = values.dtype.kind in "iu"
    if not (integral or (values.dtype.kind == "f" and tensor.datatype == "FP32")):
        kind = "integers" if tensor.datatype == "UINT8" else "numbers"
        raise ProtocolError(f"input {tensor.name!r}: {tensor.datatype} data must be a flat or "
                            f"evenly nested list of {kind}")
    _check_count(tensor, values.size)
    if tensor.datatype == "UINT8" and values.size and not (0 <= values.min() <= values.max()
                                                           <= 255):
        raise ProtocolError(f"input {tensor.name!r}: UINT8 values must be 0 … 255")
    return values.astype(dtype).reshape(tensor.shape)


def _binary(tensor: OutputTensor) -> bytes:
    if tensor.datatype == BYTES:
        encoded = [str(value).encode() for value in tensor.values]
        return b"".join(_LENGTH.pack(len(item)) + item for item in encoded)
    return np.asarray(tensor.values, NUMERIC[tensor.datatype]).tobytes()


def encode_response(header: dict[str, Any], outputs: Sequence[OutputTensor]) -> tuple[bytes, int]:
    """The response body and the length of its JSON header (the body's length when no output
    is binary; otherwise send it as Inference-Header-Content-Length)."""
    described, chunks = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": list(tensor.shape)}
        if tensor.binary:
            chunk = _binary(tensor)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = list(tensor.values)
        described.append(entry)
    head = orjson.dumps({**header, "outputs": described})
    return head + b"".join(chunks), len(head)
