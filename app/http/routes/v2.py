"""The Open Inference Protocol (KServe V2, REST) beside the app's own API: health, server and
model metadata, and inference.

Inference goes the way /predict goes: the same API key and body limits (UploadGuardMiddleware,
before the body is read), the same service (decode pool, micro-batcher, queue, timeout,
metrics) and the same probabilities. The tensors are in app/http/v2/model.py, the body
encoding in app/http/v2/codec.py. Every error is `{"error": "..."}`: written here, or
reshaped by app/http/v2/errors.py when it comes from the rest of the app.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.http import responses
from app.http.dependencies import metrics_of, service_of, settings_of
from app.http.disconnect import unless_disconnected
from app.http.routes.direct import DirectRoute
from app.http.v2 import model as v2_model
from app.http.v2.codec import HEADER_LENGTH, ProtocolError, encode_response, parse_request
from app.http.v2.errors import V2_PREFIX, v2_error
from app.http.v2.schemas import (
    InferResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    infer_openapi,
)
from app.inference.predictor import Predictor
from models.images import ImageError, ImageTooLargeError

router = APIRouter(prefix=V2_PREFIX, tags=["open inference protocol"])

EXTENSIONS = ["binary_tensor_data"]
MODEL = "/models/{name}"
VERSION = "/models/{name}/versions/{version}"


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


def _predictor(request: Request, name: str, version: str | None) -> Predictor:
    predictor = service_of(request).predictor  # 503 while no model is loaded
    v2_model.check_model(predictor, name, version)
    return predictor


@router.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata(request: Request) -> Response:
    app = request.app
    return _json({"name": app.title, "version": app.version, "extensions": EXTENSIONS})


@router.get("/health/live", summary="Is the server live?", response_model=ServerLive,
            responses=responses.V2_SERVER_LIVE,
            description="200 unless the inference worker has crashed or hangs (503).")
async def server_live(request: Request) -> Response:
    service = getattr(request.app.state, "service", None)
    failure = None if service is None else service.failure()
    if failure is not None:
        return _json({"live": False, "error": failure}, 503)
    return _json({"live": True})


def _readiness(request: Request) -> str | None:
    """Why predictions cannot be answered now (what /healthz says), or None."""
    service = getattr(request.app.state, "service", None)
    return "the model is not loaded" if service is None else service.problem()


@router.get("/health/ready", summary="Is the server ready?", response_model=ServerReady,
            responses=responses.V2_SERVER_READY,
            description="As /healthz: 200 when the model is loaded and the inference worker "
                        "serves; 503 with the reason otherwise.")
async def server_ready(request: Request) -> Response:
    problem = _readiness(request)
    if problem is not None:
        return _json({"ready": False, "error": problem}, 503)
    return _json({"ready": True})


async def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    try:
        predictor = _predictor(request, name, version)
    except v2_model.ModelNotFoundError as exc:
        return v2_error(404, str(exc))
    return _json(v2_model.metadata(predictor))


@router.get(MODEL, summary="Model metadata", response_model=ModelMetadata,
            responses=responses.V2_MODEL)
async def model_metadata(request: Request, name: str) -> Response:
    return await _model_metadata(request, name, None)


@router.get(VERSION, summary="Model metadata, of one version", response_model=ModelMetadata,
            responses=responses.V2_MODEL)
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return await _model_metadata(request, name, version)


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    try:
        _predictor(request, name, version)
    except v2_model.ModelNotFoundError as exc:
        return v2_error(404, str(exc))
    problem = _readiness(request)
    if problem is not None:
        return _json({"name": name, "ready": False, "error": problem}, 503)
    return _json({"name": name, "ready": True})


@router.get(MODEL + "/ready", summary="Is the model ready?", response_model=ModelReady,
            responses=responses.V2_MODEL_READY)
async def model_ready(request: Request, name: str) -> Response:
    return await _model_ready(request, name, None)


@router.get(VERSION + "/ready", summary="Is this version of the model ready?",
            response_model=ModelReady, responses=responses.V2_MODEL_READY)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _model_ready(request, name, version)


INFER_RESPONSES = {
    **responses.V2_INFER,
    200: {"description": "JSON; with binary outputs, the JSON header and then their bytes",
          "content": {"application/octet-stream": {"schema": {"type": "string",
                                                              "format": "binary"}}},
          "headers": {HEADER_LENGTH: {
              "description": "with binary outputs: the JSON header's length in bytes",
              "schema": {"type": "integer", "minimum": 1}}}},
}


def _image_error(exc: ImageError) -> Response:
    # A bad image is bad tensor data: 400, whatever its format (the app's 415 is about a
    # request's media type); 413 for too many pixels, as everywhere.
    return v2_error(413 if isinstance(exc, ImageTooLargeError) else 400, str(exc))


async def infer(request: Request) -> Response:
    service, settings, params = service_of(request), settings_of(request), request.path_params
    predictor = service.predictor
    try:
        v2_model.check_model(predictor, params["name"], params.get("version"))
    except v2_model.ModelNotFoundError as exc:
        return v2_error(404, str(exc))
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        return v2_error(400, f"Content-Encoding {encoding!r} is not supported; send the body "
                             "uncompressed")
    try:
        parsed = parse_request(await request.body(), request.headers.get(HEADER_LENGTH))
        wanted = v2_model.requested_outputs(parsed)
        items, labels = v2_model.payloads(parsed, predictor, settings)
    except ProtocolError as exc:
        status = 413 if isinstance(exc, v2_model.TooLargeError) else 400
        return v2_error(status, str(exc))
    try:
        scored = await unless_disconnected(request.receive,
                                           service.classify_with_models(items, labels))
    except ImageError as exc:
        return _image_error(exc)
    # Name the model that computed the rows: a reload (app/reload.py) may have swapped it.
    used = {id(s.predictor): s.predictor for s in scored}
    if len(used) > 1:  # one response names one version
        return v2_error(503, "the model was reloaded while this request ran and its images "
                             "went through both versions; send it again",
                        {"Retry-After": str(settings.retry_after_s)})
    [predictor] = used.values()
    try:
        v2_model.check_model(predictor, params["name"], params.get("version"))
    except v2_model.ModelNotFoundError as exc:
        return v2_error(404, str(exc))
    rows = [s.probabilities for s in scored]
    best = v2_model.best_classes(rows, predictor.classes)
    metrics = metrics_of(request)
    for name in best:
        metrics.count_prediction(name)
    header: dict[str, Any] = {"model_name": predictor.name,
                              "model_version": v2_model.version_of(predictor)}
    if parsed.id is not None:
        header["id"] = parsed.id
    body, json_length = encode_response(header, v2_model.outputs(wanted, rows, best))
    if json_length == len(body):
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(json_length)})


# Without FastAPI's per-request handler, as /predict (routes/direct.py).
for _path, _versioned in ((MODEL + "/infer", False), (VERSION + "/infer", True)):
    router.add_api_route(
        _path, infer, methods=["POST"], route_class_override=DirectRoute,
        summary="Inference" + (", on one version" if _versioned else ""),
        response_model=InferResponse, responses=INFER_RESPONSES,
        openapi_extra=infer_openapi(_versioned),
    )
