"""GET /model: the checkpoint's metadata."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from models.classes import CIFAR10_CLASSES


def test_model_returns_the_checkpoint_metadata(client: TestClient, checkpoint: Path) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "name": "random_cnn",
        "arch": "tutorial_cnn",
        "classes": list(CIFAR10_CLASSES),
        "input_size": 32,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.25, 0.25, 0.25],
        "temperature": 1.7,
        "tta": "off",
        "metrics": {"val_accuracy": 0.5},
        "epochs": 3,
        "data": {"dataset": "test"},
        "training": {"lr": 0.01},
        "torch_version": body["torch_version"],
        "created_at": "2025-01-02T03:04:05+00:00",
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "device": "cpu",
        "precision": "fp32",
    }
