"""The assembled app: cheap to create, documented at /docs and /openapi.json."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import settings_for
from fastapi.testclient import TestClient

from app.main import create_app

ENDPOINTS = [
    ("post", "/predict", "Prediction"),
    ("post", "/predict/batch", "BatchPrediction"),
    ("get", "/healthz", "Health"),
    ("get", "/model", "ModelInfo"),
]


@pytest.fixture(scope="module")
def openapi(checkpoint: Path) -> dict:
    with TestClient(create_app(settings_for(checkpoint))) as client:
        assert client.get("/docs").status_code == 200
        return client.get("/openapi.json").json()


@pytest.mark.parametrize(("method", "path", "model"), ENDPOINTS)
def test_every_endpoint_has_a_typed_response_with_an_example(
    openapi: dict, method: str, path: str, model: str
) -> None:
    ok = openapi["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}
    schema = openapi["components"]["schemas"][model]
    if model == "BatchPrediction":
        schema = openapi["components"]["schemas"]["Prediction"]
    assert schema.get("examples"), f"{model} has no example"


def test_metrics_is_documented_as_prometheus_text(openapi: dict) -> None:
    content = openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert any(kind.startswith("text/plain") for kind in content)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_prediction_errors_are_documented_with_their_json_shape(openapi: dict, path: str) -> None:
    responses = openapi["paths"][path]["post"]["responses"]
    for status in ("400", "408", "413", "415", "422", "500", "503", "504"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_prediction_routes_document_top_k_and_the_multipart_field(
    openapi: dict, path: str
) -> None:
    """The routes read both themselves, so the documentation is written by hand: check it."""
    operation = openapi["paths"][path]["post"]
    [top_k] = operation["parameters"]
    assert (top_k["name"], top_k["in"], top_k["required"]) == ("top_k", "query", False)
    assert top_k["schema"]["type"] == "integer" and top_k["schema"]["minimum"] == 1
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    field = "file" if path == "/predict" else "files"
    assert body["required"] == [field] and field in body["properties"]


def test_prediction_schema_uses_the_public_field_names(openapi: dict) -> None:
    fields = openapi["components"]["schemas"]["Prediction"]["properties"]
    assert set(fields) == {"class", "class_index", "confidence", "probabilities", "top_k",
                           "model"}
