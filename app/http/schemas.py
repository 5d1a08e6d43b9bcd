"""Typed response bodies; their examples are what /docs shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_EXAMPLE_P = (0.002, 0.001, 0.01, 0.04, 0.004, 0.93, 0.006, 0.005, 0.001, 0.001)
_MODEL_REF = {"name": "cifar10_tutorial_cnn", "arch": "tutorial_cnn", "sha256": "3f9a1c0b7e2d"}


class ModelRef(BaseModel):
    name: str = Field(description="checkpoint file name without extension")
    arch: str
    sha256: str = Field(description="first 12 hex digits of the checkpoint file's sha256")


class TopKEntry(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    class_: str = Field(alias="class")
    probability: float


class Prediction(BaseModel):
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True,
        json_schema_extra={"examples": [{
            "class": "dog", "class_index": 5, "confidence": 0.93,
            "probabilities": dict(zip(_CIFAR, _EXAMPLE_P, strict=True)),
            "top_k": [{"class": "dog", "probability": 0.93}, {"class": "cat", "probability": 0.04},
                      {"class": "bird", "probability": 0.01}],
            "model": _MODEL_REF,
        }]},
    )

    class_: str = Field(alias="class", description="the most probable class")
    class_index: int = Field(description="its index in the checkpoint's class list")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(
        description="every class, softmax(logits / temperature); sums to 1"
    )
    top_k: list[TopKEntry] = Field(description="the k most probable classes, best first")
    model: ModelRef


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="one per uploaded file, in upload order")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ok", "model": _MODEL_REF, "device": "cpu", "queue_depth": 0,
    }]})

    status: Literal["ok"]
    model: ModelRef
    device: str
    queue_depth: int = Field(description="images admitted and not yet answered")


class Unavailable(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "unavailable", "detail": "the inference worker is stopped (shutting down)",
    }]})

    status: Literal["unavailable"]
    detail: str


class ModelInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "cifar10_tutorial_cnn", "arch": "tutorial_cnn", "classes": list(_CIFAR),
        "input_size": 32, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "temperature": 1.42,
        "metrics": {"val_accuracy": 0.74, "test_accuracy": 0.73}, "epochs": 30,
        "data": {"dataset": "folder", "source": "cifar10"}, "training": {"lr": 0.001},
        "torch_version": "2.14.1", "created_at": "2025-11-26T03:00:00+00:00",
        "sha256": "3f9a1c0b7e2d" + "0" * 52, "device": "cpu",
    }]})

    name: str
    arch: str
    classes: list[str]
    input_size: int = Field(description="images are resized to input_size × input_size")
    mean: list[float]
    std: list[float]
    temperature: float = Field(description="logits are divided by it before the softmax")
    tta: str = Field("off", description="test-time augmentation served: off, flip (the "
                                         "mean of the image's and its mirror's logits) or "
                                         "multicrop (flip × one-pixel shifts, six views)")
    metrics: dict[str, Any]
    epochs: int
    data: dict[str, Any]
    training: dict[str, Any]
    torch_version: str
    created_at: str
    sha256: str = Field(description="of the whole checkpoint file")
    device: str
    precision: str = Field("fp32", description="the network's arithmetic: fp32 or bf16")


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "detail": "not an image in a supported format; accepted formats are "
                  "PNG, JPEG, WebP, GIF, BMP or TIFF",
    }]})

    detail: str = Field(description="what was wrong and what is accepted")
    errors: list[dict[str, Any]] | None = Field(
        None, description="for 422: the individual validation errors"
    )
    request_id: str | None = Field(None, description="for 5xx: quote it when reporting")
