"""What route handlers ask for: the settings, the running service, the metrics.

Two ways to get each. The `*Dep` annotations are FastAPI dependencies, for the light routes.
The hot /predict routes call `service_of(request)` and friends directly instead: FastAPI
resolves every dependency on every request, and on a 32×32 image the dependency machinery
alone cost more CPU than decoding and the model together (cProfile of the ASGI app).

The dependencies are `async def` although none awaits: FastAPI runs a plain `def` dependency
in its thread pool, and those hops were a fifth of the event loop's time under load (py-spy).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.inference.batching import WorkerUnavailableError
from app.inference.service import InferenceService
from app.observability import Metrics
from app.settings import NotStartedError, Settings, get_settings


def settings_of(request: Request) -> Settings:
    settings: Settings | None = request.app.state.settings
    if settings is None:
        raise NotStartedError("the service has not started")
    return settings


def service_of(request: Request) -> InferenceService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise WorkerUnavailableError("the model is not loaded")
    return service


def metrics_of(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_service(request: Request) -> InferenceService:
    return service_of(request)


async def get_metrics(request: Request) -> Metrics:
    return metrics_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
