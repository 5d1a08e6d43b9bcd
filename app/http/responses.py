"""The error responses each route documents (`responses=` on the routes), built once here so
that a status means the same thing, with the same body and headers, on every route.

Errors are `{"detail": ...}` (ErrorBody), on /v2 `{"error": ...}` (V2Error). The 401 is listed
where a configured key is checked; app/http/openapi.py drops it, with the security
requirements, while no key is set. Every response's X-Request-ID is added there too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.http.schemas import ErrorBody
from app.http.v2.schemas import ModelReady, ServerLive, ServerReady, V2Error
from models.images import ACCEPTED

Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {"Retry-After": {
    "description": "seconds to wait before sending the request again",
    "required": True, "schema": {"type": "integer", "minimum": 0},
}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {
    "description": "the scheme to authenticate with", "required": True,
    "schema": {"type": "string", "const": "Bearer"},
}}

# (description, headers) of the statuses of the routes that run the model.
_INFERENCE: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("empty, truncated or corrupt image, or a malformed body", {}),
    401: ("an API key is configured and the request's is missing or wrong",
          WWW_AUTHENTICATE),
    404: ("no such model or version", {}),
    408: ("the body did not arrive within CNN_SERVE_BODY_TIMEOUT_S; the connection is "
          "closed", {}),
    413: ("over the byte limit, the pixel limit, or too many images", {}),
    415: (f"not an image, or not one of {ACCEPTED}", {}),
    422: ("missing multipart field, or top_k out of range", {}),
    500: ("a server bug; the body names the request id to quote", {}),
    503: ("the queue is full, or the inference worker is down or restarting", RETRY_AFTER),
    504: ("no result within CNN_SERVE_REQUEST_TIMEOUT_S", {}),
}


def _error(model: Any, description: str,
           headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"model": model, "description": description}
    if headers:
        response["headers"] = headers
    return response


def _inference(model: type[BaseModel], statuses: tuple[int, ...]) -> Responses:
    return {status: _error(model, *_INFERENCE[status]) for status in statuses}


PREDICT: Responses = _inference(ErrorBody, (400, 401, 408, 413, 415, 422, 500, 503, 504))
"""POST /predict and /predict/batch."""

MODEL_INFO: Responses = {
    503: _error(ErrorBody, "the model is not loaded (starting or shutting down)", RETRY_AFTER),
}
"""GET /model."""

V2_INFER: Responses = _inference(V2Error, (400, 401, 404, 408, 413, 500, 503, 504))
"""POST /v2/models/{name}[/versions/{version}]/infer: a bad image is bad tensor data, a 400
whatever its format."""

V2_MODEL: Responses = {
    404: _error(V2Error, "no such model or version"),
    503: _error(V2Error, "the model is not loaded (starting or shutting down)", RETRY_AFTER),
}
"""GET /v2/models/{name}[/versions/{version}] (metadata)."""

V2_MODEL_READY: Responses = {
    404: _error(V2Error, "no such model or version"),
    503: _error(ModelReady | V2Error,
                "not ready, and why; or, with Retry-After, the model is not loaded",
                {"Retry-After": {**RETRY_AFTER["Retry-After"], "required": False}}),
}
"""GET /v2/models/{name}[/versions/{version}]/ready."""

V2_SERVER_LIVE: Responses = {
    503: _error(ServerLive, "the inference worker has crashed or hangs"),
}
V2_SERVER_READY: Responses = {
    503: _error(ServerReady, "not ready, and why (as /healthz)"),
}
