"""GET /healthz: cheap, never runs the model, open even with an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.http.schemas import Health, ModelRef, Unavailable

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz", response_model=Health, summary="Ready to predict?",
    responses={503: {"model": Unavailable, "description": "not loaded, stopped or stuck"}},
    description="200 only when the model is loaded and warmed up and the inference worker "
                "is alive and not stuck; 503 with the reason otherwise.",
)
async def healthz(request: Request) -> Health | JSONResponse:
    service = getattr(request.app.state, "service", None)
    problem = "the model is not loaded" if service is None else service.problem()
    if problem is not None:
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return Health(
        status="ok",
        model=ModelRef(**service.predictor.describe()),
        device=str(service.predictor.device),
        queue_depth=service.batcher.admitted,
    )
