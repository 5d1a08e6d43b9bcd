"""GET /healthz: 200 with model and device only when the service can predict."""

from __future__ import annotations

from pathlib import Path

from app_support import settings_for
from fastapi.testclient import TestClient

from app.main import create_app


def test_healthz_reports_model_and_device_when_ready(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    service = client.app.state.service
    assert response.json() == {
        "status": "ok",
        "model": {"name": "random_cnn", "arch": "tutorial_cnn",
                  "sha256": service.predictor.sha256[:12]},
        "device": "cpu",
        "queue_depth": 0,
    }


def test_healthz_never_runs_the_model(client: TestClient) -> None:
    calls = []
    handle = client.app.state.service.predictor.model.register_forward_pre_hook(
        lambda module, args: calls.append(1)
    )
    try:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
    finally:
        handle.remove()
    assert calls == []


def test_healthz_is_503_before_startup_and_after_shutdown(checkpoint: Path) -> None:
    app = create_app(settings_for(checkpoint))
    unstarted = TestClient(app)  # no `with`: the lifespan has not run
    response = unstarted.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "detail": "the model is not loaded"}
    early = unstarted.post("/predict", files={"file": ("x.png", b"x")})
    assert early.status_code == 503 and early.headers["retry-after"] == "1"
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
    assert unstarted.get("/healthz").status_code == 503
