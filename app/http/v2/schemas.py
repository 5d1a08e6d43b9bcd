"""The bodies of the Open Inference Protocol routes (/v2), for /docs and /openapi.json.

The handlers in app/http/routes/v2.py read the inference request and write their JSON
themselves (codec.py, orjson); the models and schemas here only describe them, as the
protocol defines them, with what this service puts in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.http.v2.codec import HEADER_LENGTH


class V2Error(BaseModel):
    """Every error on /v2, whoever wrote it (app/http/v2/errors.py)."""

    error: str = Field(description="what was wrong and what is accepted")
    request_id: str | None = Field(None, description="for 5xx: quote it when reporting")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool
    error: str | None = Field(None, description="why not, when live is false")


class ServerReady(BaseModel):
    ready: bool
    error: str | None = Field(None, description="why not, when ready is false")


class ModelReady(BaseModel):
    name: str
    ready: bool
    error: str | None = Field(None, description="why not, when ready is false")


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="the checkpoint sha256's first 12 hex digits")
    platform: str
    inputs: list[TensorMetadata] = Field(description="a request sends exactly one of them")
    outputs: list[TensorMetadata]


class OutputTensor(BaseModel):
    name: Literal["probabilities", "class"]
    datatype: Literal["FP32", "BYTES"]
    shape: list[int]
    data: list[Any] | None = Field(None, description="flat, row-major; absent when binary")
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` when the data follows the JSON header"
    )


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, when it gave one")
    outputs: list[OutputTensor]


def _names(*names: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(names)}


# The inference request, which the handler parses itself (app/http/v2/codec.py), so it is
# written out here rather than as a model. With the binary tensor data extension the body is
# this JSON followed by the tensors' bytes (application/octet-stream).
INFER_REQUEST: dict[str, Any] = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "description": "echoed in the response"},
        "parameters": {"type": "object", "description": "`binary_data_output`: true for "
                                                          "binary outputs"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "required": ["name", "datatype", "shape"],
            "description": "`image`: BYTES [N] or [N, 1], encoded images (base64 in JSON); "
                           "`pixels`: UINT8 (0 … 255) or FP32 (0.0 … 1.0) [N, 3, S, S]",
            "properties": {
                "name": _names("image", "pixels"),
                "datatype": _names("BYTES", "UINT8", "FP32"),
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "data": {"type": "array", "description": "flat or nested, row-major"},
                "parameters": {"type": "object", "description": "`binary_data_size` when the "
                                                                  "data follows the JSON"},
            },
        }},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": _names("probabilities", "class"),
                           "parameters": {"type": "object",
                                          "description": "`binary_data`: true or false"}},
        }},
    },
}


INFER_OPENAPI = {
    "parameters": [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": HEADER_LENGTH, "in": "header", "required": False,
         "schema": {"type": "integer", "minimum": 1},
         "description": "binary tensor data extension: the JSON header's length in bytes"},
    ],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": INFER_REQUEST, "example": {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": ["<the PNG file in base64>"]}],
        }},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }},
}


def infer_openapi(with_version: bool) -> dict[str, Any]:
    """The inference routes' parameters and body, which the handler reads itself."""
    if not with_version:
        return INFER_OPENAPI
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "the checkpoint's sha256, in full or its first 12 hex digits"}
    return {**INFER_OPENAPI, "parameters": [*INFER_OPENAPI["parameters"], version]}
