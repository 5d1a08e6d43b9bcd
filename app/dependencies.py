"""What route handlers ask FastAPI for: the settings, the running service, the metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.batching import WorkerUnavailableError
from app.observability import Metrics
from app.service import InferenceService
from app.settings import Settings, get_settings


def get_service(request: Request) -> InferenceService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise WorkerUnavailableError("the model is not loaded")
    return service


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
