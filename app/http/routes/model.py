"""GET /model: what the served checkpoint is and how it was made."""

from __future__ import annotations

from fastapi import APIRouter

from app.http.dependencies import ServiceDep
from app.http.responses import MODEL_INFO
from app.http.schemas import ModelInfo

router = APIRouter(tags=["operations"])


@router.get("/model", response_model=ModelInfo, responses=MODEL_INFO,
            summary="The served checkpoint's metadata")
async def model_info(service: ServiceDep) -> ModelInfo:
    predictor = service.predictor
    return ModelInfo(
        name=predictor.name,
        sha256=predictor.sha256,
        device=str(predictor.device),
        # Names only: checkpoints from before training stored names show no paths either.
        precision=predictor.precision,
        **{**predictor.meta.public_dict(), "tta": predictor.tta},
    )
