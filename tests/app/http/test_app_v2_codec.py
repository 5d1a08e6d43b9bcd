"""app/http/v2/codec.py: Open Inference Protocol request and response bodies, JSON and binary."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from app.http.v2.codec import (
    InputTensor,
    OutputTensor,
    ProtocolError,
    bytes_elements,
    encode_response,
    numeric_array,
    parse_request,
)


def with_binary(header: dict, *chunks: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), str(len(head))


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


AFTER = b"<end of the JSON header>"
IMAGE_JSON = {"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk=", "eW8="]}


# --- requests ----------------------------------------------------------------------------------

def test_parse_json_request_keeps_id_inputs_and_output_choices() -> None:
    body = orjson.dumps({
        "id": "r1", "parameters": {"binary_data_output": True}, "inputs": [IMAGE_JSON],
        "outputs": [{"name": "class"}, {"name": "probabilities",
                                         "parameters": {"binary_data": False}}],
    })
    request = parse_request(body, None)
    assert request.id == "r1"
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", (2,))
    assert tensor.raw is None
    # An output without its own binary_data follows the request's binary_data_output.
    assert [(o.name, o.binary) for o in request.outputs] == [("class", True),
                                                            ("probabilities", False)]


def test_parse_request_without_outputs_asks_for_all_in_json() -> None:
    request = parse_request(orjson.dumps({"inputs": [IMAGE_JSON]}), None)
    assert request.outputs is None and request.binary_output is False and request.id is None


def test_binary_inputs_take_their_bytes_in_order_after_the_json_header() -> None:
    first, second = length_prefixed(b"\x89PNG", b""), bytes(range(6))
    body, length = with_binary({"inputs": [
        {"name": "a", "datatype": "BYTES", "shape": [2],
         "parameters": {"binary_data_size": len(first)}},
        {"name": "b", "datatype": "UINT8", "shape": [6],
         "parameters": {"binary_data_size": len(second)}},
    ]}, first, second)
    a, b = parse_request(body, length).inputs
    assert a.raw == first and b.raw == second and a.data is None


@pytest.mark.parametrize(("body", "header_length", "message"), [
    (b"{", None, "not valid JSON"),
    (b"{", None, "Inference-Header-Content-Length"),  # the hint for a binary body sent bare
    (b"[]", None, "must be a JSON object"),
    (b'{"inputs": []}', None, "'inputs' must be a non-empty list"),
    (b'{"inputs": [{"name": "image", "shape": [1], "data": ["x"]}]}', None, "'datatype'"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [-1], "data": []}]}', None,
     "non-negative integers"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1]}]}', None, "either 'data'"),
    (b'{"id": 5, "inputs": []}', None, "'id' must be a string"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], "data": ["x"], '
     b'"parameters": {"shared_memory_region": "r"}}]}', None, "shared memory is not supported"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], "data": ["x"]}], '
     b'"outputs": [{"name": "class", "parameters": {"classification": 3}}]}', None,
     "classification extension is not supported"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], "data": ["x"]}], '
     b'"parameters": {"binary_data_output": "yes"}}', None, "must be true or false"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], '
     b'"parameters": {"binary_data_size": 10}}]}' + AFTER + b"xx", AFTER, "runs past"),
    (b'{"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}' + AFTER
     + b"xx", AFTER, "belong to no input"),
    (b'{"inputs": []}', "99", "at most the body's"),
    (b'{"inputs": []}', "-1", "must be the length"),
])
def test_parse_request_rejects_malformed_bodies(
    body: bytes, header_length: str | None, message: str
) -> None:
    if header_length == AFTER:  # the JSON header is what comes before AFTER
        header, _, tail = body.partition(AFTER)
        body, header_length = header + tail, str(len(header))
    with pytest.raises(ProtocolError, match=message):
        parse_request(body, header_length)


# --- input tensors -----------------------------------------------------------------------------

def test_bytes_elements_from_json_are_the_strings_utf8_encoded() -> None:
    tensor = InputTensor("image", "BYTES", (2, 1), data=[["aGk="], ["é"]])
    assert bytes_elements(tensor) == [b"aGk=", "é".encode()]


def test_bytes_elements_from_binary_are_length_prefixed_and_may_be_empty() -> None:
    tensor = InputTensor("image", "BYTES", (3,), raw=length_prefixed(b"ab", b"", b"\x00\xff"))
    assert bytes_elements(tensor) == [b"ab", b"", b"\x00\xff"]


@pytest.mark.parametrize(("tensor", "message"), [
    (InputTensor("i", "BYTES", (2,), data=["a"]), "holds 2 elements, the data 1"),
    (InputTensor("i", "BYTES", (1,), data=[5]), "must be strings"),
    (InputTensor("i", "BYTES", (1,), raw=b"\x01\x00"), "inside an element's 4-byte length"),
    (InputTensor("i", "BYTES", (1,), raw=b"\x09\x00\x00\x00abc"), "claims 9 bytes, 3 are left"),
    (InputTensor("i", "BYTES", (1,), raw=length_prefixed(b"a", b"b")), "the data 2"),
])
def test_bytes_elements_reject_data_that_does_not_fit(tensor: InputTensor, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        bytes_elements(tensor)


def test_numeric_json_data_may_be_flat_or_nested() -> None:
    flat = InputTensor("p", "UINT8", (2, 2), data=[0, 1, 254, 255])
    nested = InputTensor("p", "UINT8", (2, 2), data=[[0, 1], [254, 255]])
    for tensor in (flat, nested):
        array = numeric_array(tensor)
        assert array.dtype == np.uint8 and array.tolist() == [[0, 1], [254, 255]]


def test_numeric_binary_data_is_little_endian() -> None:
    raw = struct.pack("<3f", 0.0, 0.5, 1.0)
    array = numeric_array(InputTensor("p", "FP32", (3,), raw=raw))
    assert array.dtype == np.float32 and array.tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(("tensor", "message"), [
    (InputTensor("p", "UINT8", (2,), data=[1, 256]), "0 … 255"),
    (InputTensor("p", "UINT8", (2,), data=[-1, 2]), "0 … 255"),
    (InputTensor("p", "UINT8", (2,), data=[0.5, 2]), "list of integers"),
    (InputTensor("p", "UINT8", (2,), data=[True, False]), "list of integers"),
    (InputTensor("p", "FP32", (2,), data=["0.5", "1"]), "list of numbers"),
    (InputTensor("p", "FP32", (2, 2), data=[[0.5, 1], [0.5]]), "evenly nested"),
    (InputTensor("p", "FP32", (3,), data=[0.5, 1]), "holds 3 elements, the data 2"),
    (InputTensor("p", "FP32", (2,), raw=b"\x00" * 7), "is 8 bytes, binary_data_size says 7"),
])
def test_numeric_array_rejects_data_that_does_not_fit(tensor: InputTensor, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        numeric_array(tensor)


# --- responses ---------------------------------------------------------------------------------

def test_json_response_has_the_data_inline_and_no_binary_part() -> None:
    outputs = [OutputTensor("probabilities", "FP32", (1, 2), [0.25, 0.75], binary=False),
               OutputTensor("class", "BYTES", (1,), ["cat"], binary=False)]
    body, header_length = encode_response({"model_name": "m", "id": "r1"}, outputs)
    assert header_length == len(body)
    assert orjson.loads(body) == {"model_name": "m", "id": "r1", "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "class", "datatype": "BYTES", "shape": [1], "data": ["cat"]},
    ]}


def test_binary_outputs_follow_the_json_header_with_their_sizes() -> None:
    outputs = [OutputTensor("class", "BYTES", (2,), ["cat", "dog"], binary=True),
               OutputTensor("probabilities", "FP32", (1, 2), [0.25, 0.75], binary=True)]
    body, header_length = encode_response({"model_name": "m"}, outputs)
    header, binary = orjson.loads(body[:header_length]), body[header_length:]
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert all("data" not in o for o in header["outputs"])
    assert sizes == [14, 8]
    assert binary == length_prefixed(b"cat", b"dog") + struct.pack("<2f", 0.25, 0.75)
