"""POST /predict and /predict/batch: validate the upload, await the service, shape the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from app.dependencies import metrics_of, service_of, settings_of
from app.disconnect import unless_disconnected
from app.errors import PayloadTooLargeError
from app.observability import Metrics
from app.predictor import Predictor
from app.schemas import BatchPrediction, ErrorBody, Prediction
from app.service import InferenceService
from app.settings import Settings
from models.images import ACCEPTED

# No router dependencies: see app/dependencies.py. The API key is checked by
# UploadGuardMiddleware and documented by app.security.document_api_key.
router = APIRouter(tags=["predict"])


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _err("empty, truncated or corrupt image"),
    401: _err("API key configured and missing or wrong"),
    413: _err("over the byte limit, the pixel limit, or too many files"),
    415: _err(f"not an image, or not one of {ACCEPTED}"),
    422: _err("missing multipart field, or top_k out of range"),
    503: _err("queue full (with Retry-After) or inference worker down"),
    504: _err("no result within the request timeout"),
}

TopK = Annotated[
    int | None,
    Query(ge=1, description="how many classes to list in top_k, 1 … number of classes "
                            "(default: CNN_SERVE_DEFAULT_TOP_K)"),
]


def _resolve_top_k(top_k: int | None, settings: Settings, predictor: Predictor) -> int:
    n = len(predictor.classes)
    if top_k is None:
        return min(settings.default_top_k, n)
    if top_k > n:
        raise RequestValidationError([{
            "type": "less_than_equal", "loc": ("query", "top_k"), "input": top_k,
            "msg": f"Input should be less than or equal to {n}, the number of classes",
        }])
    return top_k


async def _read(upload: UploadFile, limit: int, label: str) -> bytes:
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLargeError(
            f"{label} is {upload.size:,} bytes, over the {limit:,}-byte limit per image; "
            "send a smaller image"
        )
    return await upload.read()


def _shape(row: list[float], predictor: Predictor, k: int, metrics: Metrics) -> dict[str, Any]:
    """One probability row → the `Prediction` object, as a plain dict (see _json)."""
    classes = predictor.classes
    order = sorted(range(len(row)), key=row.__getitem__, reverse=True)
    best = order[0]
    metrics.predictions.labels(classes[best]).inc()
    return {
        "class": classes[best],
        "class_index": best,
        "confidence": row[best],
        "probabilities": dict(zip(classes, row, strict=True)),
        "top_k": [{"class": classes[i], "probability": row[i]} for i in order[:k]],
        "model": predictor.description,
    }


def _json(content: dict[str, Any]) -> Response:
    # The shapes are built right here, so validating them again through the response model
    # (and building pydantic objects first) only cost time: orjson writes the bytes directly.
    # `response_model=` on the routes still documents them in /docs.
    return Response(orjson.dumps(content), media_type="application/json")


async def _classify(
    request: Request, service: InferenceService, images: Sequence[bytes],
    labels: list[str] | None,
) -> list[list[float]]:
    return await unless_disconnected(request.receive, service.classify(images, labels))


@router.post(
    "/predict", response_model=Prediction, responses=ERROR_RESPONSES,
    summary="Classify one image",
    description=f"Multipart field `file`: one {ACCEPTED} image, recognised by its content.",
)
async def predict(
    request: Request,
    file: Annotated[UploadFile, File(description=f"one image: {ACCEPTED}")],
    top_k: TopK = None,
) -> Response:
    service, settings, metrics = service_of(request), settings_of(request), metrics_of(request)
    k = _resolve_top_k(top_k, settings, service.predictor)
    data = await _read(file, settings.max_upload_bytes, "the file")
    [row] = await _classify(request, service, [data], None)
    return _json(_shape(row, service.predictor, k, metrics))


@router.post(
    "/predict/batch", response_model=BatchPrediction, responses=ERROR_RESPONSES,
    summary="Classify several images",
    description="Repeated multipart field `files`; predictions come back in upload order. "
                "One bad image fails the whole request, naming the file.",
)
async def predict_batch(
    request: Request,
    files: Annotated[list[UploadFile], File(description=f"images: {ACCEPTED}")],
    top_k: TopK = None,
) -> Response:
    service, settings, metrics = service_of(request), settings_of(request), metrics_of(request)
    k = _resolve_top_k(top_k, settings, service.predictor)
    if len(files) > settings.max_batch_files:
        raise PayloadTooLargeError(
            f"{len(files)} files in one request; the limit is {settings.max_batch_files}"
        )
    labels = [f"files[{i}] ({(f.filename or 'unnamed')[:100]})" for i, f in enumerate(files)]
    limit = settings.max_upload_bytes
    data = [await _read(f, limit, label) for f, label in zip(files, labels, strict=True)]
    rows = await _classify(request, service, data, labels)
    return _json({"predictions": [_shape(row, service.predictor, k, metrics) for row in rows]})
