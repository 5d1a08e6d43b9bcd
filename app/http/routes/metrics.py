"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.http.dependencies import MetricsDep

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": (
        "# TYPE cnn_serve_batch_size histogram\ncnn_serve_batch_size_bucket{le=\"1.0\"} 12.0\n"
    )}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
