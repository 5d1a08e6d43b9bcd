"""POST /predict and /predict/batch: validate the upload, await the service, shape the answer.

These are the hot routes, kept lean by measurement: no FastAPI dependencies (see
app/http/dependencies.py), no declared parameters and no per-request FastAPI handler at all (see
app/http/routes/direct.py; `_top_k` reads the query parameter with the same validation and 422 that
`Query(ge=1)` gave), the multipart body split by app/http/multipart.py rather than `File()`
parameters, and the JSON written by orjson (see `_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field, TypeAdapter, ValidationError

from app.http.dependencies import metrics_of, service_of, settings_of
from app.http.disconnect import unless_disconnected
from app.http.errors import PayloadTooLargeError
from app.http.multipart import Part, TooManyPartsError, boundary_of, parse
from app.http.responses import PREDICT
from app.http.routes.direct import DirectRoute
from app.http.schemas import BatchPrediction, Prediction
from app.inference.predictor import Predictor
from app.inference.service import InferenceService, Scored
from app.observability import Metrics
from app.settings import Settings
from models.images import ACCEPTED

# No router dependencies: see app/http/dependencies.py. The API key is checked by
# UploadGuardMiddleware and documented by app/http/openapi.py. The endpoints are
# called directly, without FastAPI's per-request handler: see app/http/routes/direct.py.
router = APIRouter(tags=["predict"], route_class=DirectRoute)


TOP_K_PARAMETER = {
    "name": "top_k", "in": "query", "required": False,
    "schema": {"type": "integer", "minimum": 1, "title": "Top K"},
    "description": "how many classes to list in top_k, 1 … number of classes "
                   "(default: CNN_SERVE_DEFAULT_TOP_K)",
}  # its maximum, the served model's number of classes, is added by app/http/openapi.py
_TOP_K = TypeAdapter(Annotated[int, Field(ge=1)])  # what Query(ge=1) on an int checked


def _top_k(request: Request, settings: Settings, predictor: Predictor) -> int:
    """The `top_k` query parameter, or the default; a 422 like FastAPI's for a bad one."""
    n = len(predictor.classes)
    raw = request.query_params.get("top_k") if request.scope["query_string"] else None
    if raw is None:
        return min(settings.default_top_k, n)
    try:
        top_k = _TOP_K.validate_python(raw)
    except ValidationError as exc:
        raise RequestValidationError([
            {**error, "loc": ("query", "top_k")} for error in exc.errors(include_url=False)
        ]) from None
    if top_k > n:
        raise RequestValidationError([{
            "type": "less_than_equal", "loc": ("query", "top_k"), "input": top_k,
            "msg": f"Input should be less than or equal to {n}, the number of classes",
        }])
    return top_k


# Parts beyond the image(s) that a client may send along (text fields such as a caption).
EXTRA_PARTS = 16


# The part's Content-Type is not read: an image is recognised by its content.
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp, image/gif, image/bmp, image/tiff"


def _openapi(field: str, description: str, many: bool) -> dict[str, Any]:
    """OpenAPI for the `top_k` parameter and a multipart body with one required file field
    (the routes read both themselves, so FastAPI cannot infer them). The most files a batch
    takes is a setting: app/http/openapi.py adds it as `maxItems`."""
    schema: dict[str, Any] = {"type": "string", "format": "binary", "description": description}
    if many:
        schema = {"type": "array", "items": schema, "minItems": 1, "description": description}
    return {"parameters": [TOP_K_PARAMETER],
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": [field], "properties": {field: schema}},
                "encoding": {field: {"contentType": IMAGE_MEDIA_TYPES}},
            }}}}


async def _uploads(request: Request, field: str, max_parts: int) -> list[Part]:
    """The parts named `field`, in upload order. None at all (or no multipart body) is the
    same 422 FastAPI gives for a missing form field."""
    boundary = boundary_of(request.headers.get("content-type"))
    found = []
    if boundary is not None:
        parts = parse(await request.body(), boundary, max_parts=max_parts)
        found = [part for part in parts if part.name == field]
    if not found:
        raise RequestValidationError([{
            "type": "missing", "loc": ("body", field), "msg": "Field required", "input": None,
        }])
    return found


def _data(part: Part, limit: int, label: str) -> bytes:
    if len(part.data) > limit:
        raise PayloadTooLargeError(
            f"{label} is {len(part.data):,} bytes, over the {limit:,}-byte limit per image; "
            "send a smaller image"
        )
    return part.data


def _shape(scored: Scored, k: int, metrics: Metrics) -> dict[str, Any]:
    """One probability row → the `Prediction` object, as a plain dict (see _json). Named after
    the model that computed it, which across a reload may not be the one serving now."""
    row, predictor = scored
    classes = predictor.classes
    order = sorted(range(len(row)), key=row.__getitem__, reverse=True)
    best = order[0]
    metrics.count_prediction(classes[best])
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
) -> list[Scored]:
    return await unless_disconnected(request.receive,
                                     service.classify_with_models(images, labels))


@router.post(
    "/predict", response_model=Prediction, responses=PREDICT,
    summary="Classify one image",
    description=f"Multipart field `file`: one {ACCEPTED} image, recognised by its content.",
    openapi_extra=_openapi("file", f"one image: {ACCEPTED}", many=False),
)
async def predict(request: Request) -> Response:
    service, settings, metrics = service_of(request), settings_of(request), metrics_of(request)
    k = _top_k(request, settings, service.predictor)
    *_, part = await _uploads(request, "file", 1 + EXTRA_PARTS)  # the last, as FastAPI did
    data = _data(part, settings.max_upload_bytes, "the file")
    [scored] = await _classify(request, service, [data], None)
    return _json(_shape(scored, k, metrics))


@router.post(
    "/predict/batch", response_model=BatchPrediction, responses=PREDICT,
    summary="Classify several images",
    description="Repeated multipart field `files`; predictions come back in upload order. "
                "One bad image fails the whole request, naming the file.",
    openapi_extra=_openapi("files", f"images: {ACCEPTED}", many=True),
)
async def predict_batch(request: Request) -> Response:
    service, settings, metrics = service_of(request), settings_of(request), metrics_of(request)
    k = _top_k(request, settings, service.predictor)
    cap = settings.max_batch_files
    try:
        files = await _uploads(request, "files", cap + EXTRA_PARTS)
    except TooManyPartsError as exc:
        raise PayloadTooLargeError(
            f"more than {exc.limit} parts in one request; the limit is {cap} files"
        ) from None
    if len(files) > cap:
        raise PayloadTooLargeError(f"{len(files)} files in one request; the limit is {cap}")
    labels = [f"files[{i}] ({(f.filename or 'unnamed')[:100]})" for i, f in enumerate(files)]
    limit = settings.max_upload_bytes
    data = [_data(f, limit, label) for f, label in zip(files, labels, strict=True)]
    rows = await _classify(request, service, data, labels)
    return _json({"predictions": [_shape(scored, k, metrics) for scored in rows]})
